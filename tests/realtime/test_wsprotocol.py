"""The lighter stand-ins realtime.wsprotocol gives uvicorn's protocol: the receive Inbox and the
Writable flag behave as the asyncio.Queue and asyncio.Event they replace."""

from __future__ import annotations

import asyncio

from livecommerce.realtime.wsprotocol import Inbox, Writable


async def test_inbox_hands_items_out_in_order_and_waits_when_empty() -> None:
    inbox = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty() and inbox.qsize() == 2
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    getter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    inbox.put_nowait(3)
    assert await getter == 3 and inbox.empty()


async def test_inbox_getter_cancelled_after_its_wakeup_passes_the_item_on() -> None:
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("x")  # wakes the first getter ...
    first.cancel()  # ... which is cancelled before it runs
    assert await second == "x"
    assert first.cancelled() and inbox.empty()


async def test_inbox_cancelled_waiting_getter_is_forgotten() -> None:
    inbox = Inbox()
    getter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    getter.cancel()
    await asyncio.gather(getter, return_exceptions=True)
    inbox.put_nowait(1)
    assert await inbox.get() == 1


async def test_writable_waits_until_set() -> None:
    flag = Writable()
    assert not flag.is_set()
    flag.set()
    assert flag.is_set() and await flag.wait() is True
    flag.clear()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True]


async def test_writable_cancelled_waiter_is_forgotten() -> None:
    flag = Writable()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert not flag._waiters
    flag.set()
    assert flag.is_set()
