"""Chat, reactions, questions and moderation end to end: real uvicorn, real websockets clients,
real Valkey, the host API over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, serve, settings
from websockets.asyncio.client import connect

from livecommerce.realtime.chat import HISTORY_SIZE, MAX_CHAT_CHARS, React
from livecommerce.realtime.chatstore import chat_of
from livecommerce.realtime.client import Client
from livecommerce.realtime.codec import SUBPROTOCOL_JSON, Encoding, decode, encode
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one", host="h1")
    await inventory.start_show("s1")
    return inventory


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace, inv: Inventory) -> AsyncIterator[Running]:
    async with serve(settings(), redis_url, keyspace) as running:
        yield running


@pytest.fixture
async def host(gw: Running, redis: aioredis.Redis, keyspace: Keyspace
               ) -> AsyncIterator[httpx.AsyncClient]:  # fmt: skip
    secret, _ = await HostKeys(redis, keyspace).create("h1")
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=gw.http + "/api", headers=headers) as client:
        yield client


def token(viewer: str, name: str | None = None) -> str:
    return mint(SECRET, viewer, 600, name=name)


async def next_of(client: Client, kind: str, **data: Any) -> dict[str, Any]:
    """The next pushed message of type ``kind`` whose data has the given values."""
    while True:
        msg = await client.next_message(types=[kind])
        if all(msg["data"].get(k) == v for k, v in data.items()):
            return msg


async def history(client: Client) -> dict[str, Any]:
    """The chat state the join reply carried."""
    assert client.join_reply is not None
    chat: dict[str, Any] = client.join_reply["chat"]
    return chat


@pytest.mark.parametrize("encoding", [Encoding.JSON, Encoding.MSGPACK])
async def test_chat_reaches_every_viewer_with_name_id_and_server_time(
    gw: Running, encoding: Encoding
) -> None:
    async with (
        Client(gw.url, "s1", token=token("ana", "Ana M."), encoding=encoding) as ana,
        Client(gw.url, "s1", encoding=Encoding.MSGPACK) as guest,
    ):
        assert (await history(ana))["messages"] == []
        await history(guest)
        ack = await ana.chat("does it come in blue?")
        assert ack["type"] == "chat_ack", ack
        for client in (ana, guest):
            msg = await next_of(client, "chat", id=ack["message"])
            assert msg["data"]["name"] == "Ana M." and msg["data"]["viewer"] == "ana"
            assert msg["data"]["text"] == "does it come in blue?"
            assert msg["data"]["ts"] == ack["server_time"] == msg["ts"]
            assert msg["data"]["question"] is False
        again = await ana.chat("does it come in blue?", request_id=ack["id"])  # a resend
        assert again["message"] == ack["message"]
        state = await chat_of(gw.app.state.services).state("s1")
        assert [m["id"] for m in state.messages] == [ack["message"]]  # posted once


async def test_a_guest_cannot_chat(gw: Running) -> None:
    async with Client(gw.url, "s1") as guest:
        reply = await guest.chat("hello")
        assert reply["type"] == "error" and reply["code"] == "auth_required"


async def test_history_on_join_is_bounded_and_on_resume(gw: Running) -> None:
    chat = chat_of(gw.app.state.services)
    posted = [
        (await chat.post("s1", "v1", "V", f"m{i}", False, request_id=f"r{i}")).id
        for i in range(HISTORY_SIZE + 5)
    ]
    async with Client(gw.url, "s1", token=token("late")) as late:
        data = await history(late)
        assert [m["id"] for m in data["messages"]] == posted[-HISTORY_SIZE:]  # oldest first
        assert data["enabled"] is True and data["slow_mode_s"] == 0
        last_event = late.snapshot["last_event_id"] if late.snapshot else "0-0"
        ack = await late.chat("one more")
    # A viewer resuming from its last event id gets the chat as it is now, too.
    async with connect(gw.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        await ws.send(encode(Encoding.JSON, {"type": "join", "show": "s1",
                                             "last_event_id": last_event}))  # fmt: skip
        resumed = decode(Encoding.JSON, await ws.recv())
        assert resumed["type"] == "resumed"
        assert resumed["chat"]["messages"][-1]["id"] == ack["message"]
        assert len(resumed["chat"]["messages"]) == HISTORY_SIZE


async def test_length_limit_and_malformed_chat_frames_change_nothing(gw: Running) -> None:
    chat = chat_of(gw.app.state.services)
    async with Client(gw.url, "s1", token=token("ana")) as ana:
        await history(ana)
        bad: list[tuple[dict[str, Any], str]] = [
            ({"type": "chat", "text": "x" * (MAX_CHAT_CHARS + 1)}, "text"),
            ({"type": "chat", "text": "   "}, "text"),
            ({"type": "chat", "text": 42}, "text"),
            ({"type": "chat", "text": "bell \x07"}, "text"),
            ({"type": "chat", "text": "ok", "question": "yes"}, "question"),
            ({"type": "chat", "text": "ok", "id": "bad id!"}, "id"),
            ({"type": "react", "reaction": "poop"}, "reaction"),
            ({"type": "react", "reaction": "heart", "count": 10_000}, "count"),
            ({"type": "react", "reaction": "heart", "count": True}, "count"),
            ({"type": "moderate", "action": "explode"}, "action"),
            ({"type": "moderate", "action": "delete", "message": "x"}, "message"),
            ({"type": "moderate", "action": "mute", "viewer": "no such!"}, "viewer"),
        ]
        for message, field in bad:
            message.setdefault("id", ana.new_request_id())
            if message["type"] == "react":
                await ana.send_raw(encode(Encoding.JSON, message))
                reply = await ana.next_message(types=["error"])
            else:
                reply = await ana.request(message)
            assert reply["type"] == "error" and reply["code"] == "bad_message", (message, reply)
            assert reply["field"] == field, (message, reply)
        await ana.send_raw('{"type": "chat", "text": ')  # not even JSON
        assert (await ana.next_message(types=["error"]))["code"] == "bad_frame"
        assert (await chat.state("s1")).messages == []
        assert (await ana.chat("x" * MAX_CHAT_CHARS))["type"] == "chat_ack"  # still served
        assert (await ana.ping())["type"] == "pong"


async def test_slow_mode_word_filter_and_chat_off(gw: Running, host: httpx.AsyncClient) -> None:
    async with Client(gw.url, "s1", token=token("ana")) as ana, \
            Client(gw.url, "s1", token=token("ben")) as ben:  # fmt: skip
        r = await host.patch(
            "/shows/s1/chat", json={"slow_mode_s": 60, "words": ["Scam", "wire me"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["words"] == ["scam", "wire me"] and r.json()["slow_mode_s"] == 60
        settings_msg = await ana.next_message(types=["chat_settings"])
        assert settings_msg["data"] == {"enabled": True, "slow_mode_s": 60}
        assert (await ana.chat("first"))["type"] == "chat_ack"
        slow = await ana.chat("second")
        assert slow["code"] == "slow_mode" and 0 < slow["retry_after_ms"] <= 60_000
        assert (await ben.chat("ben may still talk"))["type"] == "chat_ack"
        await host.patch("/shows/s1/chat", json={"slow_mode_s": 0})
        for text in ("this is a SCAM!", "please Wire  me the money", "scam"):
            refused = await ben.chat(text)
            assert refused["code"] == "filtered", (text, refused)
        assert (await ben.chat("scampi are tasty"))["type"] == "chat_ack"  # whole words only
        r = await host.patch("/shows/s1/chat", json={"enabled": False})
        assert r.json()["enabled"] is False
        await next_of(ben, "chat_settings", enabled=False)
        assert (await ben.chat("hello?"))["code"] == "chat_off"
        bad = await host.patch("/shows/s1/chat", json={"words": ["no/slashes"]})
        assert bad.status_code == 422 and bad.json()["field"] == "words"
        assert (await host.get("/shows/s1/chat")).json()["words"] == ["scam", "wire me"]
        texts = [m["text"] for m in (await host.get("/shows/s1/chat")).json()["messages"]]
        assert texts == ["first", "ben may still talk", "scampi are tasty"]


async def test_mute_and_delete_by_the_host(gw: Running, host: httpx.AsyncClient) -> None:
    async with Client(gw.url, "s1", token=token("ana")) as ana, \
            Client(gw.url, "s1", token=token("ben")) as ben:  # fmt: skip
        spam = await ana.chat("buy followers at spam.example")
        kept = await ben.chat("nice sneakers")
        await next_of(ben, "chat", id=spam["message"])
        r = await host.delete(f"/shows/s1/chat/messages/{spam['message']}")
        assert r.status_code == 204
        for client in (ana, ben):
            await next_of(client, "chat_deleted", id=spam["message"])
        assert (await host.delete(f"/shows/s1/chat/messages/{spam['message']}")).status_code == 404
        r = await host.post("/shows/s1/chat/mutes", json={"viewer": "ana"})
        assert r.json() == {"viewer": "ana", "until": -1}
        await next_of(ana, "chat_muted", viewer="ana")
        muted = await ana.chat("let me talk")
        assert muted["code"] == "muted" and muted["until"] == -1
        assert (await ben.chat("ben is fine"))["type"] == "chat_ack"
        r = await host.post("/shows/s1/chat/mutes", json={"viewer": "ana", "duration_s": 300})
        until = r.json()["until"]
        assert (await ana.chat("still?"))["until"] == until > 0
        assert (await host.get("/shows/s1/chat")).json()["mutes"] == {"ana": until}
        assert (await host.delete("/shows/s1/chat/mutes/ana")).status_code == 204
        assert (await ana.chat("back"))["type"] == "chat_ack"
    async with Client(gw.url, "s1") as late:  # the deleted message is gone from history
        ids = [m["id"] for m in (await history(late))["messages"]]
        assert spam["message"] not in ids and kept["message"] in ids


async def test_a_viewer_token_cannot_moderate_until_the_host_names_it(
    gw: Running, host: httpx.AsyncClient
) -> None:
    async with Client(gw.url, "s1", token=token("ana")) as ana, \
            Client(gw.url, "s1", token=token("mod")) as mod:  # fmt: skip
        posted = await ana.chat("rude words")
        refused = await mod.moderate("delete", message=posted["message"])
        assert refused["code"] == "not_moderator"
        refused = await ana.moderate("mute", viewer="mod", duration_s=60)
        assert refused["code"] == "not_moderator"
        assert (await ana.chat("ana is not muted"))["type"] == "chat_ack"
        overview = (await host.get("/shows/s1/chat")).json()
        assert posted["message"] in [m["id"] for m in overview["messages"]]
        assert overview["mutes"] == {}
        r = await host.put("/shows/s1/chat/moderators", json={"viewers": ["mod"]})
        assert r.json() == {"moderators": ["mod"]}
        done = await mod.moderate("delete", message=posted["message"])
        assert done["type"] == "moderated", done
        await next_of(ana, "chat_deleted", id=posted["message"])
        assert (await mod.moderate("delete", message="1-0"))["code"] == "unknown_message"
        assert (await mod.moderate("mute", viewer="ana", duration_s=0))["type"] == "moderated"
        assert (await ana.chat("hello"))["code"] == "muted"
        assert (await mod.moderate("unmute", viewer="ana"))["type"] == "moderated"
        assert (await ana.chat("hello again"))["type"] == "chat_ack"


async def test_questions_pin_and_answer(gw: Running, host: httpx.AsyncClient) -> None:
    async with Client(gw.url, "s1", token=token("ana")) as ana, \
            Client(gw.url, "s1", token=token("ben")) as ben:  # fmt: skip
        q = await ana.chat("does it come in blue?", question=True)
        await ben.chat("just chatting")
        overview = (await host.get("/shows/s1/chat")).json()
        assert [m["text"] for m in overview["questions"]] == ["does it come in blue?"]
        r = await host.post(f"/shows/s1/chat/messages/{q['message']}/pin")
        assert r.status_code == 200 and r.json()["pinned"]["id"] == q["message"]
        for client in (ana, ben):
            pinned = await client.next_message(types=["chat_pinned"])
            assert pinned["data"]["message"]["text"] == "does it come in blue?"
            assert pinned["data"]["message"]["question"] is True
        async with Client(gw.url, "s1") as late:
            assert (await history(late))["pinned"]["id"] == q["message"]
        r = await host.post(f"/shows/s1/chat/messages/{q['message']}/answered")
        assert r.status_code == 204
        for client in (ana, ben):
            await next_of(client, "question_answered", id=q["message"])
            assert (await client.next_message(types=["chat_pinned"]))["data"]["message"] is None
        overview = (await host.get("/shows/s1/chat")).json()
        assert overview["questions"] == [] and overview["pinned"] is None
        assert (await host.post("/shows/s1/chat/messages/1-0/pin")).status_code == 404
        assert (await host.post("/shows/s1/chat/messages/nope/pin")).status_code == 422


async def test_reactions_are_summed_never_one_frame_per_tap(gw: Running) -> None:
    engagement = gw.gateway.engagement
    async with Client(gw.url, "s1", token=token("ana")) as ana, Client(gw.url, "s1") as ben:
        await history(ana)
        await history(ben)
        # Taps over the socket: they arrive summed.
        await ana.react("heart", 3)
        await ben.react("fire")
        got: dict[str, int] = {}
        while got != {"heart": 3, "fire": 1}:
            for k, v in (await ana.next_message(types=["reactions"]))["data"]["counts"].items():
                got[k] = got.get(k, 0) + v
        # 5000 taps within one interval (added in one loop turn, as the endpoint would):
        conn = next(c for c in gw.gateway.connections if c.session.viewer == "ana")
        for _ in range(5000):
            await engagement.handle(conn, React("clap", 1))
        while "clap" not in (
            counts := (await ben.next_message(types=["reactions"]))["data"]["counts"]
        ):
            pass  # ben's frames of the taps above
        assert counts == {"clap": 5000}  # one frame for 5000 taps
