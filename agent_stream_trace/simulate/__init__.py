"""Seeded, realistic agent-stream recordings (format v1) for demos, tests and benchmarks."""

from __future__ import annotations

from .generator import (
    SimulationOptions,
    SimulationReport,
    iter_sessions,
    resolve_period,
    session_lines,
    simulate,
)
from .session import END_REASON_OF, FAILURE_KINDS, SimulatedSession

__all__ = [
    "END_REASON_OF",
    "FAILURE_KINDS",
    "SimulatedSession",
    "SimulationOptions",
    "SimulationReport",
    "iter_sessions",
    "resolve_period",
    "session_lines",
    "simulate",
]
