"""Privacy routes of the API: a viewer's data export and erasure, for operator keys only.

``GET /api/privacy/viewers/{viewer}`` returns the document of
:func:`livecommerce.fulfillment.privacy.export`; ``DELETE`` on the same path erases
(:mod:`livecommerce.fulfillment.erasure`). Both take an operator key (``lco_``,
:mod:`livecommerce.web.operatorkeys`); host keys and viewer tokens get 401.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from livecommerce.fulfillment import erasure, privacy

if TYPE_CHECKING:
    from livecommerce.hostapi import Ctx

log = logging.getLogger("livecommerce.privacy")

VIEWER = "/privacy/viewers/{viewer}"


def _json(content: object, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


async def export_viewer(request: Request, ctx: Ctx) -> Response:
    viewer = privacy.check_viewer(request.path_params["viewer"])
    return _json(await privacy.export(ctx.services.redis, ctx.services.keys, viewer))


async def erase_viewer(request: Request, ctx: Ctx) -> Response:
    viewer = privacy.check_viewer(request.path_params["viewer"])
    services = ctx.services
    report = await erasure.erase(services.redis, services.keys, services.settings, viewer)
    log.info("privacy: viewer erased by operator %s (pseudonym %s)", ctx.host, report["pseudonym"])
    return _json(report)
