"""A real OTLP receiver on 127.0.0.1 that counts and keeps what it is sent (HTTP and gRPC).

Tests script its answers: `receiver.script = [503, 503]` makes the next two HTTP requests
fail with 503 (then 200s); `receiver.script = [400]` one 400. It keeps the parsed requests so
tests check spans by value, and counts every request, so a retry storm is visible.
Run as a program (`python otlp_receiver.py`) it prints "READY <http port> <grpc port>" and then
only counts spans (the benchmark runs it in its own process so it does not share our GIL).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass
class Receiver:
    http_port: int = 0
    grpc_port: int = 0
    keep: bool = True  # keep parsed requests (tests); the benchmark only counts
    script: list[Any] = field(default_factory=list)  # HTTP statuses or grpc.StatusCode, consumed in order
    retry_after: str | None = None  # sent with scripted 429/503 answers
    requests: int = 0  # every request received, failed ones included
    accepted_spans: int = 0
    received: list[ExportTraceServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each HTTP request / gRPC call
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def spans(self) -> list[Any]:
        with self.lock:
            return [s for r in self.received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def resources(self) -> list[Any]:
        with self.lock:
            return [rs.resource for r in self.received for rs in r.resource_spans]

    def _next_answer(self) -> Any:
        with self.lock:
            self.requests += 1
            return self.script.pop(0) if self.script else None

    def _accept(self, body: bytes) -> int:
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.accepted_spans += count
            if self.keep:
                self.received.append(request)
        return count


def _http_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
            answer = receiver._next_answer()
            if isinstance(answer, int) and answer >= 300:
                self.send_response(answer)
                if receiver.retry_after is not None and answer in (429, 503):
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path != "/v1/traces":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            receiver._accept(body)
            payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _grpc_servicer(receiver: Receiver) -> Any:
    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
            with receiver.lock:
                receiver.headers.append(dict(context.invocation_metadata()))
            answer = receiver._next_answer()
            if isinstance(answer, grpc.StatusCode):
                context.abort(answer, f"scripted {answer.name}")
            receiver._accept(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    return Servicer()


@contextmanager
def running_receiver(*, keep: bool = True) -> Iterator[Receiver]:
    """Start HTTP and gRPC receivers on free loopback ports; stop them on exit."""
    receiver = Receiver(keep=keep)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(receiver))
    http.daemon_threads = True
    receiver.http_port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_grpc_servicer(receiver), server)
    receiver.grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver
    finally:
        server.stop(grace=None)
        http.shutdown()
        http.server_close()


def dead_endpoint() -> str:
    """A loopback URL nothing listens on (a port bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def main() -> None:
    """Serve until stdin closes; answer `count` lines on stdin with the spans accepted so far."""
    with running_receiver(keep=False) as receiver:
        print(f"READY {receiver.http_port} {receiver.grpc_port}", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                with receiver.lock:
                    print(f"{receiver.accepted_spans} {receiver.requests}", flush=True)


if __name__ == "__main__":
    main()
