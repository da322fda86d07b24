"""What the simulated traffic is made of: models, tools, agents, and the text they stream.

Plain data, no randomness: the session generator draws from these tables. The numbers are
plausible production values, chosen so that every failure signature the ingester looks for
shows up (slow tools, tool errors, long silences) without dominating the picture.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Model:
    """An LLM behind the agent: its streaming speed and its price."""

    name: str
    min_tps: float  # a session's generation speed is drawn uniformly in [min_tps, max_tps]
    max_tps: float
    ttft_median_ms: float  # wait before the first streamed event (lognormal, sigma 0.5)
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    weight: float  # share of sessions


# Every speed lies inside 20-120 tokens/s, the range the seed post quotes for real models.
MODELS: Final[tuple[Model, ...]] = (
    Model("claude-sonnet-4", 30.0, 60.0, 900.0, 3.0, 15.0, 0.35),
    Model("claude-3-5-haiku", 60.0, 110.0, 450.0, 0.8, 4.0, 0.25),
    Model("claude-opus-4", 20.0, 40.0, 1400.0, 15.0, 75.0, 0.10),
    Model("gpt-4o", 40.0, 90.0, 700.0, 2.5, 10.0, 0.20),
    Model("gpt-4o-mini", 70.0, 120.0, 400.0, 0.15, 0.6, 0.10),
)


@dataclass(frozen=True)
class Tool:
    """A tool the agent calls; its latency is lognormal around `median_ms`."""

    name: str
    median_ms: float
    sigma: float  # of the underlying normal: p95 = median * exp(1.645 * sigma)
    error_rate: float
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    errors: tuple[str, ...]

    @property
    def mu(self) -> float:
        return math.log(self.median_ms)


# A call that runs longer than this is abandoned by the agent and reported as an error, as
# real tool runners do; it also keeps tool waits under the 15 s stall threshold, so every
# stall in a simulated corpus is one the generator injected on purpose.
TOOL_TIMEOUT_MS: Final = 12_000

TOOLS: Final[dict[str, Tool]] = {
    t.name: t
    for t in (
        Tool("web_search", 850.0, 0.45, 0.02,
             ("query: latest duckdb release notes", "query: sse idle timeout nginx", "query: competitor pricing 2025"),
             ("found 8 results", "found 3 results", "found 12 results"),
             ("search backend returned 503", "rate limited by search provider")),
        Tool("fetch_page", 1200.0, 0.7, 0.05,
             ("url: https://example.com/docs/streaming", "url: https://example.org/blog/post-42"),
             ("fetched 14.2 kB, 1,830 words", "fetched 3.1 kB, 402 words"),
             ("HTTP 404 Not Found", "connection reset by peer", "TLS handshake timeout")),
        Tool("sql_query", 320.0, 0.8, 0.04,
             ("SELECT region, sum(revenue) FROM sales GROUP BY 1", "SELECT count(*) FROM orders WHERE status = 'late'"),
             ("12 rows", "1 row", "240 rows"),
             ("Binder Error: column \"revenue_usd\" not found", "statement timeout")),
        Tool("code_exec", 2500.0, 0.6, 0.06,
             ("python: plot monthly totals", "python: fit linear trend"),
             ("exit 0, 2 files written", "exit 0, stdout 34 lines"),
             ("exit 1: ZeroDivisionError", "sandbox memory limit exceeded")),
        Tool("vector_search", 180.0, 0.5, 0.01,
             ("k=8: refund policy for annual plans", "k=5: how to rotate api keys"),
             ("8 chunks, top score 0.83", "5 chunks, top score 0.71"),
             ("index not ready",)),
        Tool("create_document", 600.0, 0.4, 0.02,
             ("title: Quarterly summary", "title: Incident timeline"),
             ("created 1 document", "created 1 document"),
             ("storage quota exceeded",)),
    )
}


@dataclass(frozen=True)
class Agent:
    """An agent endpoint: which tools it uses and how much it talks."""

    name: str
    route: str
    tools: tuple[str, ...]
    max_rounds: int  # tool rounds per session are drawn uniformly in 0..max_rounds
    answer_median_tokens: float  # final answer length (lognormal, sigma 0.6)
    uses_progress: bool
    weight: float


AGENTS: Final[tuple[Agent, ...]] = (
    Agent("support-bot", "/api/chat", ("vector_search", "web_search"), 2, 140.0, False, 0.40),
    Agent("research-agent", "/api/research", ("web_search", "fetch_page", "vector_search"), 4, 320.0, False, 0.25),
    Agent("sql-analyst", "/api/analyze", ("sql_query", "code_exec"), 3, 200.0, False, 0.20),
    Agent("report-writer", "/api/reports", ("web_search", "sql_query", "create_document"), 3, 420.0, True, 0.15),
)

APP_VERSIONS: Final = ("1.8.2", "1.8.3", "1.9.0")
APP_VERSION_WEIGHTS: Final = (0.15, 0.55, 0.30)
USERS: Final = 500  # user ids u_0000 .. u_0499

THOUGHTS: Final = (
    "The user wants numbers, so I should query before answering.",
    "I should look this up first.",
    "Two sources disagree; check the primary one.",
    "The earlier result was partial. Try a narrower query.",
    "Enough context now. Draft the answer, cite the sources.",
    "The tool failed; answer with what I have and say so.",
)

PROGRESS_STEPS: Final = ("planning", "researching", "drafting", "reviewing")

_PROSE = """\
Here is what I found. The short answer is yes, but with two caveats worth knowing before you
rely on it in production.

## Summary

Streaming responses stay open for the whole generation, so anything between the server and the
browser can cut them: a proxy with a 60 s idle timeout, a load balancer, a mobile network that
drops the connection. When that happens the client synthesizes a "done" event and the UI
recovers, but the server never learns that the answer was truncated. Sending a heartbeat
every 15 s keeps idle connections alive; recording how each session ended makes the failures visible.

1. Check the p95 latency of each tool — the slow tail matters more than the median.
2. Compare the synthetic-done rate per route and per app version.
3. Look for long silences: a gap of 60 s or more usually means a cut, not a slow model.

Revenue grew 12% quarter over quarter (EMEA +18%, APAC +9%, Americas +7%). The café chain in
the Zürich region is the outlier → it doubled after the loyalty launch ✓. I'd treat the
"late orders" figure with care: the query counted cancelled orders too 🙂.

In short, the data supports the plan; the risks are the timeouts and the naïve retry logic.
"""


def _tokenize(text: str) -> tuple[str, ...]:
    """Split prose into word tokens that carry their leading whitespace, like model tokens do,
    so that any run of them concatenates into readable text. Wrapped lines are unwrapped;
    blank lines and list items keep their newlines (models stream markdown)."""
    unwrapped = re.sub(r"(?<!\n)\n(?![\n#\d])", " ", text.strip())
    # The generator cycles through the prose: start it like a new paragraph so the wrap reads.
    return tuple(re.findall(r"\s*\S+", "\n\n" + unwrapped))


TOKENS: Final[tuple[str, ...]] = _tokenize(_PROSE)
# Each token already escaped for a JSON string, so a token batch is a join, not a json.dumps.
# Where answers may start: the first word of each paragraph.
PARAGRAPH_STARTS: Final[tuple[int, ...]] = tuple(i for i, t in enumerate(TOKENS) if t.startswith("\n\n"))
TOKENS_JSON: Final[tuple[str, ...]] = tuple(json.dumps(t, ensure_ascii=False)[1:-1] for t in TOKENS)
