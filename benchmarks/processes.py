"""The processes a benchmark starts: children that print a JSON result, servers (the Hub file server,
`hubcensus serve`) for the duration of a block, and what /proc says of their memory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"no JSON result in output: {text[-2000:]}")


def py_spy() -> str | None:
    """py-spy, on PATH or beside this Python (`.venv/bin/pip install py-spy`)."""
    beside = Path(PY).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def run_child(args: list[str], log_path: Path, profile_to: Path | None = None) -> dict[str, Any]:
    """Run `python -m benchmarks.<args>` in a subprocess; its JSON result, plus the wall time around it."""
    cmd = [PY, "-m", *args]
    spy = py_spy()
    if profile_to is not None and spy is not None:
        cmd = [spy, "record", "-r", "100", "-f", "raw", "-o", str(profile_to), "--", *cmd]
    started = time.perf_counter()
    with log_path.open("ab") as err:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}); see {log_path}")
    result = _last_json_line(proc.stdout.decode())
    result["wall_s"] = wall
    return result


@contextlib.contextmanager
def background(
    cmd: list[str],
    log_path: Path,
    ready: Callable[[subprocess.Popen[bytes]], str],
    env: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A server process for the duration of the block, with `env` added to ours; `ready` waits for it and
    returns its URL."""
    err = log_path.open("ab")
    # Only a server that announces its URL on stdout gets a pipe: an unread pipe (uvicorn's access log)
    # would fill up and block the server.
    stdout = subprocess.PIPE if ready is _url_from_stdout else err
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=err, env={**os.environ, **(env or {})})
    try:
        url = ready(proc)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


def _url_from_stdout(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http"):
        raise RuntimeError(f"server did not start (exit {proc.poll()})")
    return line


def hub_server(path: Path, log_path: Path, *extra: str) -> contextlib.AbstractContextManager[Any]:
    return background([PY, "-m", "benchmarks.hubfile", str(path), *extra], log_path, _url_from_stdout)


def http_get(url: str, timeout: float = 120.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def api_server(
    data_dir: Path, log_path: Path, env: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """`hubcensus serve` (uvicorn, the product's own settings, and `env`'s) on a free loopback port."""
    port = free_port()
    exe = Path(PY).parent / "hubcensus"
    head = [str(exe)] if exe.exists() else [PY, "-c", "from hubcensus.cli import main; main()"]
    cmd = [*head, "serve", "--data-dir", str(data_dir), "--port", str(port)]

    def ready(proc: subprocess.Popen[bytes]) -> str:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"hubcensus serve exited with {proc.returncode}; see {log_path}")
            with contextlib.suppress(OSError):
                if http_get(url + "/healthz", timeout=2)[0] == 200:
                    return url
            time.sleep(0.2)
        raise RuntimeError("hubcensus serve did not become ready")

    return background(cmd, log_path, ready, env)


def proc_memory(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of a live process, in bytes (Linux /proc)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024
    return out
