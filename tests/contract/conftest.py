"""Fakes for the provider types that only the contract suite needs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fakes.openai_family import FakeLlamaCpp, FakeTgi


@pytest.fixture(scope="session")
def fake_llamacpp() -> Iterator[FakeLlamaCpp]:
    server = FakeLlamaCpp().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_tgi() -> Iterator[FakeTgi]:
    os.environ["FAKE_TGI_KEY"] = "hf_test_token"
    server = FakeTgi().start()
    yield server
    server.stop()
