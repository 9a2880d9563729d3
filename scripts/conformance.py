"""Autobahn WebSocket conformance: every case of the Autobahn TestSuite, run by `kosoku` (the
suite's own case files under a maintained runner: https://github.com/curioswitch/kosoku),
against the server stack the product runs.

Two targets, both under ``runner.uvicorn_config`` (our WebSocket protocol class, the frame
limit of LIVECOMMERCE_MAX_FRAME_BYTES, no permessage-deflate), on loopback:

- ``stack``: an echo application on that stack. Most Autobahn cases expect the server to echo
  what it receives; this target is the WebSocket layer itself, every case;
- ``endpoint``: the real viewer endpoint ``/ws`` (real app, embedded Valkey), for the cases
  that do not need an echo: pings, reserved bits and opcodes, closing (2.*, 3.*, 4.*, 7.*).

Every non-pass must be one explained in docs/conformance.md (``EXPLAINED`` below, by prefix);
the exit status is 1 if any other case does not pass. CI runs the fast subset in
``tests/realtime/test_autobahn.py``; this script runs everything::

    .venv/bin/python scripts/conformance.py            # both targets, every case
    .venv/bin/python scripts/conformance.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from kosoku import FailureError, run_fuzzingclient

from livecommerce.core.config import Secret, Settings, load
from livecommerce.ops.app import create_app
from livecommerce.ops.runner import uvicorn_config
from livecommerce.store.embedded import EmbeddedValkey, free_port
from livecommerce.store.keys import Keyspace

ENDPOINT_CASES = ("2.*", "3.*", "4.*", "7.*")

# Non-passes that are deliberate choices, with the reason (docs/conformance.md).
TOO_BIG = "a message above LIVECOMMERCE_MAX_FRAME_BYTES is refused with 1009, by design"
NO_DEFLATE = "permessage-deflate is not offered (it doubles broadcast CPU: docs/protocol.md)"
NO_ECHO = "expects its text message echoed; /ws answers it with a bad_frame error reply"


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI WebSocket echo: what Autobahn's cases expect of a server."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def settings(max_frame_bytes: int | None = None) -> Settings:
    base = load({"LIVECOMMERCE_DEMO": "false"})
    gateway = dataclasses.replace(base.gateway, token_secret=Secret("a" * 32), host="127.0.0.1")
    if max_frame_bytes is not None:
        gateway = dataclasses.replace(gateway, max_frame_bytes=max_frame_bytes)
    return dataclasses.replace(base, gateway=gateway)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextlib.asynccontextmanager
async def serving(app: Any, cfg: Settings, *, lifespan: str) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn_config(app, cfg)
    config.port, config.lifespan, config.log_level = port, lifespan, "critical"
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        await task
        raise RuntimeError("server did not start")
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@dataclass
class Outcome:
    target: str
    results: list[Any] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    def unexplained(self) -> list[Any]:
        return [r for r in self.results if not r.passed and explain(r, self.target) is None]

    def summary(self) -> dict[str, Any]:
        verdicts = collections.Counter(
            f"{r.behavior.value}/{r.behavior_close.value}" for r in self.results
        )
        failing = [r for r in self.results if not r.passed]
        by_reason = collections.Counter(explain(r, self.target) or "UNEXPLAINED" for r in failing)
        return {
            "target": self.target,
            "cases": len(self.results),
            "passed": self.passed,
            "verdicts": dict(verdicts),
            "non_passes": dict(by_reason),
            "unexplained": [
                {"case": r.case_id, "behavior": r.behavior.value,
                 "close": r.behavior_close.value, "result": r.result,
                 "result_close": r.result_close, "description": r.description}
                for r in self.unexplained()
            ],
        }  # fmt: skip


def explain(result: Any, target: str) -> str | None:
    """Why ``result`` did not pass, if that is a choice we made; None otherwise."""
    if result.case_id.startswith(("12.", "13.")) and result.behavior.value == "UNIMPLEMENTED":
        return NO_DEFLATE
    if result.remote_close_code == 1009:
        return TOO_BIG
    if target == "endpoint" and result.case_id == "7.1.1":
        return NO_ECHO
    return None


async def _run(url: str, cases: Sequence[str] | None, concurrency: int) -> list[Any]:
    try:
        return await run_fuzzingclient(url, cases=cases, concurrency=concurrency)
    except FailureError as exc:  # some case did not pass: the results are still all there
        return list(exc.results)


async def run_stack(cases: Sequence[str] | None = None, concurrency: int = 4,
                    max_frame_bytes: int | None = None) -> Outcome:  # fmt: skip
    async with serving(echo, settings(max_frame_bytes), lifespan="off") as port:
        return Outcome("stack", await _run(f"ws://127.0.0.1:{port}", cases, concurrency))


async def run_endpoint(cases: Sequence[str] = ENDPOINT_CASES, concurrency: int = 4,
                       redis_url: str | None = None) -> Outcome:  # fmt: skip
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="autobahn-")))
            redis_url = stack.enter_context(EmbeddedValkey(tmp / "valkey")).url
        cfg = settings()
        app = create_app(cfg, redis_url=redis_url, keyspace=Keyspace("autobahn"))
        async with serving(app, cfg, lifespan="on") as port:
            results = await _run(f"ws://127.0.0.1:{port}/ws", cases, concurrency)
    return Outcome("endpoint", results)


async def main_async(args: argparse.Namespace) -> int:
    outcomes = []
    if args.target in ("stack", "both"):
        outcomes.append(await run_stack(args.cases or None, args.concurrency, args.max_frame_bytes))
    if args.target in ("endpoint", "both"):
        outcomes.append(await run_endpoint(args.cases or ENDPOINT_CASES, args.concurrency))
    report = [o.summary() for o in outcomes]
    for o in report:
        print(f"{o['target']}: {o['passed']}/{o['cases']} passed; verdicts {o['verdicts']}")
        for reason, n in o["non_passes"].items():
            print(f"  {n} not passed: {reason}")
        for case in o["unexplained"]:
            print(f"  UNEXPLAINED {case['case']}: {case['behavior']}/{case['close']} "
                  f"{case['result']} {case['result_close']}")  # fmt: skip
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report, indent=2))
    return 1 if any(o["unexplained"] for o in report) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("stack", "endpoint", "both"), default="both")
    parser.add_argument("--cases", nargs="*", help="case ids or globs, e.g. 1.* 7.1.5")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", help="write the summary here")
    parser.add_argument(
        "--max-frame-bytes",
        type=int,
        help="the stack's frame limit (default: the product's, 16 KiB)",
    )
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
