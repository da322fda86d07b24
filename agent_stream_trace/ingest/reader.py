"""Reading recordings as blocks of whole lines, from where the last run stopped.

Memory stays flat: a file is read in blocks of a few MB, and each block is handed to DuckDB
whole (see pieces.py). Lines are split on b"\\n" only, so U+2028/U+2029 inside JSON strings
never split a line. Problems the SQL side cannot see (invalid UTF-8, NUL bytes, corrupt
gzip) are turned into rejects here, and the offending line is blanked so that line numbers
stay true.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import pyarrow as pa

from .pieces import Pieces, cut_pieces
from .sources import Source

BLOCK_BYTES = 32 << 20
RAW_PREVIEW = 200  # characters of a rejected line kept in rejects.raw
HEAD_BYTES = 1024
GZIP_STEP = 256 << 10  # decompress in small steps: a corrupt member loses little  # bytes hashed to recognise a file that was replaced by another
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
    data: bytes | bytearray  # lines, each ending in b"\n" except a final unterminated one
    line_count: int
    end_offset: int  # byte offset just after `data` (decompressed offset for .gz)
    unterminated_line: int | None = None  # line number of a final line without newline
    start_offset: int = 0  # byte offset of `data`'s first byte (decompressed offset for .gz)
    rejects: list[Reject] = field(default_factory=list)
    pieces: Pieces = field(default_factory=lambda: cut_pieces(b""))  # of `data`, see pieces.py


@dataclass
class ReadOutcome:
    """Filled in by read_blocks: did reading get to the end of what the file holds?

    False when it stopped short on purpose (a last line without its newline, a .gz member cut
    short, while the writer may still be at it): the file must be read again even if unchanged.
    """

    reached_end: bool = False
    # Why the file could not be opened or read, when it could not (it vanished or became
    # unreadable after it was listed): nothing of it was lost, the next run reads it again.
    unread: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Where reading of a file resumes."""

    byte_offset: int = 0
    lines: int = 0


def preview(raw: bytes | bytearray | str) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
    return text[:RAW_PREVIEW]


def head_hash(path_or_data: bytes) -> str:
    return hashlib.sha1(path_or_data[:HEAD_BYTES]).hexdigest()


def _valid_utf8(data: bytes | bytearray) -> bool:
    """Is `data` valid UTF-8? Arrow validates a string array in place (SIMD) and allocates
    nothing; bytes.decode builds a str of the whole block to throw away: measured on a 42 MB
    block, 3 ms against 112 ms (over half of reading a corpus). A view plus validate, not a
    cast: a cast would import pyarrow.compute (60 ms) into every small cron run."""
    offsets = pa.py_buffer(array("q", (0, len(data))))
    blob = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        blob.view(pa.large_string()).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def sanitize(data: bytes | bytearray, first_line: int) -> tuple[bytes | bytearray, list[Reject]]:
    """Blank out lines DuckDB cannot hold as text (invalid UTF-8, NUL), with a reject each.

    The fast path is one validation of the whole block; only a block that fails it is walked
    line by line.
    """
    if b"\x00" not in data and _valid_utf8(data):
        return data, []
    rejects: list[Reject] = []
    lines: list[bytes] = bytes(data).split(b"\n")  # rare: a copy is fine
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


GZIP_MAGIC = b"\x1f\x8b"


def _open(source: Source) -> BinaryIO:
    if source.path is None:
        # A .gz piped in as it is (`agent-stream-ingest - < old.jsonl.gz`) is decompressed: no
        # recording line starts with these bytes, and read as text it was all rejects.
        # Read, not peeked: a pipe may hand over one byte first.
        stdin = _Prefixed(sys.stdin.buffer.read(len(GZIP_MAGIC)), sys.stdin.buffer)
        return _GzipStream(stdin) if stdin.head == GZIP_MAGIC else stdin  # type: ignore[return-value]
    if source.gzipped:
        return _GzipStream(open(source.path, "rb"))  # type: ignore[return-value]
    return open(source.path, "rb")


