"""Metric definitions (SQL views) and the read side: TraceStore, stats, sessions, show."""
