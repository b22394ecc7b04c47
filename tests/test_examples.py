"""examples/notebook.py, run for real as a script against a served data dir, as a reader would run it: against
`hubcensus demo` itself (what `make demo` serves: the bundled crawl only), and against a store of two snapshots.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.store import SnapshotStore
from tests.data import BUNDLED, LIST_2024, ROOT, TAKEN_2022, TAKEN_2024, bucket_of
from tests.helpers import free_port, hubcensus_server, serving

NOTEBOOK = ROOT / "examples" / "notebook.py"
UNIVERSE = ("pytorch", "tensorflow")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """The bundled 2022 crawl and the 2024-12-15 listing in one data dir, served by uvicorn on loopback.

    Yields the URL, the data dir and the id of the newest (2024) snapshot.
    """
    data_dir = tmp_path_factory.mktemp("examples-data")
    import_dump(BUNDLED, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    latest = import_dump(LIST_2024, data_dir, taken_at=TAKEN_2024, max_bad_share=0.0)
    with serving(data_dir) as url:
        yield url, data_dir, latest.id


@pytest.fixture(scope="module")
def make_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """`hubcensus demo` for real, as `make demo` runs it: it imports the bundled crawl into an empty data dir
    and serves it. Yields the URL, the data dir and the snapshot id."""
    workdir = tmp_path_factory.mktemp("make-demo")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with hubcensus_server(["demo", "--port", str(port), "--data-dir", "data"], url, workdir / "demo.log"):
        (snapshot,) = SnapshotStore(workdir / "data").snapshots()
        yield url, workdir / "data", snapshot.id


def run_notebook(url: str, data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBCENSUS_")}
    return subprocess.run(
        [sys.executable, str(NOTEBOOK)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,  # not the repository: the script must not depend on where it is run from
        env={**env, "HUBCENSUS_URL": url, "HUBCENSUS_DATA_DIR": str(data_dir)},
    )


def buckets_of(records: list[dict[str, Any]]) -> Counter[str]:
    """Models per bucket (tags, PyTorch vs TensorFlow), computed here from the raw records, model by model
    (one per id): the expected figures come from the data, not from the code under test."""
    unique = {r.get("id") or r.get("modelId"): r for r in records}
    return Counter(bucket_of(r, "tags", UNIVERSE) for r in unique.values())


def summary(records: list[dict[str, Any]]) -> str:
    """The script's one-line summary of a snapshot."""
    buckets = buckets_of(records)
    models = sum(buckets.values())
    with_framework = models - buckets["none"]

    def pct(n: int) -> str:
        return f"{100 * n / with_framework:.2f}"

    return (
        f"{models:,} models, PyTorch-only {pct(buckets['pytorch'])} %, "
        f"TensorFlow-only {pct(buckets['tensorflow'])} %, shared {pct(buckets['shared'])} %"
    )


HEADLINE_2022 = "2022-02-21: 29,432 models, PyTorch-only 90.54 %, TensorFlow-only 1.39 %, shared 8.07 %"


