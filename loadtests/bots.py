"""Spike "bot" mode: a share of the viewers are one reseller's scripts.

``--bots 0.3`` makes every viewer whose index falls in the bot share (spread evenly, e.g.
every third viewer) a bot: its connection comes from one of ``--bot-addresses`` addresses
(``X-Forwarded-For``, with the local stack trusting 127.0.0.1 as its proxy) and, with
``--bot-payment shared``, every bot pays with the same payment reference. Honest viewers get an
address each. ``--protect`` turns the service's defences on in the local stack (the limit per
payment reference, per-address connections, per-viewer attempts); run once with and once
without to compare. The report's ``bots`` section says how many units the bots obtained.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

SHARED_PAYMENT = "pay-bot-farm"


@dataclass(frozen=True)
class BotPlan:
    fraction: float = 0.0
    """Share of the viewers that are bots (0 = no bot mode)."""
    addresses: int = 3
    """Addresses the bots connect from."""
    shared_payment: bool = True
    """Every bot pays with the same payment reference."""

    @property
    def on(self) -> bool:
        return self.fraction > 0

    def is_bot(self, index: int) -> bool:
        """Spread evenly: viewer ``index`` is a bot when the running share crosses an integer."""
        if not self.on:
            return False
        return int((index + 1) * self.fraction) > int(index * self.fraction)

    def address(self, index: int) -> str:
        """The client address of viewer ``index`` as the trusted proxy reports it."""
        if self.is_bot(index):
            return f"198.51.100.{index % max(1, self.addresses) + 1}"
        return f"100.{64 + (index >> 16) % 64}.{(index >> 8) & 255}.{index & 255}"

    def payment_reference(self, index: int, viewer: str, k: int | str) -> str:
        if self.is_bot(index) and self.shared_payment:
            return SHARED_PAYMENT
        return f"pay-{viewer}-{k}"

    def headers(self, index: int) -> dict[str, str]:
        return {"X-Forwarded-For": self.address(index)} if self.on else {}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bots")
    g.add_argument(
        "--bots",
        type=float,
        default=0.0,
        help="share of viewers that are bots (0..1; 0 = no bot mode)",
    )
    g.add_argument("--bot-addresses", type=int, default=3, help="addresses the bots come from")
    g.add_argument(
        "--bot-payment",
        choices=("shared", "own"),
        default="shared",
        help="bots share one payment reference, or each has its own",
    )
    g.add_argument(
        "--protect",
        action="store_true",
        help="--local: turn on the limit per payment reference and the edge limits",
    )


def plan_of(args: argparse.Namespace) -> BotPlan:
    if not 0.0 <= args.bots <= 1.0:
        raise SystemExit("--bots must be in 0..1")
    return BotPlan(args.bots, args.bot_addresses, args.bot_payment == "shared")


def stack_env(args: argparse.Namespace, limit: int) -> dict[str, str]:
    """The local stack's environment for bot mode (empty when bot mode is off)."""
    if not args.bots:
        return {}
    env = {"LIVECOMMERCE_TRUSTED_PROXIES": "127.0.0.1"}
    if args.protect:
        env.update(
            LIVECOMMERCE_LIMIT_PER_PAYMENT="true",
            LIVECOMMERCE_ADDRESS_CONNECTIONS=str(max(2 * limit, 5)),
            LIVECOMMERCE_VIEWER_ATTEMPTS="5",
        )
    return env


def summary(bots: BotPlan, viewers: int, stock: int, units_by_viewer: dict[str, int],
            viewer_id: Any, bot_outcomes: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """The report's ``bots`` section: who got the units."""
    bot_ids = {viewer_id(i) for i in range(viewers) if bots.is_bot(i)}
    bot_units = sum(n for v, n in units_by_viewer.items() if v in bot_ids)
    honest_units = sum(n for v, n in units_by_viewer.items() if v not in bot_ids)
    return {
        **bots.as_dict(),
        "bot_viewers": len(bot_ids),
        "units_bots_obtained": bot_units,
        "units_honest_viewers_obtained": honest_units,
        "bot_share_of_stock": round(bot_units / stock, 4) if stock else 0.0,
        "bot_buyers": sum(1 for v in bot_ids if units_by_viewer.get(v)),
        "bot_outcomes": dict(Counter(bot_outcomes).most_common()),
    }
