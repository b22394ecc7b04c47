"""Helpers the tests share: a free port, the CLI in its own process, the app under uvicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from hubcensus.config import Settings
from hubcensus.service.app import create_app


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hubcensus(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in its own process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "hubcensus", *args], capture_output=True, text=True, timeout=120, check=False
    )


@contextmanager
def serving(data_dir: Path, **settings: Any) -> Iterator[str]:
    """The real app under uvicorn on loopback, in a thread, with these settings (`cache_mb=0`, …); yields its
    base URL."""
    port = free_port()
    app = create_app(Settings(data_dir=data_dir, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


@contextmanager
def hubcensus_server(
    args: list[str], url: str, log: Path, env: dict[str, str] | None = None, seconds: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """`hubcensus ARGS` (a command that serves, e.g. `demo`) as its own process, from the venv's console
    script, with no HUBCENSUS_* or HF_* variable but `env`; yields once `url`/healthz answers 200, and
    stops it (SIGTERM, then SIGKILL) at the end. Its output goes to `log`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HUBCENSUS_", "HF_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "hubcensus"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
            cwd=log.parent,
        )
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`hubcensus {' '.join(args)}` did not serve {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
