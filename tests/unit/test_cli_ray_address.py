"""`forge status` finds the platform's Ray cluster without trusting a stale record."""

from __future__ import annotations

import os
import sys

import pytest
import typer
from ray._private import services

from forge.cli import local_ray_address
from serve.env import use_ray_token_if_present


@pytest.fixture
def cluster_here(monkeypatch: pytest.MonkeyPatch):
    def set_up(live: set[str], recorded: str | None) -> None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.setattr(services, "find_gcs_addresses", lambda: set(live))
        monkeypatch.setattr(services, "find_bootstrap_address", lambda _temp_dir: recorded)

    return set_up


def test_ray_address_wins(cluster_here, monkeypatch):
    cluster_here({"10.0.0.1:6380"}, None)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6380")
    assert local_ray_address() == "10.0.0.9:6380"


def test_a_live_recorded_cluster_is_chosen_among_several(cluster_here):
    cluster_here({"10.0.0.1:6380", "10.0.0.1:6390"}, "10.0.0.1:6390")
    assert local_ray_address() == "10.0.0.1:6390"


def test_a_stale_record_is_ignored_for_the_one_live_cluster(cluster_here):
    cluster_here({"10.0.0.1:6380"}, "10.0.0.1:53931")  # a stopped `ray start --block`
    assert local_ray_address() == "10.0.0.1:6380"


def test_no_live_cluster_is_a_connection_error(cluster_here):
    cluster_here(set(), "10.0.0.1:53931")
    with pytest.raises(ConnectionError):
        local_ray_address()


def test_several_live_clusters_without_a_live_record_ask_for_ray_address(cluster_here, capsys):
    cluster_here({"10.0.0.1:6380", "10.0.0.1:6390"}, "10.0.0.1:53931")
    with pytest.raises(typer.Exit):
        local_ray_address()
    assert "RAY_ADDRESS" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "token_file", "mode"),
    [
        ({}, True, "token"),  # a cluster started here wrote ~/.ray/auth_token
        ({}, False, None),  # no token anywhere: the mode stays unset
        ({"RAY_AUTH_TOKEN": "t"}, False, "token"),
        ({"RAY_AUTH_MODE": "disabled"}, True, "disabled"),  # said either way: kept
    ],
)
def test_a_token_at_hand_is_sent(monkeypatch, tmp_path, env, token_file, mode):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    # As in a fresh `forge` process: Ray not imported yet, so its config is not refreshed
    # (which would switch this test process's own Ray to token mode).
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    if token_file:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text("0" * 64)
    use_ray_token_if_present()
    assert os.environ.get("RAY_AUTH_MODE") == mode
