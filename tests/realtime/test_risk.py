"""The risk check hook against a real scoring endpoint on loopback: veto (the hold released),
timeout and error under both fail-open and fail-closed, replays not asked again, latency in
/metrics. Real uvicorn, real websockets clients, real Valkey."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from helpers.gateway import SECRET, Running, serve, settings
from helpers.http import http_server, silent_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from livecommerce.core.config import FraudSettings
from livecommerce.core.model import DropSpec
from livecommerce.realtime.client import Client
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace


def scorer(asked: list[dict[str, Any]], mode: dict[str, str]) -> Starlette:
    """Vetoes viewers whose id starts with "bot"; ``mode["answer"]`` can break it."""

    async def score(request: Request) -> Response:
        body = orjson.loads(await request.body())
        asked.append(body)
        if mode.get("answer") == "500":
            return Response(b"down", 500)
        if mode.get("answer") == "garbage":
            return Response(b"<html>", 200)
        allow = not str(body["viewer"]).startswith("bot")
        return Response(orjson.dumps({"allow": allow, "reason": "" if allow else "farm"}), 200,
                        media_type="application/json")  # fmt: skip

    return Starlette(routes=[Route("/score", score, methods=["POST"])])


@contextlib.asynccontextmanager
async def gateway(redis_url: str, keyspace: Keyspace, url: str, *,
                  fail_open: bool = True) -> AsyncIterator[tuple[Running, Inventory]]:  # fmt: skip
    # A generous budget: on a loaded machine the scorer's first answer can take longer than the
    # 150 ms default, which would turn a veto into a timeout. The timeout tests use a server that
    # never answers, so they run out of any budget.
    fraud = FraudSettings(risk_url=url, risk_timeout_ms=2000, risk_fail_open=fail_open)
    cfg = dataclasses.replace(settings(), fraud=fraud)
    async with serve(cfg, redis_url, keyspace) as gw:
        inv: Inventory = gw.app.state.services.inventory
        await inv.create_show("s1", title="Show")
        await inv.create_drop("s1", DropSpec(id="d1", sku="k", title="Cap", quantity=20, limit=2,
                                             prices={"EUR": 500}))  # fmt: skip
        yield gw, inv


def token(viewer: str) -> str:
    return mint(SECRET, viewer, 600)


async def held(inv: Inventory) -> int:
    drop = await inv.get_drop("s1", "d1")
    assert drop is not None
    return int(drop["held"])


async def test_a_veto_refuses_and_releases_the_hold_others_buy(
    redis_url: str, keyspace: Keyspace
) -> None:
    asked: list[dict[str, Any]] = []
    async with (
        http_server(scorer(asked, {})) as url,
        gateway(redis_url, keyspace, url + "/score") as (gw, inv),
        Client(gw.url, "s1", token=token("bot7")) as bot,
        Client(gw.url, "s1", token=token("fan")) as fan,
    ):
        hold = await bot.reserve("d1", 1, request_id="r1")
        assert hold["ok"] and await held(inv) == 1
        refused = await bot.confirm(hold["hold"]["id"], "card-1", request_id="r2")
        assert refused["ok"] is False and refused["reason"] == "risk_refused", refused
        assert refused["detail"] == {"risk": "veto", "risk_reason": "farm"}
        assert await held(inv) == 0  # the hold went back to stock at once
        one_tap = await bot.buy_now("d1", 1, "card-1", request_id="r3")
        assert one_tap["reason"] == "risk_refused"
        mine = await fan.buy_now("d1", 2, "card-2", request_id="f1")
        assert mine["ok"], mine
        again = await fan.buy_now("d1", 2, "card-2", request_id="f1")
        assert again["ok"] and again["replay"] is True
        asked_before = len(asked)
        assert [a["viewer"] for a in asked] == ["bot7", "bot7", "fan"]
        assert asked[0]["op"] == "confirm" and asked[0]["hold"] == hold["hold"]["id"]
        drop = await inv.get_drop("s1", "d1")
        assert drop is not None and drop["sold"] == 2
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(gw.http + "/metrics")).text
        assert 'livecommerce_risk_checks_total{outcome="veto"} 2.0' in metrics
        assert 'livecommerce_risk_checks_total{outcome="allow"} 1.0' in metrics
        assert "livecommerce_risk_check_seconds_count 3.0" in metrics
    assert len(asked) == asked_before  # the replay was not asked again


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_timeout_follows_the_setting(
    redis_url: str, keyspace: Keyspace, fail_open: bool
) -> None:
    async with (
        silent_server() as url,  # accepts, never answers: the budget runs out
        gateway(redis_url, keyspace, url + "/score", fail_open=fail_open) as (gw, inv),
        Client(gw.url, "s1", token=token("fan")) as fan,
    ):
        hold = await fan.reserve("d1", 1, request_id="r1")
        out = await fan.confirm(hold["hold"]["id"], "card", request_id="r2")
        if fail_open:
            assert out["ok"] and out["order"]["quantity"] == 1, out
        else:
            assert out["reason"] == "risk_refused" and out["detail"] == {"risk": "timeout"}
            assert await held(inv) == 0
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(gw.http + "/metrics")).text
        assert 'livecommerce_risk_checks_total{outcome="timeout"} 1.0' in metrics


@pytest.mark.parametrize("answer", ["500", "garbage"])
@pytest.mark.parametrize("fail_open", [True, False])
async def test_an_error_follows_the_setting(
    redis_url: str, keyspace: Keyspace, fail_open: bool, answer: str
) -> None:
    asked: list[dict[str, Any]] = []
    async with (
        http_server(scorer(asked, {"answer": answer})) as url,
        gateway(redis_url, keyspace, url + "/score", fail_open=fail_open) as (gw, inv),
        Client(gw.url, "s1", token=token("fan")) as fan,
    ):
        out = await fan.buy_now("d1", 1, "card", request_id="b1")
        if fail_open:
            assert out["ok"], out
        else:
            assert out["reason"] == "risk_refused" and out["detail"] == {"risk": "error"}
            drop = await inv.get_drop("s1", "d1")
            assert drop is not None and drop["sold"] == 0
        assert len(asked) == 1
