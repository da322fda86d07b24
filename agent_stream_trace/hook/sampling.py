"""Which sessions a sampling rate keeps: decided up front, from the session id alone.

Deterministic (the same id always gives the same answer at a given rate) and monotonic (a
session kept at rate r is kept at every higher rate), so two processes, or a re-run, agree.
Sessions that end without done are kept whatever this says: the writer holds a sampled-out
session's lines until it ends and writes them if it failed.
"""

from __future__ import annotations

import uuid

from ..errors import UsageError


def check_rate(rate: float) -> float:
    """The rate as a float in [0, 1], or UsageError."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise UsageError(f"sample rate must be a number between 0 and 1, got {rate!r}") from None
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"sample rate must be between 0 and 1, got {value}")
    return value


def sampled_in(session_id: str, rate: float) -> bool:
    """True when a session with this id is recorded at this rate (before failures are added back)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    # The low 62 bits of a uuid4 are random; the two above them are the fixed variant bits.
    low = uuid.UUID(session_id).int & (2**62 - 1)
    return low < rate * 2**62
