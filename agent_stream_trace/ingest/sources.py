"""Which files to read: paths, directories (recursively) and `-` for standard input."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputPathError

RECORDING_SUFFIXES = (".jsonl", ".jsonl.gz")
STDIN = "-"


@dataclass(frozen=True)
class Source:
    """One input: a recording file, or standard input (path is None)."""

    name: str  # what lands in source_file: the absolute path, or "<stdin>"
    path: Path | None

    @property
    def gzipped(self) -> bool:
        return self.name.endswith(".gz")


def is_recording(path: Path) -> bool:
    return path.name.endswith(RECORDING_SUFFIXES)


def resolve_sources(paths: list[str | os.PathLike[str]]) -> list[Source]:
    """Expand the named paths into sources, in a stable order, each file once.

    A named file is read whatever its name; inside directories only *.jsonl and *.jsonl.gz
    are. A missing or unreadable named path is an error (the CLI exits 2 with one line).
    """
    sources: list[Source] = []
    seen: set[str] = set()

    def add(source: Source) -> None:
        if source.name not in seen:
            seen.add(source.name)
            sources.append(source)

    for raw in paths:
        if str(raw) == STDIN:
            add(Source("<stdin>", None))
            continue
        path = Path(raw)
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as exc:  # a directory above it cannot be entered
            raise InputPathError(f"cannot read {raw}: {exc.strerror or exc}") from None
        if not exists and path.is_symlink():
            raise InputPathError(f"cannot read {raw}: a symbolic link that leads nowhere (to a missing file, or in a loop)")
        if not exists:
            raise InputPathError(f"no such file or directory: {raw}", hint="check the path, or pass - to read standard input")
        if is_dir:
            for p in _recordings_below(path):
                add(Source(str(p.resolve()), p.resolve()))
            continue
        if not os.access(path, os.R_OK):
            raise InputPathError(f"permission denied: {raw}")
        add(Source(str(path.resolve()), path.resolve()))
    return sources


def _recordings_below(top: Path) -> list[Path]:
    """The recordings below `top`, sorted. A directory or recording below it that cannot be read
    is an error, as a named one is: Path.rglob skips what it cannot read without a word, and the
    recordings there would have been left out of every run."""
    def fail(exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):
            return  # removed while being listed: nothing left there to read
        raise InputPathError(f"cannot read directory {exc.filename}: {exc.strerror or exc}",
                             hint="give this user read access, or name the readable paths only")

    found = []
    for folder, _, names in os.walk(top, onerror=fail):  # symlinked directories are not followed, as rglob did
        for name in names:
            p = Path(folder, name)
            if is_recording(p) and p.is_file():
                if not os.access(p, os.R_OK):
                    raise InputPathError(f"permission denied: {p}", hint="give this user read access, or name the readable paths only")
                found.append(p)
    return sorted(found)
