"""Dashboards served by FastAPI (thin layers over agent_stream_trace.query)."""
