"""One simulated session: its wire events, how it ends, and its recording lines (format v1).

A session is planned as a timeline of wire events (times in integer milliseconds since the
session started), then cut short when it is chosen to fail, then serialised. Token events are
the bulk of every recording, so their lines are built by string formatting from pre-escaped
text instead of json.dumps; a test checks that they are byte-identical to what
`recording.dumps(recording.event_record(...))` would write.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal

from ..recording import END_EVENT, dumps, event_record, header_record
from .catalog import (
    PARAGRAPH_STARTS,
    PROGRESS_STEPS,
    THOUGHTS,
    TOKENS,
    TOKENS_JSON,
    TOOL_TIMEOUT_MS,
    TOOLS,
    Agent,
    Model,
    MODELS,
)

FailureKind = Literal["exception", "client_disconnect", "returned_without_done", "idle_cut", "killed"]
FAILURE_KINDS: Final[tuple[str, ...]] = (
    "exception", "client_disconnect", "returned_without_done", "idle_cut", "killed",
)
# How a failure shows in the recording's `_end` record ("no_end_record": there is none).
END_REASON_OF: Final[dict[str, str]] = {
    "exception": "exception",
    "client_disconnect": "cancelled",
    "returned_without_done": "returned_without_done",
    "idle_cut": "cancelled",
    "killed": "no_end_record",
}

FLUSH_LAG_MS: Final = 8  # < 1000 / 120 tps, so batch times never run backwards
MODEL_WAIT_CAP_MS: Final = 10_000
STALL_MIN_MS: Final = 15_000
STALL_MAX_MS: Final = 40_000
# Proxies and load balancers cut idle connections after 60 s by default; some are set higher.
IDLE_CUT_MS: Final = (60_000, 75_000, 90_000)
# Share of mid-stream failures that strike while a tool is running, leaving it orphaned.
ORPHAN_SHARE: Final = 0.3

_EXCEPTIONS: Final = (
    ("anthropic.APIStatusError", "Error code: 529 - overloaded_error"),
    ("httpx.ReadTimeout", "timed out while reading the model stream"),
    ("KeyError", "'tool_use_id'"),
    ("asyncpg.exceptions.TooManyConnectionsError", "sorry, too many clients already"),
    ("MemoryError", ""),
)
# The upstream TokenBatcher flushes every 50 ms; a flush lands a few ms after the interval.
BATCH_MS: Final = 50.0
_N_TOKENS: Final = len(TOKENS)
_MAX_BATCH: Final = int(max(m.max_tps for m in MODELS) * BATCH_MS / 1000) + 1
# _BATCH_TEXT[n][pos]: n tokens from position pos (wrapping), already JSON-escaped and joined.
_BATCH_TEXT: Final = [
    ["".join((TOKENS_JSON + TOKENS_JSON)[pos:pos + n]) for pos in range(_N_TOKENS)] for n in range(_MAX_BATCH + 1)
]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)

# A planned wire event: (t in ms, event name, data). For "token", data is the text already
# escaped for a JSON string.
_Event = tuple[int, str, Any]


@dataclass(frozen=True)
class SessionSpec:
    """What is decided about a session before it runs."""

    session_id: str
    start_us: int  # wall-clock start, microseconds since the Unix epoch
    model: Model
    agent: Agent
    tps: float  # this session's generation speed, tokens per second
    attrs: dict[str, Any]
    failure: FailureKind | None
    stall: bool


@dataclass(frozen=True)
class SimulatedSession:
    """A generated session: its recording lines and what the generator put into it."""

    session_id: str
    model: str
    agent: str
    tps: float
    failure: FailureKind | None
    end_reason: str  # one of recording.END_REASONS, or NO_END_RECORD for a killed session
    stalled: bool
    orphaned_tools: int
    tool_errors: int
    output_tokens: int
    lines: list[str]  # header first, newline-terminated
    times_ms: list[int]  # wall clock of each line, ms since the Unix epoch (for interleaving)


class _Plan:
    """Builds one session's event timeline; a class only to share the cursor state."""

    def __init__(self, rng: random.Random, spec: SessionSpec) -> None:
        self.rng = rng
        self.spec = spec
        self.events: list[_Event] = []
        self.text_pos = rng.choice(PARAGRAPH_STARTS)
        self.output_tokens = 0
        self.tool_count = 0
        self.turns = 1

    def tokens(self, t: int, count: int) -> int:
        """Append `count` tokens as ~50 ms batches starting at t; return the time after them.

        Batch times follow the cumulative token count at exactly the session's speed plus a
        non-accumulating flush lag, so tokens/s measured over any run is the configured speed.
        """
        rng = self.rng
        random_ = rng.random
        events = self.events
        ms_per_token = 1000.0 / self.spec.tps
        per_batch = self.spec.tps * BATCH_MS / 1000.0
        pos = self.text_pos
        batch_text = _BATCH_TEXT
        done = 0
        last = t
        while done < count:
            n = int(per_batch + random_())
            if n > count - done:
                n = count - done
            done += n
            # A batch is flushed once its last token has arrived.
            last = t + int(done * ms_per_token + FLUSH_LAG_MS * random_())
            events.append((last, "token", batch_text[n][pos]))
            pos = (pos + n) % _N_TOKENS
        self.text_pos = pos
        self.output_tokens += count
        return last + int(ms_per_token)

    def thinking(self, t: int) -> int:
        self.events.append((t, "thinking", {"text": self.rng.choice(THOUGHTS)}))
        return t + self.rng.randint(200, 1500)

    def model_wait(self, t: int) -> int:
        """The model's time to first chunk, before each turn. Capped (a provider timeout) so
        that silences of 15 s or more are only the ones the generator injects on purpose."""
        wait = self.rng.lognormvariate(0.0, 0.5) * self.spec.model.ttft_median_ms
        return t + int(min(wait, MODEL_WAIT_CAP_MS))

    def progress(self, t: int, step: str, pct: int, sub: dict[str, Any] | None = None) -> None:
        data: dict[str, Any] = {"step": step, "percentage": pct, "message": f"{step.capitalize()}..."}
        if sub is not None:
            data["sub_progress"] = sub
        self.events.append((t, "progress", data))

    def tool_round(self, t: int, round_no: int, rounds: int) -> int:
        rng = self.rng
        agent = self.spec.agent
        k = 1 if rng.random() < 0.7 else rng.randint(2, 3)  # parallel calls in one round
        started: list[tuple[int, str, Any]] = []
        for _ in range(k):
            tool = TOOLS[rng.choice(agent.tools)]
            tool_use_id = f"toolu_{rng.getrandbits(96):024x}"
            self.events.append((t, "tool_use", {
                "tool_name": tool.name, "tool_use_id": tool_use_id,
                "input_summary": rng.choice(tool.inputs), "status": "running",
            }))
            started.append((t, tool_use_id, tool))
            t += rng.randint(1, 4)
        results: list[tuple[int, dict[str, Any]]] = []
        for t0, tool_use_id, tool in started:
            latency = rng.lognormvariate(tool.mu, tool.sigma)
            if latency > TOOL_TIMEOUT_MS:
                duration, status, summary = TOOL_TIMEOUT_MS, "error", f"timed out after {TOOL_TIMEOUT_MS // 1000} s"
            elif rng.random() < tool.error_rate:
                duration, status, summary = int(latency), "error", rng.choice(tool.errors)
            else:
                duration, status, summary = int(latency), "done", rng.choice(tool.outputs)
            # The recorder sees the result a moment after the tool measured its own duration
            # (and never before the last call of the round was started).
            results.append((max(t0 + duration + rng.randint(0, 3), t), {
                "tool_name": tool.name, "tool_use_id": tool_use_id, "output_summary": summary,
                "duration_ms": duration, "status": status,
            }))
        results.sort(key=lambda r: r[0])
        for i, (t_done, data) in enumerate(results):
            self.events.append((t_done, "tool_result", data))
            if agent.uses_progress:
                pct = 10 + int(70 * (round_no + (i + 1) / k) / max(rounds, 1))
                self.progress(t_done, "researching", pct,
                              {"current": i + 1, "total": k, "item_title": data["tool_name"]})
            if data["status"] == "error":
                if rng.random() < 0.3:
                    self.events.append((t_done, "error", {
                        "error_type": "tool_error", "message": f"{data['tool_name']} failed: {data['output_summary']}",
                        "details": {"tool_use_id": data["tool_use_id"], "recoverable": True},
                    }))
            elif data["tool_name"] == "create_document":
                self.events.append((t_done, "creation", {
                    "creation_type": "document", "count": 1, "tool_use_id": data["tool_use_id"],
                    "items": [{"id": f"doc_{rng.getrandbits(48):012x}", "title": "Quarterly summary"}],
                }))
        self.tool_count += k
        return results[-1][0]

    def run(self) -> int:
        """Plan the whole session up to (not including) done; return the time done would be sent."""
        rng = self.rng
        agent = self.spec.agent
        t = self.model_wait(0)
        if rng.random() < 0.4:
            t = self.thinking(t)
        if agent.uses_progress:
            self.progress(t, PROGRESS_STEPS[0], 5)
            t += rng.randint(5, 50)
        rounds = rng.randint(0, agent.max_rounds)
        for round_no in range(rounds):
            if rng.random() < 0.6:
                t = self.tokens(t, rng.randint(8, 40))  # "Let me look that up."
            t = self.tool_round(t, round_no, rounds)
            t = self.model_wait(t)
            if rng.random() < 0.3:
                t = self.thinking(t)
            self.turns += 1
            self.events.append((t, "turn", {"turn_number": self.turns, "total_tools": self.tool_count}))
            t += rng.randint(5, 60)
        if rng.random() < 0.02:
            # The model provider pushed back; the agent retried and the stream goes on.
            self.events.append((t, "error", {
                "error_type": "rate_limit", "message": "model provider rate limited the request; retrying",
                "details": {"retry_after_s": 2},
            }))
            t += rng.randint(1500, 3000)
        if agent.uses_progress:
            self.progress(t, PROGRESS_STEPS[2], 85)
        answer = int(rng.lognormvariate(0.0, 0.6) * agent.answer_median_tokens)
        t = self.tokens(t, min(max(answer, 5), 3000))
        if agent.uses_progress:
            self.progress(t, PROGRESS_STEPS[3], 100)
        return t + rng.randint(2, 20)

    def stall(self) -> None:
        """Freeze the stream for 15-40 s before one token batch (the session still completes)."""
        batches = [i for i, ev in enumerate(self.events) if ev[1] == "token" and i > 0]
        if not batches:
            return
        i = self.rng.choice(batches)
        gap = self.rng.randint(STALL_MIN_MS, STALL_MAX_MS)
        self.events[i:] = [(t + gap, e, d) for t, e, d in self.events[i:]]


