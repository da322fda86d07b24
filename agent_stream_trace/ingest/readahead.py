"""Run an iterator in a background thread, a few items ahead of its consumer.

Reading recordings (file reads, UTF-8 checks, line counts) is Python work that took ~0.7 s of
a 2.5M-line ingest while DuckDB waited for it; DuckDB releases the GIL while it executes, so the
next blocks can be read while the current batch is classified and stored. Why not
concurrent.futures: this is one producer feeding one consumer in order, with back-pressure
(at most `depth` items waiting), which a bounded queue says directly.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(
    items: Iterator[T], depth: int = 2, *, max_bytes: int | None = None, size: Callable[[T], int] = lambda _: 0,
) -> Iterator[T]:
    """Yield what `items` yields, in order, produced by a background thread up to `depth` items
    ahead, and, given `max_bytes`, no further ahead once the waiting items' `size` passes it. An
    exception raised by `items` is raised here, after the items before it.

    Why bytes too: the ingester consumes a batch of blocks at a time, several blocks and
    end-of-file markers, and a bound on items alone either starved it after every batch (the
    next blocks were read only once it asked: 0.35 s of waiting on 2.5M lines) or let the
    queue hold many large blocks."""
    q: queue.Queue[tuple[object, int]] = queue.Queue(maxsize=depth)  # (item, its size)
    stop = threading.Event()
    room = threading.Condition()
    waiting = [0]  # bytes queued and not yet taken

    def put(item: object, nbytes: int) -> bool:
        with room:
            while max_bytes is not None and waiting[0] >= max_bytes and not stop.is_set():
                room.wait(timeout=0.1)
            waiting[0] += nbytes
        while not stop.is_set():
            try:
                q.put((item, nbytes), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item, size(item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failed(exc), 0)
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's cleanup (open files) runs now, in this thread
        put(_DONE, 0)

    thread = threading.Thread(target=produce, name="agent-stream-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, nbytes = q.get()
            if nbytes:
                with room:
                    waiting[0] -= nbytes
                    room.notify()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        with room:
            room.notify()
        thread.join()
