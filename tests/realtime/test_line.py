"""The waiting line, pure: admission by ticket, positions, updates, stalls, busy."""

from __future__ import annotations

from livecommerce.realtime.line import MAX_RETRY_MS, MIN_RETRY_MS, DropLine, Waiter


def waiters(line: DropLine, *tickets: int) -> list[Waiter]:
    out = [Waiter(t, 0.0) for t in tickets]
    for w in out:
        line.wait(w)
    return out


def test_a_ticket_goes_once_the_line_reaches_it() -> None:
    line = DropLine(window=2, size=10)
    assert line.moved(0, 1.0) == []
    assert line.may_go(1) and line.may_go(2) and not line.may_go(3)
    w3, w4, w5 = waiters(line, 3, 4, 5)
    assert [line.position(w.ticket) for w in (w3, w4, w5)] == [1, 2, 3]
    assert line.moved(1, 2.0) == [w3]
    assert line.moved(1, 2.5) == []  # no progress, nobody goes
    assert line.moved(3, 3.0) == [w4, w5]
    assert line.moved(2, 4.0) == [] and line.done == 3  # an older progress message is ignored


def test_waiters_are_kept_in_ticket_order() -> None:
    line = DropLine(window=1, size=10)
    line.moved(0, 1.0)
    w9, w4 = waiters(line, 9, 4)
    assert line.waiting == [w4, w9]
    assert line.moved(3, 2.0) == [w4]


def test_positions_are_told_again_only_when_they_moved_materially() -> None:
    line = DropLine(window=1, size=1000)
    line.moved(0, 1.0)
    (w,) = waiters(line, 101)
    assert w.told == 100
    line.moved(15, 2.0)  # 100 -> 85: not a fifth yet
    assert line.updates() == []
    line.moved(20, 3.0)  # 80
    assert line.updates() == [(w, 80)] and line.updates() == []
    line.moved(99, 4.0)  # 1
    assert line.updates() == [(w, 1)]


def test_position_updates_are_bounded_per_tick_front_first() -> None:
    line = DropLine(window=1, size=10_000)
    line.moved(0, 1.0)
    everyone = waiters(line, *range(2, 5002))
    assert len(line.moved(4000, 2.0)) == 4000  # tickets up to 4001 go; 1000 still wait
    first = line.updates(budget=100)
    assert [w for w, _ in first] == everyone[4000:4100]
    assert len(line.updates(budget=10_000)) == 900


def test_leave_and_full() -> None:
    line = DropLine(window=1, size=2)
    line.moved(0, 1.0)
    a, b = waiters(line, 2, 3)
    assert line.full
    assert line.leave(a) and not line.leave(a)
    assert not line.full and line.waiting == [b]
    assert line.take_all() == [b] and line.waiting == []


def test_a_stalled_line_skips_the_missing_tickets() -> None:
    line = DropLine(window=2, size=10)
    line.moved(0, 1.0)
    w40, w41, w42 = waiters(line, 40, 41, 42)  # 1..39 were taken by a process that died
    assert line.stalled(2.0, stall_s=5.0) == []
    assert line.stalled(6.0, stall_s=5.0) == [w40, w41]  # a whole window goes again
    assert line.done == 39 and line.waiting == [w42]


def test_retry_after_follows_the_lines_pace() -> None:
    line = DropLine(window=1, size=10)
    assert MIN_RETRY_MS <= line.retry_after_ms() <= MAX_RETRY_MS
    line.moved(0, 1.0)
    line.moved(100, 2.0)  # 100 answers a second
    waiters(line, *range(200, 400))
    assert line.retry_after_ms() == 2000


def test_own_answers_move_the_line_at_once_and_are_never_counted_twice() -> None:
    line = DropLine(window=1, size=10)
    line.moved(0, 1.0)  # tickets 1 (here) and 2 (elsewhere) went to the store
    w3, w4, w5 = waiters(line, 3, 4, 5)
    assert line.answered_here(2.0) == [] and line.done == 1  # ticket 1, before any report
    line.counting(1)  # ... sent to the store to be counted
    assert line.moved(1, 2.1) == [] and line.done == 1  # a report that may include it: no more
    assert line.moved(2, 2.2) == [w3]  # ticket 2 answered elsewhere
    assert line.answered_here(2.3) == [w4] and line.done == 3  # ticket 3, here: at once
    line.counting(1)
    assert line.moved(3, 2.4) == [] and line.done == 3  # its report changes nothing
    assert line.waiting == [w5]


def test_a_skip_holds_and_a_line_that_moves_does_not_stall_again() -> None:
    line = DropLine(window=2, size=10)
    line.moved(0, 1.0)
    w40, w41, w42, w43 = waiters(line, 40, 41, 42, 43)  # 1..39 held by a process that died
    assert line.stalled(6.0, stall_s=5.0) == [w40, w41] and line.done == 39
    # 40 and 41 are answered: the report (2) moves the line on from the skip, not back to it.
    assert line.moved(2, 7.0) == [w42, w43] and line.done == 41
    (w45,) = waiters(line, 45)
    assert line.moved(3, 11.5) == []  # slow, but moving: 45 waits for its turn ...
    assert line.stalled(12.0, stall_s=5.0) == [] and line.done == 42  # ... and no second skip
    assert line.stalled(16.5, stall_s=5.0) == [w45]  # nothing moved for 5 s: a skip again
