"""Blocks of lines as one Arrow table of ~1 MB pieces, without copying the bytes.

Why by hand: DuckDB parses JSON far faster than Python can, but only when it gets many rows
to spread over its threads. Splitting a block into lines in Python costs more than all the
SQL that follows (2M Python strings), so we hand DuckDB ~1 MB pieces of whole lines as
zero-copy views of the block and let `string_split` make the lines.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from .reader import Block

PIECE_BYTES = 1 << 20
PIECES_PER_BATCH = 2


@dataclass(frozen=True)
class Pieces:
    """Where a block's ~1 MB pieces of whole lines end, and how many lines each holds."""

    ends: array  # array('q'): byte offset just after each piece, preceded by 0
    counts: list[int]


def cut_pieces(data: bytes | bytearray) -> Pieces:
    """Cut `data` (whole lines; the last may lack its newline) into pieces of about
    PIECE_BYTES. Done once, where the block is read: the newline count per piece is also the
    block's line count, so the bytes are scanned for newlines once, not twice."""
    ends = array("q", [0])
    counts: list[int] = []
    pos, size = 0, len(data)
    while pos < size:
        end = data.rfind(b"\n", pos, pos + PIECE_BYTES)
        if end < 0:
            end = data.find(b"\n", pos + PIECE_BYTES)
        end = size if end < 0 else end + 1
        n = data.count(b"\n", pos, end)
        if end == size and not data.endswith(b"\n"):
            n += 1  # the final line without newline
        counts.append(n)
        ends.append(end)
        pos = end
    return Pieces(ends, counts)


def pieces_table(blocks: list[Block], file_ids: list[int]) -> pa.Table:
    """Columns: file_id, base (line number of the piece's first line), n (lines), chunk (text).

    The chunks are typed as text, not bytes: the reader has checked every block for invalid
    UTF-8 and NUL bytes and blanked such lines (reader.sanitize), so DuckDB can take them as
    VARCHAR as they are. As BLOBs they had to be copied and checked again (`decode`): ~5% of
    the parse's CPU (measured on a 76 MB batch, medians of 9 runs)."""
    chunks: list[pa.Array] = []
    ids: list[int] = []
    bases: list[int] = []
    counts: list[int] = []
    for block, file_id in zip(blocks, file_ids):
        if not block.data:
            continue
        line = block.first_line
        for n in block.pieces.counts:
            ids.append(file_id)
            bases.append(line)
            counts.append(n)
            line += n
        ends = block.pieces.ends
        chunks.append(
            pa.Array.from_buffers(
                pa.large_string(), len(ends) - 1, [None, pa.py_buffer(ends), pa.py_buffer(block.data)]
            )
        )
    chunk_col = pa.chunked_array(chunks, type=pa.large_string())
    table = pa.table(
        {
            "file_id": pa.array(ids, pa.int32()),
            "base": pa.array(bases, pa.int64()),
            "n": pa.array(counts, pa.int64()),
            "chunk": chunk_col,
        }
    )
    # Small record batches: DuckDB scans Arrow batches in parallel, one thread per batch.
    return pa.Table.from_batches(table.to_batches(max_chunksize=PIECES_PER_BATCH), schema=table.schema)
