"""Arize Phoenix as a real OTLP backend for end-to-end tests, offline and on loopback only.

The server runs from its own venv (installing it beside the client makes imports take ~11 s):
$PHOENIX_PYTHON, else <repo>/.venv-phoenix/bin/python. Nothing is installed at test time.
Environment and launcher as ../shared/tools/phoenix.md describes: free ports, a temporary
working directory, PHOENIX_ALLOW_EXTERNAL_RESOURCES=false, gRPC bound to 127.0.0.1 by
phoenix_loopback.py; ready when GET /healthz answers 200; stopped with SIGINT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ENV_PYTHON = "PHOENIX_PYTHON"
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Phoenix:
    http_port: int
    grpc_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"


def phoenix_python() -> Path | None:
    """The server venv's python, or None when there is none."""
    configured = os.environ.get(ENV_PYTHON)
    candidates = [Path(configured)] if configured else [ROOT / ".venv-phoenix" / "bin" / "python"]
    return next((p for p in candidates if p.exists()), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_phoenix(python: Path, workdir: Path) -> Iterator[Phoenix]:
    server = Phoenix(_free_port(), _free_port())
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(server.http_port),
        "PHOENIX_GRPC_PORT": str(server.grpc_port),
        "PHOENIX_GRPC_HOST": "127.0.0.1",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_LOG_MIGRATIONS": "false",
    }
    log = open(workdir / "phoenix.log", "wb")
    proc = subprocess.Popen(
        [str(python), str(ROOT / "tests" / "support" / "phoenix_loopback.py")],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Phoenix exited with {proc.returncode}; see {workdir / 'phoenix.log'}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Phoenix not ready after {READY_TIMEOUT_S:.0f}s; see {workdir / 'phoenix.log'}")
            time.sleep(0.2)  # polling interval, not synchronisation: the loop waits for /healthz
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()
