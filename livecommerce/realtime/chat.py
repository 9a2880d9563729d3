"""Live engagement on the viewer socket, without I/O: chat, reactions, moderation by moderators.

What a ``chat``, ``react`` or ``moderate`` frame means, which of them are well formed, and the
actions the gateway carries out (:class:`Post`, :class:`React`, :class:`Moderate`); the
server's chat messages; and :class:`ReactionTally`, which sums taps so that 10 000 viewers
tapping cost a few frames per second, never one per tap. Nothing here awaits or reads a clock.
See ``docs/protocol.md`` ("Chat, reactions and questions") for the wire contract.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from livecommerce.core.model import REQUEST_ID, valid_id

MAX_CHAT_CHARS = 300
"""Longest chat message, in characters after trimming."""
HISTORY_SIZE = 50
"""Chat messages kept per show (a late joiner and a resuming viewer get them)."""
REACTIONS = ("heart", "fire", "clap", "laugh", "wow")
"""The fixed set of reactions."""
MAX_TAPS = 50
"""Most taps one ``react`` frame may carry (a client may batch a burst of taps)."""
REACTION_INTERVAL_S = 0.25
"""Default pace of reaction tallies and chat batches (LIVECOMMERCE_CHAT_INTERVAL)."""
MAX_WORDS = 200
MAX_WORD_CHARS = 40
MAX_SLOW_MODE_S = 3600
MAX_MUTE_S = 7 * 24 * 3600
MESSAGE_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
WORD = re.compile(r"^\w+(?: \w+)*$")
JOINERS = frozenset("\u200c\u200d")
"""Format characters chat allows: the (non-)joiners of emoji sequences and some scripts. Others
(bidi overrides, invisible separators) are refused."""

TYPES = frozenset({"chat", "react", "moderate"})
"""Client message types handled here."""
BATCHED = frozenset({"chat", "chat_deleted", "chat_pinned", "question_answered", "chat_settings",
                     "chat_muted"})  # fmt: skip
"""Server pushes the hub sends in batches (with ``reactions``), never one frame each."""


class ChatError(StrEnum):
    """Error codes of chat replies (docs/protocol.md, "error")."""

    CHAT_OFF = "chat_off"
    MUTED = "muted"
    SLOW_MODE = "slow_mode"
    FILTERED = "filtered"
    NOT_MODERATOR = "not_moderator"
    UNKNOWN_MESSAGE = "unknown_message"


class ModAction(StrEnum):
    DELETE = "delete"
    MUTE = "mute"
    UNMUTE = "unmute"


# -- actions --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Post:
    request_id: str
    viewer: str
    name: str
    text: str
    question: bool


@dataclass(frozen=True)
class React:
    reaction: str
    count: int


@dataclass(frozen=True)
class Moderate:
    request_id: str
    moderator: str
    action: ModAction
    message: str = ""
    viewer: str = ""
    duration_s: int = 0
    """Mute length; 0 = for the whole show."""


ChatAction = Post | React | Moderate


class Invalid(Exception):
    """A malformed chat frame: ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- parsing --------------------------------------------------------------------------------------
def clean_text(value: object) -> str:
    """Chat text: a string, control characters refused, whitespace runs kept as typed but
    trimmed, 1..MAX_CHAT_CHARS characters. Raises :class:`Invalid`."""
    if not isinstance(value, str):
        raise Invalid("text", "expected a string")
    text = value.strip()
    if not text:
        raise Invalid("text", "empty message")
    if len(text) > MAX_CHAT_CHARS:
        raise Invalid("text", f"at most {MAX_CHAT_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") and ch not in JOINERS
           for ch in text):  # fmt: skip
        raise Invalid("text", "control characters are not allowed")
    return text


def _request_id(message: dict[str, Any]) -> str:
    rid = message.get("id")
    if not isinstance(rid, str) or not REQUEST_ID.fullmatch(rid):
        raise Invalid("id", "expected a request id ([A-Za-z0-9_.:-]{1,64})")
    return rid


