"""The contract test's copy of OpenAI's spec is the full spec's cut, not a stale one."""

from __future__ import annotations

import pytest

from tests.specs.extract_openai_subset import FULL, PATHS, SUBSET, load, subset


def test_the_vendored_subset_holds_every_implemented_operation():
    spec = load(SUBSET)
    assert set(spec["paths"]) == set(PATHS)
    assert "CreateChatCompletionResponse" in spec["components"]["schemas"]


@pytest.mark.skipif(not FULL.exists(), reason="the full spec is only in ../shared/specs")
def test_the_vendored_subset_matches_the_full_spec():
    assert load(SUBSET) == subset(load(FULL)), (
        "tests/specs/openai-openapi.subset.yaml is stale: "
        "run `.venv/bin/python -m tests.specs.extract_openai_subset`"
    )
