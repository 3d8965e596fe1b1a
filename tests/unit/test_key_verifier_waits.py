"""A key lookup that fails while the directory restarts waits for it (bounded), shared
by every request for that key, instead of answering each with a 503 at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from forge.errors import ServiceUnavailable
from forge.keys import KeyInfo
from gateway.auth import KeyVerifier

GOOD = KeyInfo(id="k1", name="ok", prefix="sk-forge-", role="user", created_at=datetime.now(UTC))


class RestartingDirectory:
    """Fails its first ``failures`` lookups, as a restarting actor's calls do."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def lookup(self, digest: str) -> KeyInfo | None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the actor is restarting")
        return GOOD


async def test_concurrent_requests_wait_for_a_restarting_directory_through_one_lookup():
    directory = RestartingDirectory(failures=3)
    verifier = KeyVerifier(directory.lookup, unavailable_wait_s=5.0)
    answers = await asyncio.gather(*(verifier.verify("sk-key") for _ in range(50)))
    assert {a.id for a in answers} == {"k1"}
    assert directory.calls == 4  # three failures, one answer: one lookup for all 50


async def test_a_directory_gone_longer_than_the_wait_is_a_503_for_every_waiter():
    directory = RestartingDirectory(failures=10**9)
    verifier = KeyVerifier(directory.lookup, unavailable_wait_s=0.3)
    answers = await asyncio.gather(
        *(verifier.verify("sk-key") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(a, ServiceUnavailable) for a in answers), answers
    assert 2 <= directory.calls <= 6  # backing off: 0.05, 0.1, 0.2 s
    directory.failures = 0  # back: the next request looks it up again
    assert (await verifier.verify("sk-key")).id == "k1"


async def test_no_wait_means_one_try():
    directory = RestartingDirectory(failures=1)
    verifier = KeyVerifier(directory.lookup, unavailable_wait_s=0.0)
    with pytest.raises(ServiceUnavailable, match="key directory is unavailable"):
        await verifier.verify("sk-key")
    assert directory.calls == 1
