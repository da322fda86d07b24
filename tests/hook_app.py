"""A real FastAPI app streaming with the upstream emitter, and a real uvicorn server to run it.

Used by tests/test_hook_*.py. Scenarios (GET /stream/{scenario}?hook=1|0):
  plain   thinking, tokens, done
  tools   turns, tool calls (one with status=error), progress, creation, tokens, done
  crash   tokens then RuntimeError mid-stream (no done)
  nodone  tokens then the generator returns without done
  slow    a token every few ms, up to `n`, then done (clients hang up on it)
  weird   what a hook cannot parse as an event: bad JSON, a heartbeat comment, an event split
          over two items, two events in one item, bytes, an unterminated block at the end
Every response carries `X-Worker-Pid` so multi-process tests can see which worker served it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from agent_stream import AgentStreamEmitter
from agent_stream.fastapi import agent_stream_response
from fastapi import FastAPI, Request

from agent_stream_trace import TraceRecorder
from agent_stream_trace.hook.fastapi import recorded_stream_response

ENV_DIR = "HOOK_TEST_RECORDINGS"


async def scenario(name: str, n: int, delay: float, seed: int) -> AsyncIterator[Any]:
    """The SSE items of one scenario; `seed` makes concurrent sessions' content differ."""
    e = AgentStreamEmitter()

    async def pause() -> None:
        await asyncio.sleep(delay)  # stands in for model latency; lets sessions interleave

    if name == "plain":
        yield e.thinking(f"thinking about request {seed}")
        for i in range(n):
            await pause()
            yield e.token(f"word{seed}-{i} ")
        yield e.done(message_id=f"msg_{seed}", num_turns=1, duration_ms=10, model="m-1", total_cost_usd=0.001)
    elif name == "tools":
        for turn in (1, 2):
            yield e.turn(turn, total_tools=turn - 1)
            tid = f"tu_{seed}_{turn}"
            yield e.tool_use("search", tid, f"query {seed}")
            await pause()
            yield e.progress("fetch", 50 * turn, "fetching", {"current": turn, "total": 2, "item_title": "doc"})
            yield e.tool_result("search", tid, "2 hits", duration_ms=12, is_error=(turn == 1))
            yield e.creation("document", 1, tid, [{"title": f"doc {seed}"}])
            for i in range(n):
                await pause()
                yield e.token(f"t{turn}-{i} ")
        yield e.done(message_id=f"msg_{seed}", num_turns=2, tool_count=2, model="m-1")
    elif name == "crash":
        for i in range(n):
            await pause()
            yield e.token(f"partial {i} ")
        raise RuntimeError(f"model backend went away ({seed})")
    elif name == "nodone":
        for i in range(n):
            await pause()
            yield e.token(f"tok {i} ")
    elif name == "slow":
        for i in range(n):
            await pause()
            yield e.token(f"slow {i} ")
        yield e.done(message_id=f"msg_{seed}")
    elif name == "weird":
        yield e.token("before")
        yield "event: token\ndata: {not json}\n\n"
        yield ": ping\n\n"
        split = e.tool_use("search", "tu_split", "split across items")
        yield split[:9]
        await pause()
        yield split[9:]
        yield e.token("two") + e.token("in one")
        yield e.token("as bytes ünïcode").encode("utf-8")
        yield e.done(message_id="msg_weird")
        yield "event: token\ndata: {\"text\": \"never terminated\"}"
    else:
        raise ValueError(f"unknown scenario {name}")


def make_app(recorder: TraceRecorder | None) -> FastAPI:
    app = FastAPI()

    @app.get("/stream/{name}")
    async def stream(name: str, request: Request, hook: int = 1, n: int = 5, delay: float = 0.001, seed: int = 0) -> Any:
        source = scenario(name, n, delay, seed)
        if hook and recorder is not None:
            response = recorded_stream_response(source, recorder, route=f"/stream/{name}", seed=seed)
        else:
            response = agent_stream_response(source)
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app


def make_worker_app() -> FastAPI:
    """For `uvicorn --factory --workers N`: each worker records into $HOOK_TEST_RECORDINGS/."""
    recorder = TraceRecorder(os.environ[ENV_DIR] + "/")
    app = make_app(recorder)
    app.router.lifespan_context = _closing(recorder)
    return app


def _closing(recorder: TraceRecorder) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        recorder.close()  # graceful shutdown: everything buffered is written

    return lifespan


def append_worker(path: str, sessions: int, events: int) -> None:
    """One process of the shared-file test: many concurrent sessions appending to `path`.
    It says it is ready (`<path>.ready-<pid>`) and starts when `<path>.go` appears, so the
    processes really write at the same time. Halfway it flushes its lines to the file, says so
    (`<path>.half-<pid>`) and waits until both processes have: each process's lines then stand
    on both sides of the other's first half, so the two processes' writes interleave in the
    file however the scheduler runs them (on a loaded machine one process could otherwise
    write everything before the other began)."""
    Path(f"{path}.ready-{os.getpid()}").touch()
    _wait_for_files(f"{path}.go", 1)
    recorder = TraceRecorder(path, flush_interval_s=0.002)

    async def one(seed: int) -> None:
        async for _ in recorder.record(scenario("plain", events, 0.0, seed), pid=os.getpid()):
            pass

    async def run(seeds: range) -> None:
        await asyncio.gather(*(one(seed) for seed in seeds))

    half = sessions // 2
    asyncio.run(run(range(half)))
    assert recorder.flush(timeout=30)
    Path(f"{path}.half-{os.getpid()}").touch()
    _wait_for_files(f"{path}.half-*", 2)
    asyncio.run(run(range(half, sessions)))
    recorder.close()


def _wait_for_files(pattern: str, count: int, timeout: float = 30) -> None:
    """Poll until `count` files match `pattern` (a cross-process barrier made of files)."""
    folder, name = os.path.split(pattern)
    deadline = time.monotonic() + timeout
    while len(list(Path(folder).glob(name))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {count} x {pattern}")
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` on a real uvicorn server on 127.0.0.1 (a free port) in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
