"""Where recording lines go: one file, a directory of per-process files, or a file object.

Only the writer thread calls a sink. Every write is one batch of whole lines in one
`os.write` on a descriptor opened with O_APPEND, so lines never tear inside a process, and
the OS has them as soon as the call returns (no Python buffer to lose on a crash).

`generation` numbers the file being written: it changes whenever later writes land in a
different file (rotation, or a directory sink reopening after an error). The writer uses it
to repeat the header of every still-open session at the top of each new file, so that every
file is self-contained.

Several processes: a `DirectorySink` gives each process its own files (pid in the name), the
safe choice. Several processes appending to one `FileSink` rely on O_APPEND: each batch is a
single write, which local POSIX filesystems apply atomically, but rotation of a shared file
is not coordinated between processes, so use a directory when you rotate.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from ..private_files import RECORDING_MODE, no_access_for_others

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Rotation:
    """Start a new file once the current one holds `max_bytes` or is `max_age_s` old."""

    max_bytes: int | None = None
    max_age_s: float | None = None

    def due(self, size: int, opened_at: float, now: float) -> bool:
        if size <= 0:
            return False  # never rotate an empty file into existence
        if self.max_bytes is not None and size >= self.max_bytes:
            return True
        return self.max_age_s is not None and now - opened_at >= self.max_age_s


class Sink(Protocol):
    generation: int

    def prepare(self) -> int:
        """Make sure a file is open; its generation. Raises on failure."""

    def write(self, data: bytes) -> None:
        """Write whole lines. Raises on failure (the sink then reopens on the next prepare)."""

    def rotate_if_due(self) -> bool:
        """Close the current file if the rotation policy says so; True when it did."""

    def room(self) -> int | None:
        """Bytes the current file may still take before size rotation; None without it."""

    def close(self) -> None: ...

    def describe(self) -> str: ...


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _FdSink:
    """Shared descriptor handling: lazy open, size and age for rotation, close on error."""

    def __init__(self, rotation: Rotation) -> None:
        self.rotation = rotation
        self.generation = 0
        self._fd: int | None = None
        self._size = 0
        self._opened_at = 0.0
        self.current: Path | None = None

    def _open(self, path: Path, flags: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Recordings hold prompts and model output: readable by the owner and its group (an
        # ingest run as another user of the group), not by every user of the machine.
        self._fd = os.open(path, flags, RECORDING_MODE)
        no_access_for_others(self._fd)  # one left readable by all (an older version's)
        self._size = os.fstat(self._fd).st_size
        self._opened_at = time.monotonic()
        self.current = path

    def write(self, data: bytes) -> None:
        assert self._fd is not None, "prepare() first"
        try:
            _write_all(self._fd, data)
        except BaseException:
            self._close_fd()
            raise
        self._size += len(data)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def room(self) -> int | None:
        if self.rotation.max_bytes is None:
            return None
        return self.rotation.max_bytes - (self._size if self._fd is not None else 0)

    def _due(self) -> bool:
        return self._fd is not None and self.rotation.due(self._size, self._opened_at, time.monotonic())

    def close(self) -> None:
        self._close_fd()


class FileSink(_FdSink):
    """Append to one named file (the drop-in for upstream's recorder). Rotation renames the
    full file to `<stem>-<UTC stamp>-<pid>-<n><suffix>` beside it and starts afresh."""

    def __init__(self, path: Path, rotation: Rotation = Rotation()) -> None:
        super().__init__(rotation)
        self.path = path
        self._rotated = 0

    def prepare(self) -> int:
        if self._fd is None:
            self._open(self.path, _OPEN_FLAGS)
        return self.generation

    def rotate_if_due(self) -> bool:
        if not self._due():
            return False
        self._close_fd()
        while True:
            self._rotated += 1
            target = self.path.with_name(
                f"{self.path.stem}-{_stamp()}-{os.getpid()}-{self._rotated}{self.path.suffix or '.jsonl'}"
            )
            if not target.exists():
                break
        os.replace(self.path, target)
        self.generation += 1
        return True

    def describe(self) -> str:
        return str(self.path)


class DirectorySink(_FdSink):
    """Per-process files in a directory: `<prefix>-<UTC stamp>-<pid>-<n>.jsonl`.

    A new file is opened at start, after each rotation and after a write error; none is
    created before there is something to write."""

    def __init__(self, directory: Path, prefix: str = "agent-stream", rotation: Rotation = Rotation()) -> None:
        super().__init__(rotation)
        self.directory = directory
        self.prefix = prefix
        self._files = 0

    def prepare(self) -> int:
        if self._fd is None:
            while True:
                self._files += 1
                name = f"{self.prefix}-{_stamp()}-{os.getpid()}-{self._files:04d}.jsonl"
                try:
                    self._open(self.directory / name, _OPEN_FLAGS | os.O_EXCL)
                    break
                except FileExistsError:
                    continue
            self.generation += 1
        return self.generation

    def rotate_if_due(self) -> bool:
        if not self._due():
            return False
        self._close_fd()
        return True

    def describe(self) -> str:
        return str(self.current or self.directory)


class StreamSink:
    """A file object the caller owns (text or binary); no rotation. Useful for tests and for
    sending lines somewhere other than a file."""

    def __init__(self, stream: IO[Any]) -> None:
        self.stream = stream
        self.generation = 0
        self._text = isinstance(stream, io.TextIOBase)

    def prepare(self) -> int:
        return self.generation

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode("utf-8") if self._text else data)
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()

    def rotate_if_due(self) -> bool:
        return False

    def room(self) -> int | None:
        return None

    def close(self) -> None:
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            try:
                flush()
            except Exception:
                pass

    def describe(self) -> str:
        return getattr(self.stream, "name", None) or type(self.stream).__name__


def make_sink(
    target: str | os.PathLike[str] | IO[Any], *, prefix: str, rotation: Rotation
) -> FileSink | DirectorySink | StreamSink:
    """A directory (existing, or a path ending in a separator) gives per-process files; any
    other path is one file; an object with `write` is used as is."""
    if hasattr(target, "write"):
        return StreamSink(target)  # type: ignore[arg-type]
    text = os.fspath(target)  # type: ignore[arg-type]
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)):
        return DirectorySink(path, prefix, rotation)
    return FileSink(path, rotation)
