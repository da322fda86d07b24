"""Bulk OTLP export: our direct-protobuf exporter against the OpenTelemetry SDK tracer path.

    python benchmarks/export.py [--sessions 4000] [--protocol http/protobuf] [--repeat 1]

Simulates sessions (agent_stream_trace.simulate), ingests them into a temporary DuckDB file,
starts a counting OTLP receiver on 127.0.0.1 in its own process (so it does not share our
GIL), then, in one run, for the same sessions:
  ours        export_otlp(): SessionTraces → SpanSpecs → OTLP bytes → stock transport
  sdk-tuned   same SessionTraces → SpanSpecs → SDK tracer (sdk_bridge) → BatchSpanProcessor
              (queue large enough to hold everything) → stock OTLPSpanExporter
  sdk-default the same with BatchSpanProcessor defaults (queue 2048): shows what it drops
Each path starts from the database and ends when the receiver has acknowledged the last
request. Then the same again from SessionTraces already in memory (the part that differs
between the paths: span objects, processor, encoding). Prints spans/s, spans received, spans
dropped and our speed as a ratio of sdk-tuned. Before any clock starts, every path's exporter
module is imported and the receiver answers one empty request, so no path pays first-use costs
for another. --repeat N runs N rounds of every path and shows each path's fastest run, the
median run, and its fewest spans received; the ratio of the fastest runs and that of the
medians (the same spans were received on both paths when nothing was dropped).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_stream_trace.db import connect  # noqa: E402
from agent_stream_trace.exporters.otlp import OtlpExportOptions, export_otlp  # noqa: E402
from agent_stream_trace.ingest.pipeline import IngestOptions, ingest  # noqa: E402
from agent_stream_trace.session import load_session_traces  # noqa: E402
from agent_stream_trace.simulate import SimulationOptions, simulate  # noqa: E402
from agent_stream_trace.spans import data_events, resource_attributes, session_spans  # noqa: E402


class CountingReceiver:
    """tests/support/otlp_receiver.py as a child process: counts spans, keeps nothing."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "support" / "otlp_receiver.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        ready = self.proc.stdout.readline().split()  # type: ignore[union-attr]
        if not ready or ready[0] != "READY":
            raise RuntimeError("receiver did not start")
        self.http = f"http://127.0.0.1:{ready[1]}"
        self.grpc = f"http://127.0.0.1:{ready[2]}"

    def count(self) -> int:
        self.proc.stdin.write("count\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return int(self.proc.stdout.readline().split()[0])  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=10)


def import_stock_exporter(protocol: str) -> None:
    """The SDK paths import their exporter before their clock starts; ours imports the same
    module (its transport) before its clock too, so neither run pays a first import (~0.1 s)."""
    if protocol == "grpc":
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
    else:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401


def warm_up(endpoint: str, protocol: str) -> None:
    """One empty request before any clock starts, so the first path measured does not pay the
    receiver's first-request costs (its handler thread, its protobuf parser's first use)."""
    from agent_stream_trace.exporters.otlp_encode import RequestEncoder
    from agent_stream_trace.exporters.otlp_transport import make_sender, resolve_settings

    import_stock_exporter(protocol)
    sender = make_sender(resolve_settings(endpoint, protocol))
    try:
        assert sender.send(RequestEncoder(resource_attributes()).encode([]), 0).ok
    finally:
        sender.close()


def run_ours(db: Path, endpoint: str, protocol: str) -> float:
    import_stock_exporter(protocol)
    con = connect(db)
    try:
        started = time.perf_counter()
        export_otlp(con, OtlpExportOptions(endpoint=endpoint, protocol=protocol, resend_all=True))
        return time.perf_counter() - started
    finally:
        con.close()


def run_ours_in_memory(traces: list, endpoint: str, protocol: str) -> float:
    from agent_stream_trace.exporters.otlp_encode import RequestEncoder
    from agent_stream_trace.exporters.otlp_transport import make_sender, resolve_settings

    sender = make_sender(resolve_settings(endpoint, protocol))
    encoder = RequestEncoder(resource_attributes())
    started = time.perf_counter()
    batch: list = []
    for trace in traces:
        batch.extend(session_spans(trace))
        if len(batch) >= 2000:
            assert sender.send(encoder.encode(batch), len(batch)).ok
            batch = []
    if batch:
        assert sender.send(encoder.encode(batch), len(batch)).ok
    elapsed = time.perf_counter() - started
    sender.close()
    return elapsed


def run_sdk(db: Path | list, endpoint: str, protocol: str, *, tuned: bool, total_spans: int) -> float:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from agent_stream_trace.exporters.sdk_bridge import emit_spans

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    # Tuned: a queue that holds the whole run (nothing dropped) and big export batches.
    processor = (BatchSpanProcessor(exporter, max_queue_size=max(total_spans + 1, 2048), max_export_batch_size=2048,
                                    schedule_delay_millis=200) if tuned else BatchSpanProcessor(exporter))
    provider = TracerProvider(resource=Resource.create(resource_attributes()))
    provider.add_span_processor(processor)
    con = connect(db) if isinstance(db, Path) else None
    try:
        started = time.perf_counter()
        # The same loader and mapping as ours: only span objects, processor and encoding differ.
        traces = (load_session_traces(con, token_runs=True, token_text=False, data_events=data_events())
                  if con is not None else db)
        for trace in traces:
            emit_spans(session_spans(trace), provider)
        provider.force_flush(timeout_millis=600_000)
        elapsed = time.perf_counter() - started
    finally:
        if con is not None:
            con.close()
        provider.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--protocol", choices=("http/protobuf", "grpc"), default="http/protobuf")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every path; each path's fastest run is shown (default 1)")
    args = parser.parse_args()

    import logging

    logging.getLogger("opentelemetry").addHandler(logging.NullHandler())
    with tempfile.TemporaryDirectory() as tmp:
        traces = Path(tmp) / "traces"
        db = Path(tmp) / "bench.duckdb"
        simulate(SimulationOptions(sessions=args.sessions, seed=1, out=traces))
        ingest([traces], IngestOptions(db=db))
        con = connect(db)
        loaded = list(load_session_traces(con, token_runs=True, token_text=False, data_events=data_events()))
        total = sum(len(session_spans(t)) for t in loaded)
        con.close()
        print(f"{args.sessions} simulated sessions -> {total} spans, protocol {args.protocol}, 2 cores shared")

        receiver = CountingReceiver()
        endpoint = receiver.grpc if args.protocol == "grpc" else receiver.http
        warm_up(endpoint, args.protocol)
        runs: dict[str, list[float]] = {}
        fewest: dict[str, int] = {}

        def keep(name: str, seconds: float, received: int) -> None:
            # Every run's time (the fastest and the median are shown: noise on a shared machine
            # only slows a run down, and the median shows how much), and the fewest spans
            # received: a drop in any run must show.
            runs.setdefault(name, []).append(seconds)
            fewest[name] = min(fewest.get(name, received), received)

        try:
            for _ in range(args.repeat):  # rounds, so drifting load from other work hits every path
                # From the database, then from SessionTraces already in memory.
                for source, suffix, run_ours_from in ((db, "", run_ours), (loaded, " (mem)", run_ours_in_memory)):
                    for name in ("ours", "sdk-tuned", "sdk-default"):
                        before = receiver.count()
                        if name == "ours":
                            seconds = run_ours_from(source, endpoint, args.protocol)
                        else:
                            seconds = run_sdk(source, endpoint, args.protocol, tuned=name == "sdk-tuned",
                                              total_spans=total)
                        keep(name + suffix, seconds, receiver.count() - before)
        finally:
            receiver.close()

    fastest = {name: min(times) for name, times in runs.items()}
    median = {name: statistics.median(times) for name, times in runs.items()}
    print(f"{'path':<18} {'seconds':>8} {'median':>7} {'spans/s':>10} {'received':>9} {'dropped':>8}")
    for name, seconds in fastest.items():
        received = fewest[name]
        print(f"{name:<18} {seconds:>8.2f} {median[name]:>7.2f} {received / seconds:>10,.0f} {received:>9} "
              f"{total - received:>8}")
    for suffix, label in (("", "from the database"), (" (mem)", "from SessionTraces in memory")):
        ours = fewest["ours" + suffix] / fastest["ours" + suffix]
        ratio = ours / (fewest["sdk-tuned" + suffix] / fastest["sdk-tuned" + suffix])
        typical = median["sdk-tuned" + suffix] / median["ours" + suffix]
        print(f"ours / sdk-tuned spans/s, {label}: {ratio:.1f}x, of the medians {typical:.1f}x "
              "(target >= 5x, zero dropped)")


if __name__ == "__main__":
    main()