def _cut(rng: random.Random, events: list[_Event]) -> tuple[int, int]:
    """Where a mid-stream failure strikes: (events kept, time of the failure)."""
    uses = [i for i, ev in enumerate(events) if ev[1] == "tool_use"]
    if uses and rng.random() < ORPHAN_SHARE:
        keep = rng.choice(uses) + 1  # right after a tool started: its result never comes
    else:
        keep = rng.randrange(len(events) + 1)
    t_last = events[keep - 1][0] if keep else 0
    t_next = events[keep][0] if keep < len(events) else t_last + 50
    return keep, t_last + int((t_next - t_last) * rng.random())


def build_session(rng: random.Random, spec: SessionSpec) -> SimulatedSession:
    """Generate one session's recording lines from its spec (all randomness from `rng`)."""
    plan = _Plan(rng, spec)
    t_done = plan.run()
    if spec.stall and spec.failure is None:
        shift = plan.events[-1][0]
        plan.stall()
        t_done += plan.events[-1][0] - shift
    events = plan.events
    failure = spec.failure
    end: dict[str, Any] | None
    if failure is None:
        model = spec.model
        input_tokens = int(rng.lognormvariate(0.0, 0.5) * 1200) * plan.turns
        cost = (input_tokens * model.usd_per_mtok_in + plan.output_tokens * model.usd_per_mtok_out) / 1e6
        events.append((t_done, "done", {
            "message_id": f"msg_{rng.getrandbits(96):024x}", "num_turns": plan.turns,
            "tool_count": plan.tool_count, "duration_ms": t_done, "model": model.name,
            "total_cost_usd": round(cost, 6),
            "usage": {"input_tokens": input_tokens, "output_tokens": plan.output_tokens},
        }))
        end, t_end = {"reason": "done"}, t_done + rng.randint(0, 2)
    elif failure == "returned_without_done":
        end, t_end = {"reason": "returned_without_done"}, t_done
    else:
        keep, t_end = _cut(rng, events)
        del events[keep:]
        if failure == "exception":
            exc_type, message = rng.choice(_EXCEPTIONS)
            # the fields TraceRecorder writes (hook/writer.py), so SQL written on demo data reads real recordings
            end = {"reason": "exception", "type": exc_type, "message": message}
        elif failure == "idle_cut":
            t_end = (events[-1][0] if events else 0) + rng.choice(IDLE_CUT_MS) + rng.randint(0, 500)
            end = {"reason": "cancelled"}
        elif failure == "client_disconnect":
            end = {"reason": "cancelled"}
        else:  # killed: the process died, nothing more was written
            end = None
    return _serialise(spec, plan, events, end, t_end)


