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
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield what `items` yields, in order, produced by a background thread up to `depth` items
    ahead. An exception raised by `items` is raised here, after the items before it."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failed(exc))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's cleanup (open files) runs now, in this thread
        put(_DONE)

    thread = threading.Thread(target=produce, name="agent-stream-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