def test_notebook_runs_against_make_demo(
    make_demo: tuple[str, Path, str], crawl_2022: list[dict[str, Any]], tmp_path: Path
) -> None:
    # What a newcomer runs first: `make demo` in one terminal, the notebook in another. The shared-bucket
    # models list has pages whose `downloads` are all null (page 16 at 100 a page): the notebook must still
    # stack every page.
    url, data_dir, snapshot = make_demo
    done = run_notebook(url, data_dir, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert f"service {url}: 1 snapshot(s), latest {snapshot}" in out
    assert f"pinned snapshot {snapshot} (taken 2022-02-21T00:00:00Z, 29,432 models)" in out
    assert summary(crawl_2022) == HEADLINE_2022.split(": ", 1)[1]
    for part in ("[service]", "[in-process]"):
        assert f"{part} {HEADLINE_2022}" in out.splitlines()
    assert "[in-process] agrees with the service: top 30 totals are identical" in out
    shared = buckets_of(crawl_2022)["shared"]
    assert shared > 1500  # more than 15 pages of 100: the all-null page is among them
    assert f"[polars] {shared:,} models ship both PyTorch and TensorFlow weights (all pages)" in out


def test_every_parquet_page_of_a_feed_has_the_same_types(make_demo: tuple[str, Path, str]) -> None:
    # The typed feed: a Parquet page states its columns' types, so pages stack whatever their values. The
    # same pages as CSV carry no types: polars infers them page by page, and a page whose `downloads` are
    # all null reads as text (why the notebook pages with Parquet).
    url, _, snapshot = make_demo
    params: dict[str, str | int] = {
        "snapshot": snapshot,
        "method": "tags",
        "frameworks": "pytorch,tensorflow",
        "bucket": "shared",
        "_size": 100,
    }

    def pages(fmt: str) -> list[pl.DataFrame]:
        frames = []
        with httpx.Client(timeout=60) as http:
            response = http.get(f"{url}/v1/models", params={**params, "_format": fmt}).raise_for_status()
            while True:
                body = io.BytesIO(response.content)
                frames.append(pl.read_parquet(body) if fmt == "parquet" else pl.read_csv(body))
                if "next" not in response.links:
                    return frames
                response = http.get(response.links["next"]["url"]).raise_for_status()

    parquet = pages("parquet")
    assert len(parquet) > 15
    assert any(page["downloads"].null_count() == page.height for page in parquet), "no all-null page any more"
    assert all(page.schema == parquet[0].schema for page in parquet)
    assert parquet[0].schema["downloads"] == pl.Int64
    assert parquet[0].schema["created_at"] == pl.Datetime("us", "UTC")
    assert pl.concat(parquet).height == sum(page.height for page in parquet)
    # The same rows as CSV: the reason above, shown (if polars ever types an all-null CSV column, this says so).
    assert len({page.schema["downloads"] for page in pages("csv")}) == 2


def test_notebook_runs_against_a_service_and_its_files(
    served: tuple[str, Path, str], crawl_2022: list[dict[str, Any]], tmp_path: Path
) -> None:
    url, data_dir, latest = served
    done = run_notebook(url, data_dir, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout

    assert f"service {url}: 2 snapshot(s), latest {latest}" in out
    assert f"pinned snapshot {latest} (taken 2024-12-15T00:00:00Z, 1,319 models)" in out

    # The README's headline figure, over HTTP (history feed) and in-process (snapshot file) alike.
    headline = HEADLINE_2022
    assert summary(crawl_2022) == headline.split(": ", 1)[1]
    with gzip.open(LIST_2024, "rt") as f:
        listing_2024: list[dict[str, Any]] = json.load(f)
    expected_2024 = f"2024-12-15: {summary(listing_2024)}"
    for part in ("[service]", "[in-process]"):
        lines = [line for line in out.splitlines() if line.startswith(part)]
        assert f"{part} {headline}" in lines and f"{part} {expected_2024}" in lines, lines

    # In-process and over HTTP agree (the script asserts it, and says so).
    assert "[in-process] top 30: 30 models" in out
    assert "[in-process] agrees with the service: top 30 totals are identical" in out
    # polars followed every page of the models feed (100 rows a page): as many as the data hold.
    both = buckets_of(listing_2024)["shared"]
    assert f"[polars] {both} models ship both PyTorch and TensorFlow weights (all pages)" in out
    assert "[polars] share by task, from snapshot " + latest in out
    # Each feed printed something.
    for heading in ("share by task", "the 30 most downloaded models", "trend by year", "the most downloaded models"):
        assert f"[pandas] {heading}" in out
    assert not done.stderr.strip() or "Traceback" not in done.stderr


def test_notebook_says_what_is_missing_without_snapshots(served: tuple[str, Path, str], tmp_path: Path) -> None:
    # Part (b) needs the files: pointed at an empty store it stops with a clear message.
    url, _, _ = served
    done = run_notebook(url, tmp_path / "empty", tmp_path)
    assert done.returncode == 1
    assert "no snapshot in" in done.stderr and "HUBCENSUS_DATA_DIR" in done.stderr