def _seconds_table() -> list[str]:
    """JSON text of t = ms / 1000 for the first minutes of a session: repr() of a float is the
    single most expensive step of writing a token line, and almost every t is small."""
    global _T_TEXT
    if not _T_TEXT:
        _T_TEXT = [repr(ms / 1000) for ms in range(_T_TABLE_MS)]
    return _T_TEXT


_T_TABLE_MS: Final = 180_000
_T_TEXT: list[str] = []


def _serialise(
    spec: SessionSpec, plan: _Plan, events: list[_Event], end: dict[str, Any] | None, t_end: int
) -> SimulatedSession:
    sid = spec.session_id
    start_ms = spec.start_us // 1000
    started_at = _EPOCH + timedelta(microseconds=spec.start_us)
    lines = [dumps(header_record(sid, started_at, side="server", attrs=spec.attrs))]
    times = [start_ms]
    times += [start_ms + ev[0] for ev in events]
    table = _seconds_table()
    limit = _T_TABLE_MS
    tail = f'"}}, "sid": "{sid}", "seq": '
    lines += [
        f'{{"t": {table[t] if t < limit else repr(t / 1000)}, "event": "token", "data": {{"text": "{data}{tail}{seq}}}\n'
        if event == "token" else dumps(event_record(sid, seq, t / 1000, event, data))
        for seq, (t, event, data) in enumerate(events, 1)
    ]
    if end is not None:
        lines.append(dumps(event_record(sid, len(events) + 1, t_end / 1000, END_EVENT, end)))
        times.append(start_ms + t_end)
    tools = [(e, d) for _, e, d in events if e == "tool_use" or e == "tool_result"]
    orphans = {d["tool_use_id"] for e, d in tools if e == "tool_use"} - {d["tool_use_id"] for e, d in tools if e == "tool_result"}
    return SimulatedSession(
        session_id=sid,
        model=spec.model.name,
        agent=spec.agent.name,
        tps=spec.tps,
        failure=spec.failure,
        end_reason=END_REASON_OF[spec.failure] if spec.failure else "done",
        stalled=spec.stall and spec.failure is None,
        orphaned_tools=len(orphans),
        tool_errors=sum(1 for e, d in tools if e == "tool_result" and d["status"] == "error"),
        output_tokens=plan.output_tokens,
        lines=lines,
        times_ms=times,
    )
