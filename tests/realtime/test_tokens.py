from __future__ import annotations

import pytest

from livecommerce.core.errors import AuthError, ValidationError
from livecommerce.realtime.tokens import LEEWAY_S, mint, verify

SECRET = "s" * 32


def test_minted_token_verifies_to_its_viewer() -> None:
    assert verify(SECRET, mint(SECRET, "alice", 60, now=1000.0), now=1010.0) == "alice"
    assert verify(SECRET, mint(SECRET, "bob", 3600)) == "bob"


@pytest.mark.parametrize(
    "token",
    [mint("x" * 32, "alice", 60, now=1000.0), "garbage", "", "a.b.c"],
)
def test_forged_or_malformed(token: str) -> None:
    with pytest.raises(AuthError):
        verify(SECRET, token, now=1010.0)


def test_token_is_refused_after_expiry_plus_leeway() -> None:
    token = mint(SECRET, "alice", 60, now=1000.0)
    assert verify(SECRET, token, now=1060.0 + LEEWAY_S) == "alice"
    with pytest.raises(AuthError, match="expired"):
        verify(SECRET, token, now=1061.0 + LEEWAY_S)
    with pytest.raises(AuthError):
        verify(SECRET, mint(SECRET, "alice", 1, now=0.0))


def test_bad_viewer_and_no_secret() -> None:
    with pytest.raises(ValidationError):
        mint(SECRET, "not ok!", 60)
    with pytest.raises(AuthError):
        verify("", mint(SECRET, "alice", 60))
