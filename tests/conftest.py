"""Fixtures every test module may use: a fresh database path, the upstream sample recordings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh DuckDB file (not created yet)."""
    return tmp_path / "trace.duckdb"


@pytest.fixture
def upstream_sequential() -> Path:
    """25 sessions recorded one at a time by the upstream recorder (v0)."""
    return FIXTURES / "upstream" / "sequential.jsonl"


@pytest.fixture
def upstream_concurrent() -> Path:
    """24 concurrent sessions through one upstream recorder (v0): lines interleave."""
    return FIXTURES / "upstream" / "concurrent.jsonl"


@pytest.fixture(autouse=True)
def _umask_restored():
    """Commands run in-process narrow the umask (private_files.keep_new_files_private): each
    test starts from the one the suite started with, so a later test's file modes are its own."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)
