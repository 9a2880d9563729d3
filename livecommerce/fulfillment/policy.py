"""The relay's pure policy: retry delays (exponential backoff with equal jitter, ``Retry-After``),
stream ids, and the trim floor below which every consumer group has acknowledged everything.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

from livecommerce.core.errors import DeliveryError

RETRY_AFTER_CAP_S = 3600.0
"""Longest ``Retry-After`` honoured; a larger one is cut to this."""


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rand: float = 0.5,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential with equal jitter: half of ``min(max_s, base_s * 2**(attempt-1))`` plus a random
    share of the other half (``rand`` in [0, 1)). A server's ``Retry-After`` wins when given.
    """
    if retry_after_s is not None:
        return max(0.0, min(float(retry_after_s), RETRY_AFTER_CAP_S))
    ceiling = min(max_s, base_s * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + ceiling / 2 * rand


def parse_retry_after(value: str | None, now: float) -> float | None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"


KEEP_RECENT = 50
"""Acknowledged orders the trim leaves in each orders stream: the dashboard's "Confirmed orders"
feed shows the newest ones, so it agrees with the sales tiles after delivery too."""


def keep_floor(floor: str, newest: list[str], keep: int) -> str | None:
    """``floor`` lowered so the ``keep`` newest ids (``newest``, newest first) stay; None when
    the stream holds no more than ``keep`` entries (nothing to trim)."""
    if len(newest) < keep:
        return None
    return min(floor, newest[-1], key=parse_id)


@dataclass(frozen=True)
class GroupPosition:
    """What one consumer group on a stream still needs: its PEL and last delivered id."""

    pending: int
    last_delivered: str
    oldest_pending: str | None


def trim_floor(groups: list[GroupPosition]) -> str | None:
    """The ``XTRIM MINID`` below which every group has acknowledged everything; None = keep all.

    Per group: the oldest pending id if anything is pending, else the id after the last one
    delivered (everything up to it is acknowledged). The floor is the minimum over groups.
    """
    if not groups:
        return None
    floors = []
    for g in groups:
        if g.pending > 0 and g.oldest_pending:
            floors.append(parse_id(g.oldest_pending))
        else:
            floors.append(parse_id(next_id(g.last_delivered)))
    ms, seq = min(floors)
    if (ms, seq) <= (0, 1):
        return None
    return f"{ms}-{seq}"


def failure_reason(exc: DeliveryError) -> str:
    if exc.status is None:
        return "timeout" if "timeout" in str(exc) else "network"
    if exc.gone:
        return "gone"
    return f"http_{exc.status // 100}xx"


UNREACHABLE_STATUSES = frozenset({502, 503, 504})
"""Answers that say the endpoint as a whole is not there (a proxy in front of a down backend)."""


def endpoint_unreachable(exc: DeliveryError) -> bool:
    """Did this failure say the endpoint is down (no connection, a timeout, 502/503/504 without
    ``Retry-After``) rather than something about this one order? An order that failed so may be
    retried as soon as another delivery to the endpoint succeeds, before its back-off is over."""
    if exc.retry_after is not None:
        return False
    return exc.status is None or exc.status in UNREACHABLE_STATUSES
