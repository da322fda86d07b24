"""Reading recordings as blocks of whole lines, from where the last run stopped.

Memory stays flat: a file is read in blocks of a few MB, and each block is handed to DuckDB
whole (see pieces.py). Lines are split on b"\\n" only, so U+2028/U+2029 inside JSON strings
never split a line. Problems the SQL side cannot see (invalid UTF-8, NUL bytes, corrupt
gzip) are turned into rejects here, and the offending line is blanked so that line numbers
stay true.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from .sources import Source

BLOCK_BYTES = 32 << 20
RAW_PREVIEW = 200  # characters of a rejected line kept in rejects.raw
HEAD_BYTES = 1024  # bytes hashed to recognise a file that was replaced by another
BOM = b"\xef\xbb\xbf"


@dataclass
class Reject:
    line_no: int
    reason: str
    raw: str


@dataclass
class Block:
    """Whole lines of one source, ready for the SQL classifier."""

    source: Source
    first_line: int  # line number of the first line in `data` (1-based)
    data: bytes  # lines, each ending in b"\n" except a final unterminated one
    line_count: int
    end_offset: int  # byte offset just after `data` (decompressed offset for .gz)
    unterminated_line: int | None = None  # line number of a final line without newline
    rejects: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class Cursor:
    """Where reading of a file resumes."""

    byte_offset: int = 0
    lines: int = 0


def preview(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    return text[:RAW_PREVIEW]


def head_hash(path_or_data: bytes) -> str:
    return hashlib.sha1(path_or_data[:HEAD_BYTES]).hexdigest()


def sanitize(data: bytes, first_line: int) -> tuple[bytes, list[Reject]]:
    """Blank out lines DuckDB cannot hold as text (invalid UTF-8, NUL), with a reject each.

    The fast path is one C-level validation of the whole block; only a block that fails it
    is walked line by line.
    """
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
            return data, []
        except UnicodeDecodeError:
            pass
    rejects: list[Reject] = []
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        reason = None
        if b"\x00" in line:
            reason = "binary data: line contains NUL bytes"
        else:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"invalid UTF-8 at byte {exc.start}"
        if reason:
            rejects.append(Reject(first_line + i, reason, preview(line)))
            lines[i] = b""
    return b"\n".join(lines), rejects


def _open(source: Source) -> BinaryIO:
    if source.path is None:
        return sys.stdin.buffer
    if source.gzipped:
        return gzip.open(source.path, "rb")  # type: ignore[return-value]
    return open(source.path, "rb")


def read_blocks(
    source: Source, cursor: Cursor, *, final: bool, block_bytes: int = BLOCK_BYTES
) -> Iterator[Block]:
    """Yield blocks of whole lines after `cursor`.

    `final` says the writer is done with the file (idle past the open window, or stdin): a
    last line without its newline is then read as a line; otherwise it is left for the next
    run, because a writer may be in the middle of it.
    """
    offset, line_no = cursor.byte_offset, cursor.lines + 1
    f = _open(source)
    try:
        if offset:
            if source.gzipped:
                _skip(f, offset)
            else:
                f.seek(offset)
        carry = b""
        corrupt: str | None = None
        while True:
            try:
                chunk = f.read(block_bytes)
            except EOFError as exc:
                if not final:  # a .gz still being written: read the rest next run
                    return
                chunk, corrupt = b"", _gzip_problem(exc)
            except (OSError, zlib.error, gzip.BadGzipFile) as exc:
                chunk, corrupt = b"", _gzip_problem(exc)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:  # one line longer than a block: keep reading
                carry = data
                continue
            whole, carry = data[: cut + 1], data[cut + 1 :]
            if offset == 0 and whole.startswith(BOM):
                whole = whole[len(BOM):]
                offset += len(BOM)
            block = _block(source, whole, line_no, offset)
            offset, line_no = block.end_offset, line_no + block.line_count
            yield block
        if corrupt is not None:
            tail_line = line_no + (carry.count(b"\n") if carry else 0)
            yield Block(source, line_no, b"", 0, offset, rejects=[Reject(tail_line, corrupt, preview(carry[-RAW_PREVIEW:]))])
            return
        if carry and final:
            if offset == 0 and carry.startswith(BOM):
                carry, offset = carry[len(BOM):], offset + len(BOM)
            block = _block(source, carry, line_no, offset, unterminated=True)
            yield block
    finally:
        if source.path is not None:
            f.close()


def _block(source: Source, whole: bytes, line_no: int, offset: int, unterminated: bool = False) -> Block:
    clean, rejects = sanitize(whole, line_no)
    count = whole.count(b"\n") + (1 if unterminated else 0)
    return Block(
        source=source,
        first_line=line_no,
        data=clean,
        line_count=count,
        end_offset=offset + len(whole),
        unterminated_line=line_no + count - 1 if unterminated else None,
        rejects=rejects,
    )


def _skip(f: BinaryIO, n: int) -> None:
    while n > 0:
        got = f.read(min(n, BLOCK_BYTES))
        if not got:
            break
        n -= len(got)


def _gzip_problem(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "corrupt gzip: compressed stream ends early (truncated file)"
    return f"corrupt gzip: {exc}"
