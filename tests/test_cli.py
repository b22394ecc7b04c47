"""The `hubcensus` command as a user runs it: real processes, real files, real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import BUNDLED, FIXTURES
from tests.helpers import free_port, hubcensus
from tests.hubserver import HubServer


def test_import_then_list(tmp_path: Path) -> None:
    done = hubcensus(
        "import",
        str(FIXTURES / "rimel_2025-01-14_list.json.gz"),
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


def test_demo_imports_once_and_serves(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "hubcensus", "demo", "--port", str(port), "--data-dir", str(tmp_path)]
    for run in range(2):  # the second start finds the bundled snapshot and does not import again
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            body = _wait_for(f"http://127.0.0.1:{port}/v1/frameworks/share?method=tags&frameworks=pytorch,tensorflow")
            assert body["total"]["models"] == 29_432
            assert body["total"]["pct"] == {"pytorch_only": 90.54, "tensorflow_only": 1.39, "shared": 8.07}
        finally:
            proc.terminate()
            output = proc.communicate(timeout=10)[0]
        assert ("importing the bundled crawl" in output) == (run == 0), output
    assert len(list((tmp_path / "snapshots").iterdir())) == 1


def _wait_for(url: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            response = httpx.get(url)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.2)
