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
    from forge.config import RetryConfig
    from forge.errors import UpstreamRateLimited
    from forge.routing.retries import RetryPolicy

    policy = RetryPolicy(RetryConfig(attempts=1))
    assert policy.after(UpstreamRateLimited("provider says slow down"), 0).action == "next"
    assert policy.after(RateLimited("your key's requests per minute"), 0).action == "fail"


def _every_error_class() -> list[type[ForgeError]]:
    import forge.adapters
    import forge.budgets.gate
    import forge.tenancy.policy  # noqa: F401

    return errors._kinds()[1:]  # the base class is never raised: never a bare 500


# OpenAI answers a model the project may not use with 403 and the type and code of a
# model that does not exist (404): the two read alike without a status. Both are raised
# before any output, so neither can arrive inside a stream.
AMBIGUOUS = {"ModelNotFound", "ModelNotAllowed"}


def test_only_the_known_pair_of_errors_reads_alike_without_a_status():
    seen: dict[tuple[str, str | None], set[int]] = {}
    names: dict[tuple[str, str | None], set[str]] = {}
    for cls in _every_error_class():
        ident = (cls.error_type, cls.default_code)
        seen.setdefault(ident, set()).add(cls.status_code)
        names.setdefault(ident, set()).add(cls.__name__)
    alike = set().union(*(names[i] for i, statuses in seen.items() if len(statuses) > 1))
    assert alike == AMBIGUOUS


@pytest.mark.parametrize("cls", _every_error_class(), ids=lambda c: c.__name__)
def test_an_anthropic_client_gets_one_error_type_in_a_stream_and_over_http(cls):
    """One mapping to Anthropic's error types, by status: an error that arrives inside a
    stream (no status, only OpenAI's type and code) maps as its HTTP answer would."""
    from gateway.errors import anthropic_error_body, anthropic_stream_error

    if cls.__name__ in AMBIGUOUS:
        pytest.skip("raised before a stream's first byte only")
    error = cls("boom")
    over_http = anthropic_error_body(error)["error"]["type"]
    in_stream = anthropic_stream_error(error.to_body()["error"])["error"]
    assert in_stream["type"] == over_http and in_stream["message"] == "boom"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (errors.ServiceUnavailable("draining", code="server_shutting_down"), "overloaded_error"),
        (errors.UpstreamUnavailable("busy"), "overloaded_error"),
        (errors.UpstreamError("cut", code="upstream_stream_interrupted"), "api_error"),
        (errors.RateLimited("slow down"), "rate_limit_error"),
        (
            errors.AuthenticationFailed("no", code="provider_credential_rejected"),
            "authentication_error",
        ),
    ],
)
def test_the_errors_a_stream_ends_with_map_as_over_http(error, expected):
    from gateway.errors import anthropic_error_body, anthropic_stream_error

    assert anthropic_error_body(error)["error"]["type"] == expected
    assert anthropic_stream_error(error.to_body()["error"])["error"]["type"] == expected
