"""The error taxonomy: OpenAI's shape, pickling across Ray, and unwrapping Ray's wrapper."""

from __future__ import annotations

import pickle

import pytest

from forge import errors
from forge.errors import ForgeError, RateLimited, unwrap_remote

ALL = [
    cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, ForgeError)
]


@pytest.mark.parametrize("cls", ALL)
def test_every_error_pickles_with_its_details(cls):
    error = cls("message", param="p", code="c", retry_after=3, provider="prov")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert copy.to_body() == error.to_body()
    assert (copy.retry_after, copy.provider) == (3, "prov")
    assert set(copy.to_body()["error"]) == {"message", "type", "param", "code"}
    assert 400 <= copy.status_code <= 599


def test_unwrap_follows_ray_style_causes():
    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__("wrapped")
            self.cause = cause

    inner = RateLimited("slow down", retry_after=1)
    assert unwrap_remote(Wrapper(Wrapper(inner))) is inner
    plain = ValueError("x")
    assert unwrap_remote(plain) is plain


def test_only_the_providers_429_sends_a_request_to_a_fallback_model():
    """The platform's own limits and budgets are the caller's: another model would be
    limited just the same, so they never fall back (issue 12)."""
    from forge.errors import UpstreamRateLimited
    from gateway.relay import RETRYABLE

    assert isinstance(UpstreamRateLimited("provider says slow down"), RETRYABLE)
    assert not isinstance(RateLimited("your key's requests per minute"), RETRYABLE)
