"""The `hubcensus` command as a user runs it: real processes, real files, real HTTP."""

from __future__ import annotations

import base64
import json
import logging
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hubcensus import logs, options
from hubcensus.cli import app
from hubcensus.client import QUERIES
from hubcensus.config import Settings
from hubcensus.ingest.hub import split_userinfo
from hubcensus.queries.datadir import redact_url
from hubcensus.service.app import create_app
from tests.data import BUNDLED, FIXTURES, LIST_2024, LIST_2025
from tests.helpers import free_port, hubcensus, hubcensus_server
from tests.hubserver import HubServer, json_response


def test_import_then_list(tmp_path: Path) -> None:
    done = hubcensus(
        "import",
        str(LIST_2025),
        "--taken-at",
        "2025-01-14T12:30:00Z",
        "--data-dir",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "published snapshot 20250114T123000Z-" in done.stdout and "3,180 models" in done.stdout
    assert "read by duckdb" in done.stdout
    listing = hubcensus("snapshots", "--data-dir", str(tmp_path))
    assert listing.returncode == 0
    assert "20250114T123000Z-" in listing.stdout and "rimel_2025-01-14_list.json.gz" in listing.stdout


def test_data_dir_from_environment(tmp_path: Path) -> None:
    env = {**os.environ, "HUBCENSUS_DATA_DIR": str(tmp_path / "from-env")}
    done = subprocess.run(
        [sys.executable, "-m", "hubcensus", "import", str(FIXTURES / "sample_300.jsonl.gz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "from-env" / "snapshots").iterdir())) == 1


def test_bad_input_exits_non_zero_with_a_message(tmp_path: Path) -> None:
    missing = hubcensus("import", str(tmp_path / "nope.json"), "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n{}\n")
    refused = hubcensus("import", str(bad), "--data-dir", str(tmp_path))
    assert refused.returncode == 1 and "nothing was published" in refused.stderr
    bad_date = hubcensus("import", str(BUNDLED), "--taken-at", "yesterday", "--data-dir", str(tmp_path))
    assert bad_date.returncode == 2 and "taken-at" in bad_date.stderr
    bad_share = hubcensus("import", str(BUNDLED), "--max-bad-share", "7", "--data-dir", str(tmp_path))
    assert bad_share.returncode == 1 and "--max-bad-share" in bad_share.stderr
    bad_endpoint = hubcensus("ingest", "--endpoint", "ftp://x", "--data-dir", str(tmp_path))
    assert bad_endpoint.returncode == 1 and "--endpoint / HF_ENDPOINT: must start with http" in bad_endpoint.stderr
    assert not (tmp_path / "snapshots").exists()


def test_ingest_command_never_prints_the_token(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    with HubServer(crawl_2022[:2500], page_size=1000) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_very_secret"}
        done = subprocess.run(
            [sys.executable, "-m", "hubcensus", "ingest", "--data-dir", str(tmp_path), "--limit", "2000"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        # (huggingface_hub itself also asks the endpoint for /api/agent-harnesses, without a token.)
        auth = {r.headers.get("authorization") for r in hub.requests if r.path == "/api/models"}
    assert done.returncode == 0, done.stderr
    assert "2,000 models" in done.stdout
    assert auth == {"Bearer hf_very_secret"}
    assert "hf_very_secret" not in done.stdout + done.stderr
    meta = json.loads(next((tmp_path / "snapshots").glob("*/meta.json")).read_text())
    assert "hf_very_secret" not in json.dumps(meta)


def test_ingest_and_worker_pass_each_filter_option_to_the_hub(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    # `--filter` is the Hub's `filter` (its Python parameter is `tags`: `filter` shadowed the builtin).
    with HubServer(crawl_2022[:300], page_size=1000) as hub:
        args = ["--endpoint", hub.url, "--filter", "pytorch", "--filter", "transformers"]
        ingested = hubcensus("ingest", *args, "--data-dir", str(tmp_path / "ingest"))
        assert ingested.returncode == 0, ingested.stderr
        worker = subprocess.Popen(
            [sys.executable, "-m", "hubcensus", "worker", "--schedule", "0 3 1 1 *", "--run-now", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HUBCENSUS_DATA_DIR": str(tmp_path / "worker"), "HUBCENSUS_MAX_RATE": "0"},
        )
        try:
            deadline = time.monotonic() + 60
            while len([r for r in hub.requests if r.path == "/api/models"]) < 2:
                assert worker.poll() is None and time.monotonic() < deadline, "the worker asked the Hub nothing"
                time.sleep(0.1)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        filters = [r.query.get("filter") for r in hub.requests if r.path == "/api/models"]
    assert filters == [["pytorch", "transformers"]] * len(filters)


def test_demo_imports_once_and_serves(tmp_path: Path) -> None:
    port = free_port()
    url, logs = f"http://127.0.0.1:{port}", tmp_path / "logs"
    logs.mkdir()
    args = ["demo", "--port", str(port), "--data-dir", str(tmp_path)]
    for run in range(2):  # the second start finds the bundled snapshot and does not import again
        with hubcensus_server(args, url, logs / f"demo-{run}.log"):
            body = httpx.get(f"{url}/v1/frameworks/share?method=tags&frameworks=pytorch,tensorflow").json()
            assert body["total"]["models"] == 29_432
            assert body["total"]["pct"] == {"pytorch_only": 90.54, "tensorflow_only": 1.39, "shared": 8.07}
        output = (logs / f"demo-{run}.log").read_text()
        assert ("importing the bundled crawl" in output) == (run == 0), output
    assert len(list((tmp_path / "snapshots").iterdir())) == 1


def _run(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "hubcensus", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
        **kwargs,
    )


def _help(*command: str) -> str:
    """A command's --help, from the real app in-process (a process per help costs seconds), unwrapped."""
    done = CliRunner().invoke(app, [*command, "--help"], prog_name="hubcensus")
    assert done.exit_code == 0, done.output
    return " ".join(done.output.split())


def test_credentials_in_the_endpoint_are_sent_but_never_shown(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    basic = "Basic " + base64.b64encode(b"user:s3cr3t-pw").decode()
    with HubServer(crawl_2022[:2500], page_size=1000) as hub:
        endpoint, redacted = (
            hub.url.replace("http://", f"http://{userinfo}@") for userinfo in ("user:s3cr3t-pw", "***")
        )
        env = {"HUBCENSUS_MAX_RATE": "0", "HF_TOKEN": "hf_not_for_this_endpoint"}
        done = _run("ingest", "--endpoint", endpoint, "--data-dir", str(tmp_path), env=env)
        auth = [r.headers.get("authorization") for r in hub.requests if r.path == "/api/models"]
    assert done.returncode == 0, done.stderr
    # The credentials go to the Hub on every page (httpx alone sends URL credentials on the first only),
    # instead of the token (both would be the one Authorization header) ...
    assert auth == [basic] * 3 and "they are sent instead of the token" in done.stderr
    # ... and nowhere else: not printed, not logged, not recorded, not served.
    assert f"ingesting from {redacted}" in done.stdout and f"ingest from {redacted}" in done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr
    meta_text = next((tmp_path / "snapshots").glob("*/meta.json")).read_text()
    assert "s3cr3t" not in meta_text and json.loads(meta_text)["source"] == redacted
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        listing = client.get("/v1/snapshots")
        assert listing.json()["snapshots"][0]["source"] == redacted and "s3cr3t" not in listing.text
    assert "s3cr3t" not in _run("snapshots", "--data-dir", str(tmp_path)).stdout
    # A failing run names the endpoint in its error, without the password.
    with HubServer([], hook=lambda info: json_response(404, {"error": "nope"})) as hub:
        endpoint, redacted = (
            hub.url.replace("http://", f"http://{userinfo}@") for userinfo in ("user:s3cr3t-pw", "***")
        )
        failed = _run("ingest", "--endpoint", endpoint, "--data-dir", str(tmp_path / "f"))
    assert failed.returncode == 1 and f"The Hub at {redacted} answered HTTP 404" in failed.stderr
    assert "s3cr3t" not in failed.stdout + failed.stderr


def test_redact_url_keeps_everything_but_the_credentials() -> None:
    assert redact_url("https://user:pa%40ss@hub.example:8443/mirror") == "https://***@hub.example:8443/mirror"
    assert redact_url("http://token@10.0.0.1") == "http://***@10.0.0.1"
    assert redact_url("https://huggingface.co") == "https://huggingface.co"
    assert split_userinfo("https://us%40er:pa%3Ass@hub.example/x") == ("https://hub.example/x", ("us@er", "pa:ss"))
    assert split_userinfo("https://hub.example") == ("https://hub.example", None)


def test_help_shows_every_env_var_and_default_and_no_bool_for_flags() -> None:
    ingest = _help("ingest")
    assert "--data-dir <path> The snapshot store. [env var: HUBCENSUS_DATA_DIR; default: data]" in ingest
    assert "[env var: HF_ENDPOINT, HUBCENSUS_HF_ENDPOINT; default: https://huggingface.co]" in ingest
    assert "[env var: HF_TOKEN]" in ingest
    assert "[env var: HUBCENSUS_HTTP_TIMEOUT; default: 30.0]" in ingest
    assert "[env var: HUBCENSUS_MAX_RATE; default: 1.5]" in ingest
    assert "[env var: HUBCENSUS_MAX_BAD_SHARE; default: 0.05]" in _help("import")
    serve = _help("serve")
    assert (
        "[env var: HUBCENSUS_HOST; default: 127.0.0.1]" in serve and "[env var: HUBCENSUS_PORT; default: 8000]" in serve
    )
    worker = _help("worker")
    # A flag takes no value, and its help says so by showing none.
    assert "--run-now Take a snapshot at start" in worker and "--help Show this message" in worker
    for command in ("ingest", "worker", "import", "snapshots", "delete", "serve", "demo", "query", "query share"):
        assert "<bool>" not in _help(*command.split()), command


def test_each_query_is_a_command_with_its_route_parameters_as_options(tmp_path: Path) -> None:
    listing = _help("query")
    assert all(f" {name} " in listing for name in QUERIES)
    openapi = create_app(Settings(data_dir=tmp_path)).openapi()
    for name, path in QUERIES.items():
        shown = _help("query", name)
        for param in openapi["paths"][path]["get"].get("parameters", []):
            if param["name"] in ("_next", "_size", "_format"):
                continue  # the CLI pages and formats itself
            assert f"--{param['name'].lstrip('_').replace('_', '-')} " in shown, (name, param["name"])
    share = _help("query", "share")
    assert "--method <tags|files|inferred|loadable>" in share and "[default: inferred]" in share
    assert "--min-downloads <int> Only models with at least this many downloads. [0<=x<=9223372036854775807]" in share
    assert "--format <table|csv|json>" in share
    assert "--sort <downloads|-downloads|" in _help("query", "models")
    assert "--format <table|json>" in _help("query", "snapshots")


def test_query_refuses_what_it_does_not_take_naming_the_cli_options(tmp_path: Path) -> None:
    data_dir = str(tmp_path)
    hubcensus("import", str(BUNDLED), "--taken-at", "2022-02-21", "--data-dir", data_dir)
    typo = _run("query", "share", "--metod", "tags", "--data-dir", data_dir)
    assert typo.returncode == 2
    assert "error: query share has no option --metod; its options: --by, " in typo.stderr
    assert all(f" {option}," in typo.stderr for option in ("--snapshot", "--method", "--frameworks", "--format"))
    unknown = _run("query", "nonsense", "--data-dir", data_dir)
    assert unknown.returncode == 2 and "unknown query 'nonsense'; one of: share, trend," in unknown.stderr
    not_csv = _run("query", "snapshots", "--format", "csv", "--data-dir", data_dir)
    assert not_csv.returncode == 2 and "--format: query snapshots answers table, json, not 'csv'" in not_csv.stderr
    # The route validates, and its errors come back in the CLI's own names, never the HTTP ones.
    errors = {
        ("share", "--min-downloads", "-1"): "error: --min-downloads: Input should be greater than or equal to 0",
        ("models", "--sort", "sha"): "error: --sort: Input should be 'downloads', '-downloads'",
        ("share", "--created-after", "2022-02-01", "--created-before", "2022-01-01"): (
            "error: --created-after must be before --created-before. [invalid_parameter]"
        ),
        ("share", "--top", "many"): "error: --top: Input should be a valid integer",
        ("share", "--by", "author"): "error: --by: Input should be 'pipeline_tag' or 'library_name'",
    }
    for args, message in errors.items():
        failed = _run("query", *args, "--data-dir", data_dir)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr
        unquoted = re.sub(r"'[^']*'", "", failed.stderr.partition(" [")[0])  # values may have underscores
        assert "_" not in unquoted, failed.stderr  # names never: min_downloads, _sort, created_after, ...


def test_query_snapshots_is_a_table_and_csv_has_every_page(tmp_path: Path) -> None:
    data_dir = str(tmp_path)
    hubcensus("import", str(BUNDLED), "--taken-at", "2022-02-21", "--data-dir", data_dir)
    table = _run("query", "snapshots", "--data-dir", data_dir)
    assert table.returncode == 0, table.stderr
    assert "┃ id " in table.stdout and "20220221T000000Z-" in table.stdout and "29,432" in table.stdout
    assert not table.stdout.lstrip().startswith("{")
    # More rows than one page (10,000): every page, one header.
    models = _run("query", "models", "--format", "csv", "--data-dir", data_dir)
    lines = models.stdout.splitlines()
    assert models.returncode == 0 and lines[0].startswith('"id",') and len(lines) == 1 + 29_432
    assert sum(line.startswith('"id",') for line in lines) == 1
    as_json = json.loads(_run("query", "models", "--format", "json", "--data-dir", data_dir).stdout)
    assert len(as_json["rows"]) == 29_432 and as_json["next"] is None


def test_reading_commands_refuse_a_missing_data_dir_and_writing_ones_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for command in (["snapshots"], ["query", "share"], ["query", "snapshots"], ["serve"], ["delete", "x", "--yes"]):
        done = _run(*command, "--data-dir", str(missing))
        assert done.returncode == 1, (command, done.stderr)
        assert f"error: data dir {missing} does not exist" in done.stderr, command
    from_env = _run("snapshots", env={"HUBCENSUS_DATA_DIR": str(missing)})
    assert from_env.returncode == 1 and f"data dir {missing} does not exist" in from_env.stderr
    assert not missing.exists()
    created = tmp_path / "new" / "store"
    done = hubcensus("import", str(FIXTURES / "sample_300.jsonl.gz"), "--data-dir", str(created))
    assert done.returncode == 0 and len(list((created / "snapshots").iterdir())) == 1


def test_delete_takes_an_explicit_id_and_asks_first(tmp_path: Path) -> None:
    data_dir = str(tmp_path)
    hubcensus("import", str(BUNDLED), "--taken-at", "2022-02-21", "--data-dir", data_dir)
    hubcensus("import", str(BUNDLED), "--taken-at", "2022-02-22", "--data-dir", data_dir)
    older, newer = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    latest = _run("delete", "latest", "--yes", "--data-dir", data_dir)
    assert latest.returncode == 1 and "explicit snapshot id, not `latest`" in latest.stderr
    unknown = _run("delete", "20200101T000000Z-000000", "--yes", "--data-dir", data_dir)
    assert unknown.returncode == 1 and "no snapshot with id '20200101T000000Z-000000'" in unknown.stderr
    # Not on a terminal (a script, a pipe): only with --yes.
    piped = _run("delete", older, "--data-dir", data_dir, input="y\n")
    assert piped.returncode == 1 and "stdin is not a terminal; pass --yes" in piped.stderr
    # On a terminal it asks, and "no" deletes nothing.
    assert _on_a_terminal(["delete", older, "--data-dir", data_dir], answer="n").returncode == 1
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [older, newer]
    yes = _on_a_terminal(["delete", older, "--data-dir", data_dir], answer="y")
    assert yes.returncode == 0 and f"deleted snapshot {older} (taken 2022-02-21T00:00:00+00:00, import" in yes.stdout
    forced = _run("delete", newer, "--yes", "--data-dir", data_dir)
    assert forced.returncode == 0 and f"deleted snapshot {newer}" in forced.stdout
    assert list((tmp_path / "snapshots").iterdir()) == []


def _on_a_terminal(args: list[str], answer: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a pseudo-terminal as stdin, typing `answer` at its prompt."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubcensus", *args], stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        os.write(controller, f"{answer}\n".encode())
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    return subprocess.CompletedProcess(args, proc.returncode, stdout.decode(), stderr.decode())


def test_a_token_read_from_the_token_file_is_kept_out_of_the_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log filter knew only HF_TOKEN: a token from HF_TOKEN_PATH (the compose secret) or --token would have
    # been written as is by any log line that carried it.
    token_file = tmp_path / "hf_token"
    token_file.write_text("hf_from_the_file_0123456789\n")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    options.settings()
    record = logging.LogRecord(
        "hubcensus", logging.INFO, __file__, 1, "sent %s to %s", ("hf_from_the_file_0123456789", "x"), None
    )
    assert logs.redact_secrets(record) and record.getMessage() == "sent *** to x"


def test_a_snapshot_recorded_with_credentials_in_its_source_never_shows_them(tmp_path: Path) -> None:
    # meta.json written before sources were redacted (or by hand) may hold user:password@: the store redacts
    # it when it reads the file, so GET /v1/snapshots and `hubcensus snapshots` never show it.
    hubcensus("import", str(LIST_2024), "--data-dir", str(tmp_path))
    (meta_path,) = tmp_path.glob("snapshots/*/meta.json")
    meta_path.chmod(0o644)
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "kind": "ingest", "source": "http://user:hunter2-pw@hub.local:8080"}))
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        listed = client.get("/v1/snapshots").text
    assert "hunter2" not in listed and "http://***@hub.local:8080" in listed
    shown = hubcensus("snapshots", "--data-dir", str(tmp_path))
    assert shown.returncode == 0 and "hunter2" not in shown.stdout
