"""Chat without I/O: what a chat/react/moderate frame means, and the reaction tally."""

from __future__ import annotations

from typing import Any

import pytest

from livecommerce.realtime.chat import (
    MAX_CHAT_CHARS,
    REACTIONS,
    Invalid,
    ModAction,
    Moderate,
    Post,
    React,
    ReactionTally,
    check_words,
    clean_text,
    parse,
)
from livecommerce.realtime.codec import Encoding, encode
from livecommerce.realtime.protocol import Send, Session
from livecommerce.realtime.tokens import mint

SECRET = "k" * 32


def joined(token: str | None) -> Session:
    s = Session(rate=100.0, burst=100, token_secret=SECRET, now=0.0)
    join: dict[str, Any] = {"type": "join", "show": "s1"}
    if token:
        join["token"] = token
    s.receive_frame(Encoding.JSON, encode(Encoding.JSON, join), now=0.0, wall=1000.0)
    return s


def feed(s: Session, msg: dict[str, Any]) -> list[Any]:
    return s.receive_frame(Encoding.JSON, encode(Encoding.JSON, msg), now=0.0, wall=1000.0)


def test_session_turns_chat_frames_into_actions_with_the_tokens_name() -> None:
    s = joined(mint(SECRET, "ana", 60, now=1000.0, name="Ana M."))
    [post] = feed(s, {"type": "chat", "id": "c1", "text": "  blue?  ", "question": True})
    assert post == Post("c1", "ana", "Ana M.", "blue?", True)
    [react] = feed(s, {"type": "react", "reaction": "heart", "count": 7})
    assert react == React("heart", 7)
    [mod] = feed(s, {"type": "moderate", "id": "m1", "action": "mute", "viewer": "ben",
                     "duration_s": 60})  # fmt: skip
    assert mod == Moderate("m1", "ana", ModAction.MUTE, viewer="ben", duration_s=60)


def test_guests_may_react_but_not_chat_or_moderate() -> None:
    s = joined(None)
    assert feed(s, {"type": "react", "reaction": "fire"}) == [React("fire", 1)]
    refused: list[dict[str, Any]] = [
        {"type": "chat", "id": "c1", "text": "hi"},
        {"type": "moderate", "id": "m1", "action": "delete", "message": "1-0"},
    ]
    for msg in refused:
        [reply] = feed(s, msg)
        assert isinstance(reply, Send) and reply.message["code"] == "auth_required"


def test_chat_before_join_is_refused() -> None:
    s = Session(rate=100.0, burst=100, token_secret=SECRET, now=0.0)
    [reply] = feed(s, {"type": "chat", "id": "c1", "text": "hi"})
    assert isinstance(reply, Send) and reply.message["code"] == "not_joined"


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"type": "chat", "text": "hi"}, "id"),
        ({"type": "chat", "id": "c", "text": "x" * (MAX_CHAT_CHARS + 1)}, "text"),
        ({"type": "chat", "id": "c", "text": "\u202eevil"}, "text"),
        ({"type": "chat", "id": "c", "text": None}, "text"),
        ({"type": "react", "reaction": "heart", "count": 0}, "count"),
        ({"type": "react"}, "reaction"),
        ({"type": "moderate", "id": "m", "action": "delete"}, "message"),
        ({"type": "moderate", "id": "m", "action": "mute", "viewer": "b", "duration_s": -1},
         "duration_s"),
    ],
)  # fmt: skip
def test_malformed_frames_get_bad_message_naming_the_field(msg: dict[str, Any],
                                                           field: str) -> None:  # fmt: skip
    s = joined(mint(SECRET, "ana", 60, now=1000.0))
    [reply] = feed(s, msg)
    assert isinstance(reply, Send)
    assert reply.message["code"] == "bad_message" and reply.message["field"] == field


def test_parse_and_text_rules() -> None:
    assert clean_text(" a  b ") == "a  b"
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # an emoji ZWJ sequence
    assert clean_text(family) == family
    with pytest.raises(Invalid):
        clean_text("")
    assert parse("react", {"reaction": "wow"}, viewer=None, name="") == React("wow", 1)


def test_word_filter_list_is_casefolded_deduplicated_and_checked() -> None:
    assert check_words(["Scam", "scam", "Wire  Me", "Straße"]) == ["scam", "strasse", "wire me"]
    for bad in ("x" * 41, "a/b", "", 3):
        with pytest.raises(Invalid):
            check_words([bad])
    with pytest.raises(Invalid):
        check_words("scam")


def test_reaction_tally_sums_and_resets() -> None:
    tally = ReactionTally()
    assert not tally
    for _ in range(1000):
        tally.add("heart", 1)
    tally.add("clap", 5)
    tally.add("poop", 5)  # not one of the set: ignored
    tally.merge({"heart": 10, "fire": "x", "wow": True, "laugh": -3})
    assert tally.take() == {"heart": 1010, "clap": 5}
    assert not tally and tally.take() == {}
    assert set(REACTIONS) == {"heart", "fire", "clap", "laugh", "wow"}
