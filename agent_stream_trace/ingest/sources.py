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
        if not path.exists():
            raise InputPathError(f"no such file or directory: {raw}", hint="check the path, or pass - to read standard input")
        if path.is_dir():
            try:
                found = sorted(p for p in path.rglob("*") if p.is_file() and is_recording(p))
            except OSError as exc:
                raise InputPathError(f"cannot read directory {raw}: {exc.strerror or exc}") from None
            for p in found:
                add(Source(str(p.resolve()), p.resolve()))
            continue
        if not os.access(path, os.R_OK):
            raise InputPathError(f"permission denied: {raw}")
        add(Source(str(path.resolve()), path.resolve()))
    return sources
