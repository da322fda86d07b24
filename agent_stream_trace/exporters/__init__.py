"""Sessions out of DuckDB: OTLP traces for any backend, Parquet for engines beyond one machine."""