def _int(message: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = message.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(name, f"expected an integer in {low}..{high}")
    return value


def parse(kind: str, message: dict[str, Any], *, viewer: str | None, name: str) -> ChatAction:
    """One decoded ``chat``/``react``/``moderate`` message as an action. Raises
    :class:`Invalid` for a malformed one, :class:`PermissionError` when it needs a token."""
    if kind == "react":
        reaction = message.get("reaction")
        if not isinstance(reaction, str) or reaction not in REACTIONS:
            raise Invalid("reaction", "expected one of " + ", ".join(REACTIONS))
        return React(reaction, _int(message, "count", 1, MAX_TAPS, 1))
    rid = _request_id(message)
    if kind == "chat":
        text = clean_text(message.get("text"))
        question = message.get("question", False)
        if not isinstance(question, bool):
            raise Invalid("question", "expected true or false")
        if viewer is None:
            raise PermissionError("chatting needs a viewer token")
        return Post(rid, viewer, name, text, question)
    action = message.get("action")
    if not isinstance(action, str) or action not in set(ModAction):
        raise Invalid("action", "expected one of " + ", ".join(ModAction))
    mod = ModAction(action)
    target = message_id = ""
    duration = 0
    if mod is ModAction.DELETE:
        message_id = message.get("message", "")
        if not isinstance(message_id, str) or not MESSAGE_ID.fullmatch(message_id):
            raise Invalid("message", "expected a chat message id like '1732350000123-0'")
    else:
        target = message.get("viewer", "")
        if not valid_id(target):
            raise Invalid("viewer", "expected a viewer id")
        if mod is ModAction.MUTE:
            duration = _int(message, "duration_s", 0, MAX_MUTE_S, 0)
    if viewer is None:
        raise PermissionError("moderating needs a viewer token")
    return Moderate(rid, viewer, mod, message=message_id, viewer=str(target), duration_s=duration)


def check_words(value: object) -> list[str]:
    """The host's word filter: a list of words or short phrases, stored casefolded."""
    if not isinstance(value, list) or len(value) > MAX_WORDS:
        raise Invalid("words", f"expected a list of at most {MAX_WORDS} words")
    out: set[str] = set()
    for word in value:
        if not isinstance(word, str):
            raise Invalid("words", "expected strings")
        folded = " ".join(word.casefold().split())
        if not folded or len(folded) > MAX_WORD_CHARS or not WORD.fullmatch(folded):
            raise Invalid("words", f"{word!r}: letters and digits, 1..{MAX_WORD_CHARS} chars")
        out.add(folded)
    return sorted(out)


# -- server messages ------------------------------------------------------------------------------
def message_from_entry(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """One history entry as the ``data`` of a ``chat`` message."""
    return {
        "id": entry_id,
        "viewer": fields.get("viewer", ""),
        "name": fields.get("name", ""),
        "text": fields.get("text", ""),
        "question": fields.get("q") == "1",
        "ts": int(fields.get("ts") or 0),
    }


@dataclass(frozen=True)
class ChatState:
    """What a joining viewer needs: the last messages, the pin and the rules in force."""

    messages: list[dict[str, Any]]
    pinned: dict[str, Any] | None
    enabled: bool
    slow_mode_s: float

    def public(self) -> dict[str, Any]:
        """The ``chat`` field of ``snapshot`` and ``resumed``."""
        return {
            "messages": self.messages,
            "pinned": self.pinned,
            "enabled": self.enabled,
            "slow_mode_s": self.slow_mode_s,
        }


def settings_message(enabled: bool, slow_mode_s: float, ts: int) -> dict[str, Any]:
    return {"type": "chat_settings", "ts": ts,
            "data": {"enabled": enabled, "slow_mode_s": slow_mode_s}}  # fmt: skip


class ReactionTally:
    """Taps summed per reaction until the next flush.

    Used twice: each gateway process sums its own viewers' taps and publishes the sum
    (``reaction_tally``, one message per process per interval), and each process sums what
    every process published and pushes one ``reactions`` frame per show per interval.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reaction: str, count: int) -> None:
        if reaction in REACTIONS and count > 0:
            self.counts[reaction] += count

    def merge(self, counts: object) -> None:
        """Add a published tally (ignoring anything that is not a known reaction count)."""
        if not isinstance(counts, dict):
            return
        for reaction, count in counts.items():
            if isinstance(count, int) and not isinstance(count, bool) and 0 < count <= 10**9:
                self.add(reaction, count)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def take(self) -> dict[str, int]:
        counts, self.counts = dict(self.counts), Counter()
        return {r: counts[r] for r in REACTIONS if r in counts}
