"""Recordings (.jsonl, .jsonl.gz; v0 and v1) into the DuckDB tables."""
