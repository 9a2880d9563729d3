"""Host API of a show's chat: rules (on/off, slow mode, word filter), moderators, deleting
messages, muting viewers, questions and the pin. Rows of the route table in
:mod:`livecommerce.web.hostapi` (ownership of the show is checked there, before the body is read).

Every change reaches the viewers at once on the show's channel (see ``docs/protocol.md``,
"Chat, reactions and questions"); the host's panel receives the same messages on its live stream.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from livecommerce.core.errors import ValidationError
from livecommerce.core.model import valid_id
from livecommerce.realtime.chat import (
    MAX_MUTE_S,
    MAX_SLOW_MODE_S,
    MESSAGE_ID,
    Invalid,
    check_words,
)
from livecommerce.realtime.chatstore import Chat, chat_of
from livecommerce.web.operation import Ctx, JSONResponse, Operation, integer

S = "/shows/{show}"
M = "/shows/{show}/chat/messages/{message}"


def _chat(ctx: Ctx) -> Chat:
    return chat_of(ctx.services)


def _message(request: Request) -> str:
    message: str = request.path_params["message"]
    if not MESSAGE_ID.fullmatch(message):
        raise ValidationError("message", "expected a chat message id like '1732350000123-0'")
    return message


async def get_chat(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    now = await ctx.services.inventory.server_time_ms()
    return JSONResponse(await _chat(ctx).overview(show, now))


async def update_chat(request: Request, ctx: Ctx) -> Response:
    show, body = request.path_params["show"], ctx.body
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ValidationError("enabled", "expected true or false")
    slow_ms = None
    if "slow_mode_s" in body:
        slow_ms = integer(body, "slow_mode_s", 0, MAX_SLOW_MODE_S) * 1000
    words = None
    if "words" in body:
        try:
            words = check_words(body["words"])
        except Invalid as exc:
            raise ValidationError(exc.field, str(exc)) from exc
    chat = _chat(ctx)
    await chat.configure(show, enabled=enabled, slow_ms=slow_ms, words=words)
    now = await ctx.services.inventory.server_time_ms()
    return JSONResponse(await chat.overview(show, now))


async def set_moderators(request: Request, ctx: Ctx) -> Response:
    viewers = ctx.body.get("viewers")
    if not isinstance(viewers, list) or len(viewers) > 100 or not all(map(valid_id, viewers)):
        raise ValidationError("viewers", "expected a list of at most 100 viewer ids")
    await _chat(ctx).set_moderators(request.path_params["show"], sorted(set(viewers)))
    return JSONResponse({"moderators": sorted(set(viewers))})


async def delete_message(request: Request, ctx: Ctx) -> Response:
    await _chat(ctx).delete(request.path_params["show"], _message(request))
    return Response(status_code=204)


async def pin_message(request: Request, ctx: Ctx) -> Response:
    pinned = await _chat(ctx).pin(request.path_params["show"], _message(request))
    return JSONResponse({"pinned": pinned})


async def unpin(request: Request, ctx: Ctx) -> Response:
    await _chat(ctx).unpin(request.path_params["show"])
    return Response(status_code=204)


async def answer_question(request: Request, ctx: Ctx) -> Response:
    await _chat(ctx).answer(request.path_params["show"], _message(request))
    return Response(status_code=204)


async def mute_viewer(request: Request, ctx: Ctx) -> Response:
    viewer = ctx.body.get("viewer")
    if not valid_id(viewer):
        raise ValidationError("viewer", "expected a viewer id")
    assert isinstance(viewer, str)
    duration = integer(ctx.body, "duration_s", 0, MAX_MUTE_S, default=0)
    until = -1
    if duration:
        until = await ctx.services.inventory.server_time_ms() + duration * 1000
    await _chat(ctx).mute(request.path_params["show"], viewer, until)
    body: dict[str, Any] = {"viewer": viewer, "until": until}
    return JSONResponse(body)


async def unmute_viewer(request: Request, ctx: Ctx) -> Response:
    viewer = request.path_params["viewer"]
    await _chat(ctx).unmute(request.path_params["show"], viewer)
    return Response(status_code=204)


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", S + "/chat", get_chat, "getChat",
              "The chat: rules, moderators, mutes, open questions, the pin, recent messages",
              "chat", response="ChatOverview"),
    Operation("PATCH", S + "/chat", update_chat, "updateChat",
              "Turn chat on or off, set slow mode, replace the word filter", "chat",
              body="ChatPatch", fields=("enabled", "slow_mode_s", "words"),
              response="ChatOverview"),
    Operation("PUT", S + "/chat/moderators", set_moderators, "setModerators",
              "Name the viewers who may moderate from their own socket", "chat",
              body="Moderators", fields=("viewers",), response="Moderators"),
    Operation("DELETE", M, delete_message, "deleteChatMessage",
              "Delete a message for everyone (also from the history)", "chat", status=204),
    Operation("POST", M + "/pin", pin_message, "pinChatMessage",
              "Pin a message (a question) next to the product for everyone", "chat",
              response="Pinned"),
    Operation("DELETE", S + "/chat/pin", unpin, "unpinChatMessage", "Clear the pin", "chat",
              status=204),
    Operation("POST", M + "/answered", answer_question, "answerQuestion",
              "Mark a question answered (it leaves the open list, and the pin)", "chat",
              status=204),
    Operation("POST", S + "/chat/mutes", mute_viewer, "muteViewer",
              "Mute a viewer for duration_s seconds, or for the show (0 or absent)", "chat",
              body="Mute", fields=("viewer", "duration_s"), response="Muted"),
    Operation("DELETE", S + "/chat/mutes/{viewer}", unmute_viewer, "unmuteViewer",
              "Lift a viewer's mute", "chat", status=204),
)  # fmt: skip
