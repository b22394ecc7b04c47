"""Helpers the tests share: a free port, the CLI in its own process, the app under uvicorn in a thread, and
`hubcensus serve` (or any command that serves) in a process of its own."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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


def stop(proc: subprocess.Popen[bytes], seconds: float) -> int:
    """Stop a process as its supervisor would: SIGTERM, then SIGKILL if it is still there after `seconds`;
    its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(10)


@contextmanager
def hubcensus_server(
    args: list[str],
    url: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    seconds: float = 60,
    *,
    errors: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`hubcensus ARGS` (a command that serves, e.g. `demo`) as its own process, from the venv's console
    script, with no HUBCENSUS_* or HF_* variable but `env`; yields once `url`/healthz answers 200, and
    stops it (SIGTERM, then SIGKILL) at the end. Its output goes to `log`, its standard error too unless
    `errors` names a file of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HUBCENSUS_", "HF_"))}
    with log.open("wb") as out, errors.open("wb") if errors else contextlib.nullcontext(out) as err:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "hubcensus"), *args],
            stdout=out,
            stderr=subprocess.STDOUT if errors is None else err,
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
                said = log.read_text()[-3000:] + (errors.read_text()[-3000:] if errors else "")
                raise AssertionError(f"`hubcensus {' '.join(args)}` did not serve {url}:\n{said}")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc, 30)


@dataclass(frozen=True)
class Served:
    """A running `hubcensus serve`: its base URL, its process, and the files its output and its log go to."""

    url: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


@contextmanager
def hubcensus_serve(
    data_dir: Path, log_dir: Path, env: Mapping[str, str] | None = None, seconds: float = 60
) -> Iterator[Served]:
    """`hubcensus serve` over `data_dir` on a free loopback port, in its own process (as `hubcensus_server`,
    settings from `env` only), once it answers /healthz; its standard output and error go to files in `log_dir`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stdout, stderr = log_dir / f"serve-{port}.out", log_dir / f"serve-{port}.err"
    args = ["serve", "--port", str(port), "--data-dir", str(data_dir)]
    with hubcensus_server(args, url, stdout, env, seconds, errors=stderr) as process:
        yield Served(url, process, stdout, stderr)
