"""The web pages: a landing page, the host control panel and the viewer page.

Pages are small HTML shells; the behaviour is in plain ES modules under ``livecommerce/static``
(no build step, nothing fetched from the internet). The panel talks to the host API
(:mod:`livecommerce.web.hostapi`) with the key the host signs in with; the viewer page speaks the
WebSocket protocol of ``docs/protocol.md``. The viewer's token travels in the URL *fragment*
(``#token=...``), which browsers never send to servers.
"""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from livecommerce.core.model import valid_id
from livecommerce.store.services import Services

STATIC = Path(__file__).with_name("static")

# The video of a show is a third-party embed (its video URL); everything else is ours.
CSP = (
    "default-src 'self'; img-src 'self' data: https: http:; media-src 'self' https: http:; "
    "frame-src 'self' https: http:; connect-src 'self'; style-src 'self'; script-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def shell(title: str, module: str | None, body: str, *, attrs: str = "") -> HTMLResponse:
    script = f'<script type="module" src="/static/{module}"></script>' if module else ""
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="light dark">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
{script}
</head>
<body {attrs}>
{body}
</body>
</html>
"""
    return HTMLResponse(page, headers=HEADERS)


async def landing(request: Request) -> Response:
    services: Services = request.app.state.services
    links = []
    for show in await services.inventory.show_ids():
        record = await services.inventory.get_show(show)
        if record and record.get("state") != "ended":
            title = html.escape(record.get("title") or show)
            state = html.escape(record["state"])
            links.append(
                f'<li><a href="/watch/{html.escape(show)}">{title}</a> '
                f'<span class="muted">({state})</span></li>'
            )
    shows = "\n".join(links) or '<li class="muted">No show yet.</li>'
    body = f"""<main class="landing">
<h1>livecommerce</h1>
<p>Live shopping: hosts drop products during a stream, viewers buy in real time.</p>
<p><a class="button" href="/panel">Host control panel</a></p>
<h2>Shows</h2>
<ul>{shows}</ul>
<p class="muted">Viewer links with a buyer token are printed by <code>livecommerce serve</code>.
Without a token you can watch but not buy. API: <a href="/api/openapi.json">OpenAPI</a>.</p>
</main>"""
    return shell("livecommerce", None, body)


async def panel(request: Request) -> Response:
    return shell("Control panel - livecommerce", "panel.js", '<div id="app"></div>',
                 attrs='class="panel"')  # fmt: skip


async def watch(request: Request) -> Response:
    show = request.path_params["show"]
    if not valid_id(show):
        return HTMLResponse("<h1>Unknown show</h1>", status_code=404, headers=HEADERS)
    return shell("Live - livecommerce", "viewer.js", '<div id="app"></div>',
                 attrs=f'class="viewer" data-show="{html.escape(show)}"')  # fmt: skip


def routes() -> list[BaseRoute]:
    """Mounted at the root by the app."""
    return [
        Route("/", landing),
        Route("/panel", panel),
        Route("/watch/{show}", watch),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
