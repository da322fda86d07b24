"""read_ahead: a background producer that never reorders, loses or swallows anything."""

from __future__ import annotations

import threading

import pytest

from agent_stream_trace.ingest.readahead import read_ahead


def test_items_arrive_in_order_and_all_of_them():
    assert list(read_ahead(iter(range(1000)), depth=2)) == list(range(1000))


def test_an_error_of_the_producer_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("disk on fire")

    got = []
    with pytest.raises(ValueError, match="disk on fire"):
        for item in read_ahead(items()):
            got.append(item)  # noqa: PERF402 - the items before the error, one by one
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []
    finished = threading.Event()

    def items():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            finished.set()

    for item in read_ahead(items(), depth=2):
        if item == 5:
            break
    assert finished.is_set()  # the generator was closed when read_ahead returned
    assert len(produced) <= 5 + 1 + 2 + 1  # never more than `depth` items (plus one in hand) ahead


def test_a_byte_budget_bounds_how_far_ahead_the_producer_reads():
    produced = []
    overran = threading.Event()

    def items():
        for i in range(100):
            produced.append(i)
            if i >= 10:
                overran.set()  # only a producer that ignores the budget gets this far unasked
            yield b"x" * 10

    ahead = read_ahead(items(), depth=1000, max_bytes=35, size=len)
    assert next(ahead) == b"x" * 10
    # With the budget, the producer stops once 35 bytes wait: one item taken, four queued and
    # one in hand at most. Without it, it runs on to `depth` and sets `overran` at once.
    assert not overran.wait(timeout=0.5)
    assert len(produced) <= 1 + 4 + 1
    assert list(ahead) == [b"x" * 10] * 99  # and nothing is lost once it is drained
