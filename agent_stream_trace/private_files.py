"""Files that hold recorded text (recordings, the database): not readable by other users."""

from __future__ import annotations

import os
import stat

RECORDING_MODE = 0o640  # the mode recordings are created with: their owner and its group


def keep_new_files_private() -> None:
    """Create every later file of this process without access for other users (umask | 007).

    For the command-line tools, whose files all hold recorded text: the database and the log
    DuckDB writes beside it (the whole ingest until its last commit), spill files, simulated
    recordings, Parquet exports. Not for the library: a server's umask is its own."""
    os.umask(os.umask(0o077) | 0o007)


def no_access_for_others(file: int | str | os.PathLike[str]) -> None:
    """Take other users' access from `file` (a path, or a descriptor open on it), which the
    umask, an older version or another tool may have left readable by all. Best effort: a file
    someone else owns keeps its mode, and whatever uses it goes on."""
    try:
        mode = stat.S_IMODE(os.stat(file).st_mode)
        if mode & 0o007:
            os.chmod(file, mode & ~0o007)
    except OSError:
        pass