class _Prefixed:
    """A stream's first bytes, already read, then the rest of it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self._pending, self._rest = head, head, rest

    def read(self, n: int) -> bytes:
        if not self._pending:
            return self._rest.read(n)
        out, self._pending = self._pending[:n], self._pending[n:]
        return out if len(out) == n else out + self._rest.read(n - len(out))

    def readinto(self, buf: memoryview) -> int:
        if not self._pending:
            return self._rest.readinto(buf)  # type: ignore[attr-defined]
        out = self.read(len(buf))
        buf[: len(out)] = out
        return len(out)


class _GzipStream:
    """Decompress .gz (several members allowed) in small input steps.

    Why not gzip.open: it loses everything decompressed within a read() call that hits
    damage, and it has no notion of "the compressed file simply ends here" versus "corrupt".
    Here a corrupt stream raises zlib.error after yielding everything before the step (64 KB of
    compressed input) that holds the damage, and a stream that stops mid-member raises
    EOFError (a writer may still be appending).
    """

    STEP = 64 << 10

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._d = zlib.decompressobj(wbits=31)
        self._out = bytearray()
        self._eof = False
        self._in_member = False  # bytes of a member were fed and its end not seen yet
        self._pending: BaseException | None = None  # raised once what came before is read

    def read(self, n: int) -> bytes:
        while len(self._out) < n and not self._eof:
            data = self._raw.read(self.STEP)
            if not data:
                self._eof = True
                if self._in_member:
                    self._fail(EOFError("compressed stream ends early"))
                break
            self._feed(data)
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    def readinto(self, buf: memoryview) -> int:
        out = self.read(len(buf))
        buf[: len(out)] = out
        return len(out)

    def _feed(self, data: bytes) -> None:
        while data:
            self._in_member = True
            try:
                self._out += self._d.decompress(data)
            except zlib.error as exc:
                # The output of the failing step is lost with it, and kept that way: fed again in
                # small steps it came back, but what deflate decodes between the damage and the
                # error is garbage, and after a checksum error any of it may be (a review found
                # changed session ids stored as good rows). What came before the step is kept.
                self._fail(exc)
                return
            if self._d.eof:
                data = self._d.unused_data
                self._d = zlib.decompressobj(wbits=31)
                self._in_member = False
                if data and data.strip(b"\x00") == b"":
                    data = b""  # zero padding after the last member
            else:
                data = b""

    def _fail(self, exc: BaseException) -> None:
        # Hand out what was decompressed before the damage first, then the error. Without its
        # traceback: that holds the frames of the read, among them the caller's view of its
        # buffer, which could then not be resized (BufferError on every corrupt .gz file).
        self._pending = exc.with_traceback(None)
        self._eof = True

    def raise_pending(self) -> None:
        exc = self._pending
        if exc is not None:
            self._pending = None
            raise exc

    def close(self) -> None:
        self._raw.close()


def read_blocks(
    source: Source, cursor: Cursor, *, final: bool, block_bytes: int = BLOCK_BYTES,
    outcome: ReadOutcome | None = None,
) -> Iterator[Block]:
    """Yield blocks of whole lines after `cursor`.

    `final` says the writer is done with the file (idle past the open window, or stdin): a
    last line without its newline is then read as a line; otherwise it is left for the next
    run, because a writer may be in the middle of it.
    """
    outcome = outcome if outcome is not None else ReadOutcome()
    outcome.reached_end = False
    offset, line_no = cursor.byte_offset, cursor.lines + 1
    f = _open(source)
    try:
        if offset:
            if source.gzipped:
                _skip(f, offset)
            else:
                f.seek(offset)
        carry = bytearray()
        corrupt: str | None = None
        while corrupt is None:
            data, got, problem = _read(f, carry, block_bytes, step=GZIP_STEP if isinstance(f, _GzipStream) else block_bytes)
            if problem is not None:
                if isinstance(problem, EOFError) and not final:
                    if got:  # keep what decompressed; the rest is still being written
                        cut = data.rfind(b"\n")
                        if cut >= 0:
                            del data[cut + 1 :]
                            yield make_block(source, data, line_no, offset)
                    return
                corrupt = _gzip_problem(problem)
            if not got:
                break
            cut = data.rfind(b"\n")
            if cut < 0:  # one line longer than a block: keep reading
                carry = data
                continue
            # The block is the buffer itself, cut after its last newline; only the partial
            # line after it is copied out (slicing the whole block copied 32 MB each time).
            carry = data[cut + 1 :]
            del data[cut + 1 :]
            if offset == 0 and data.startswith(BOM):
                del data[: len(BOM)]
                offset += len(BOM)
            block = make_block(source, data, line_no, offset)
            offset, line_no = block.end_offset, line_no + block.line_count
            yield block
        if corrupt is not None:
            tail_line = line_no + (carry.count(b"\n") if carry else 0)
            yield Block(source, line_no, b"", 0, offset, rejects=[Reject(tail_line, corrupt, preview(carry[carry.rfind(b"\n") + 1 :]))])
            outcome.reached_end = True
            return
        if carry and not final:
            return  # a line being written: next run
        if carry:
            if offset == 0 and carry.startswith(BOM):
                carry, offset = carry[len(BOM):], offset + len(BOM)
            yield make_block(source, carry, line_no, offset, unterminated=True)
        outcome.reached_end = True
    finally:
        if source.path is not None:
            f.close()


def make_block(source: Source, whole: bytes | bytearray, line_no: int, offset: int, unterminated: bool = False) -> Block:
    clean, rejects = sanitize(whole, line_no)  # newlines kept: same line count and pieces
    pieces = cut_pieces(clean)
    # an unterminated block is one line (the part after the last newline), even when sanitize
    # blanked it to nothing (invalid UTF-8, a NUL) and no piece counts it
    count = 1 if unterminated else sum(pieces.counts)
    return Block(
        source=source,
        first_line=line_no,
        data=clean,
        line_count=count,
        end_offset=offset + len(whole),
        unterminated_line=line_no + count - 1 if unterminated else None,
        start_offset=offset,
        rejects=rejects,
        pieces=pieces,
    )


def _read(f: BinaryIO, carry: bytearray, size: int, step: int) -> tuple[bytearray, int, BaseException | None]:
    """`carry` followed by up to `size` bytes read in steps (so that a corrupt gzip keeps what
    came before the damage), in one new buffer, and how many bytes were read.

    Read into the buffer in place: joining parts and prepending the carry each copied the
    block again (two full copies of every block, a quarter of the reading thread's time).
    """
    buf = bytearray(len(carry) + _room(f, size))
    buf[: len(carry)] = carry
    pos = len(carry)
    problem: BaseException | None = None
    with memoryview(buf) as view:
        while pos < len(buf):
            try:
                # every stream _open gives reads into a buffer (files, stdin, _GzipStream)
                n = f.readinto(view[pos : min(pos + step, len(buf))])  # type: ignore[attr-defined]
                if not n and isinstance(f, _GzipStream):
                    f.raise_pending()
            except (OSError, EOFError, zlib.error) as exc:
                problem = exc.with_traceback(None)  # see _GzipStream._fail: it pins `view`
                break
            if not n:
                break
            pos += n
    del buf[pos:]
    return buf, pos - len(carry), problem


def _room(f: BinaryIO, size: int) -> int:
    """How many bytes to make room for: `size`, or what a regular file holds past its position
    now when that is less (a small append must not allocate, and zero, a whole block)."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):
        return size
    if not stat.S_ISREG(st.st_mode):
        return size
    return max(0, min(size, st.st_size - f.tell()))


def _skip(f: BinaryIO, n: int) -> None:
    while n > 0:
        got = f.read(min(n, BLOCK_BYTES))
        if not got:
            break
        n -= len(got)


def _gzip_problem(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "corrupt gzip: compressed stream ends early (truncated file)"
    if isinstance(exc, zlib.error):
        return f"corrupt gzip: {exc}"
    return f"corrupt gzip: {exc}"
