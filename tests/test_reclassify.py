"""Reclassifying stored snapshots: the same answers as a fresh import, atomically, on upgrade, from the CLI."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.reclassify import outdated, reclassify
from hubcensus.queries.datadir import DB_NAME, META_NAME
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, METHODS
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.data import OLD_ID, TAKEN_2022, TREES, old_release_store
from tests.helpers import hubcensus

# The names classifier 2026.11.1 kept of a repo's files: the new rules also read some it dropped (split GGUF
# parts, ONNX external data), which an old snapshot cannot have.
OLD_WEIGHT_FILE = re.compile(
    r"\.(bin|pt|pth|h5|hdf5|pb|pbtxt|tflite|msgpack|safetensors|onnx|gguf|ggml|keras|ckpt|pkl|pickle|joblib"
    r"|npz|npy|mlmodel|nemo|ot|model|tar|zip)$"
)


def _without_config(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("config", "transformersInfo", "transformers_info")}


def _old_files(siblings: list[Any] | None) -> list[str] | None:
    if siblings is None:
        return None
    names = [s["rfilename"] if isinstance(s, dict) else s for s in siblings]
    return [n for n in names if OLD_WEIGHT_FILE.search(re.sub(r"^RepoSibling\(rfilename='(.*?)'.*$", r"\1", n).lower())]


def models(path: Path) -> list[dict[str, Any]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows: list[dict[str, Any]] = con.sql("SELECT * FROM models ORDER BY id").to_arrow_table().to_pylist()
        return rows
    finally:
        con.close()


def test_an_older_release_snapshot_is_reclassified_like_a_fresh_import_of_its_facts(tmp_path: Path) -> None:
    data_dir = old_release_store(tmp_path / "old")
    old = SnapshotStore(data_dir).get(OLD_ID)
    assert old.classifier_version == "2026.11.1" and [m.id for m in outdated(data_dir)] == [OLD_ID]
    new = reclassify(data_dir, OLD_ID)
    assert new is not None and new.reclassified is not None
    assert (new.id, new.taken_at, new.models, new.classifier_version) == (
        old.id,
        old.taken_at,
        1_983,
        CLASSIFIER_VERSION,
    )
    assert new.reclassified.from_version == "2026.11.1"
    assert new.reclassified.missing_facts == [
        "model_type",
        "architectures",
        "auto_model",
        "weight_files kept by the filter of 2026.11.1 or before",
    ]
    assert new.reclassified.changed["tags"] == 0  # `tags` is the rule of 2021-22, unchanged
    assert new.reclassified.changed["inferred"] > 1_000  # most of these repos were `none`
    assert outdated(data_dir) == [] and reclassify(data_dir, OLD_ID) is None
    # The same facts, imported afresh by this release: the dump without what the old release did not keep (the
    # config facts, the file names its filter dropped).
    with gzip.open(TREES, "rt") as f:
        records = [json.loads(line) for line in f]
    stripped = tmp_path / "without-config.jsonl"
    stripped.write_text(
        "".join(json.dumps({**_without_config(r), "siblings": _old_files(r.get("siblings"))}) + "\n" for r in records)
    )
    fresh = import_dump(stripped, tmp_path / "fresh", taken_at=old.taken_at, max_bad_share=0.0)
    assert models(data_dir / "snapshots" / OLD_ID / DB_NAME) == models(
        tmp_path / "fresh" / "snapshots" / fresh.id / DB_NAME
    )


def test_reclassifying_gives_the_answers_of_a_fresh_import(tmp_path: Path) -> None:
    # A snapshot with every fact, whose framework columns an older classifier computed differently (here: none at
    # all): reclassified, every answer equals that of a fresh import of the same dump.
    data_dir = tmp_path / "data"
    fresh = import_dump(TREES, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    older = import_dump(TREES, data_dir, taken_at=TAKEN_2022.replace(day=20), max_bad_share=0.0)
    folder = data_dir / "snapshots" / older.id
    for name in (DB_NAME, META_NAME):
        (folder / name).chmod(0o644)
    con = duckdb.connect(str(folder / DB_NAME))
    con.execute("UPDATE models SET " + ", ".join(f"fw_{m} = 0" for m in METHODS))
    con.close()
    meta = json.loads((folder / META_NAME).read_text())
    (folder / META_NAME).write_text(json.dumps({**meta, "classifier_version": "2025.1.0"}))
    with TestClient(create_app(Settings(data_dir=data_dir))) as client:

        def answer(snapshot: str, route: str, **params: str) -> Any:
            body = client.get(route, params={"snapshot": snapshot, **params}).json()
            return body.get("rows"), body.get("total"), body["snapshot"]["classifier_version"]

        before = answer(older.id, "/v1/frameworks/share")
        assert before[1]["with_framework"] == 0 and before[2] == "2025.1.0"
        etag_before = client.get("/v1/frameworks/share", params={"snapshot": older.id}).headers["etag"]
        reclassified = reclassify(data_dir, older.id)
        assert reclassified is not None and reclassified.reclassified is not None
        assert reclassified.reclassified.missing_facts == []
        # The running API sees the new columns at once (the listing changed), under a new ETag.
        assert client.get("/v1/frameworks/share", params={"snapshot": older.id}).headers["etag"] != etag_before
        for method in METHODS:
            for route, params in (
                ("/v1/frameworks/share", {}),
                ("/v1/frameworks/trend", {"interval": "year"}),
                ("/v1/frameworks/share", {"frameworks": "pytorch,tensorflow", "by": "library_name"}),
                ("/v1/models", {"_size": "100"}),
            ):
                assert answer(older.id, route, method=method, **params) == answer(
                    fresh.id, route, method=method, **params
                )


def test_the_cli_reclassifies_what_is_outdated(tmp_path: Path) -> None:
    data_dir = old_release_store(tmp_path)
    done = hubcensus("reclassify", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert f"reclassified {OLD_ID}: classifier 2026.11.1 -> {CLASSIFIER_VERSION}" in done.stdout
    assert "facts it predates (null): model_type, architectures, auto_model" in done.stdout
    again = hubcensus("reclassify", "--data-dir", str(data_dir))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    forced = hubcensus("reclassify", OLD_ID, "--data-dir", str(data_dir))
    assert forced.returncode == 0 and f"reclassified {OLD_ID}" in forced.stdout
    unknown = hubcensus("reclassify", "nope", "--data-dir", str(data_dir))
    assert unknown.returncode == 1 and "no snapshot with id 'nope'" in unknown.stderr
    assert not any((data_dir / "tmp").iterdir()) or [p.name for p in (data_dir / "tmp").iterdir()] == [".lock"]


def test_the_worker_reclassifies_on_upgrade_before_its_first_run(tmp_path: Path) -> None:
    data_dir = old_release_store(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBCENSUS_", "HF_"))}
    worker = subprocess.Popen(
        [sys.executable, "-m", "hubcensus", "worker", "--schedule", "0 3 * * *", "--data-dir", str(data_dir)],
        env={**env, "HF_ENDPOINT": "http://127.0.0.1:9"},  # never asked: no run is due
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while SnapshotStore(data_dir).get(OLD_ID).classifier_version != CLASSIFIER_VERSION:
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not reclassify"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert "reclassified 1 snapshot(s)" in stderr


def test_a_reader_sees_the_old_snapshot_or_the_new_never_none(tmp_path: Path) -> None:
    # renameat2(RENAME_EXCHANGE): while the snapshot is swapped again and again, every listing holds it.
    data_dir = old_release_store(tmp_path)
    swapper = threading.Thread(target=lambda: [reclassify(data_dir, OLD_ID, force=True) for _ in range(5)])
    listings: list[bool] = []
    swapper.start()
    while swapper.is_alive():
        listings.append(any(entry.name == OLD_ID for entry in (data_dir / "snapshots").iterdir()))
    swapper.join()
    assert len(listings) > 10 and all(listings)
    assert SnapshotStore(data_dir).get(OLD_ID).classifier_version == CLASSIFIER_VERSION
    assert [p.name for p in (data_dir / "tmp").iterdir()] == [".lock"]  # no copy left behind
