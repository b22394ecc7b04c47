"""Other engines read the lake in place and count what the API answers: Spark (pyspark, `local[2]`, one session for
the module), DuckDB and Polars, over two real snapshots (the bundled 2022-02-21 crawl and the 2024-12-15 listing),
against `GET /v1/frameworks/share` over real HTTP (the ASGI transport). The README's snippets run here too."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, METHODS
from hubcensus.queries.lake import LAKE_DIR, TABLES
from hubcensus.service.app import create_app
from tests.data import BUNDLED, LIST_2024, ROOT, TAKEN_2022, TAKEN_2024

Counts = dict[tuple[str | None, str], int]
# pyspark 4.x checks the pandas version when a session starts, and warns about pandas 3; no pandas is used here.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SnapshotMeta]]:
    """A data dir with two snapshots, each published with its lake."""
    data_dir = tmp_path_factory.mktemp("lake-engines")
    first = import_dump(BUNDLED, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    second = import_dump(LIST_2024, data_dir, taken_at=TAKEN_2024, max_bad_share=0.0)
    return data_dir, [first, second]


@pytest.fixture(scope="module")
def api(store: tuple[Path, list[SnapshotMeta]]) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=store[0])), raise_server_exceptions=False) as client:
        yield client


def api_counts(client: TestClient, snapshot: str, method: str) -> Counts:
    """The API's share by task, as (task, bucket or combination) -> models, zeros left out."""
    counts: Counts = {}
    url: str | None = "/v1/frameworks/share"
    params: dict[str, str] | None = {"snapshot": snapshot, "method": method, "by": "pipeline_tag"}
    while url:
        answer = client.get(url, params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["snapshot"]["id"] == snapshot
        for row in body["rows"]:
            found = {"none": row["none"], "shared": row["shared"]}
            found |= {f"{fw}_only": n for fw, n in row["exclusive"].items()}
            found |= row["combinations"]
            counts |= {(row["group"], key): n for key, n in found.items() if n}
        url, params = body["next_url"], None
    return counts


def as_counts(rows: list[tuple[Any, ...]]) -> Counts:
    """(task, bucket or combination, models) rows as Counts."""
    return {(task, key): int(n) for task, key, n in rows if n}


# The same SQL in DuckDB and Spark but for the name of the list join: buckets, and the combinations of the shared
# models.
SHARE_FROM_MODELS = """
SELECT pipeline_tag, bucket_{m}, count(*) FROM models WHERE snapshot = '{s}' GROUP BY 1, 2
UNION ALL
SELECT pipeline_tag, {join}(frameworks_{m}, '+'), count(*) FROM models
WHERE snapshot = '{s}' AND bucket_{m} = 'shared' GROUP BY 1, 2
"""
SHARE_FROM_AGGREGATE = """
SELECT pipeline_tag, bucket, sum(models) FROM share_by_task WHERE snapshot = '{s}' AND method = '{m}' GROUP BY 1, 2
UNION ALL
SELECT pipeline_tag, {join}(frameworks, '+'), sum(models) FROM share_by_task
WHERE snapshot = '{s}' AND method = '{m}' AND bucket = 'shared' GROUP BY 1, 2
"""


# ------------------------------------------------------------------------------------------------------
# Spark
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session for the module (starting one costs seconds), small, without its web UI."""
    if shutil.which("java") is None:
        if os.environ.get("HUBCENSUS_REQUIRE_JAVA"):
            pytest.fail("java is required here (apt-get install openjdk-17-jre-headless)")
        pytest.skip("java is not installed (apt-get install openjdk-17-jre-headless); CI installs it")
    from pyspark.sql import SparkSession

    scratch = tmp_path_factory.mktemp("spark")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("hubcensus-lake")
        .config("spark.driver.memory", "512m")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.local.dir", str(scratch))
        .config("spark.sql.warehouse.dir", str(scratch / "warehouse"))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_counts_the_share_by_task_the_api_answers(
    spark: Any, store: tuple[Path, list[SnapshotMeta]], api: TestClient
) -> None:
    data_dir, snapshots = store
    lake = data_dir / LAKE_DIR
    spark.read.parquet(str(lake / "models")).createOrReplaceTempView("models")
    spark.read.parquet(str(lake / "share_by_task")).createOrReplaceTempView("share_by_task")
    for meta in snapshots:
        for method in METHODS:
            expected = api_counts(api, meta.id, method)
            assert expected, (meta.id, method)
            from_models = spark.sql(SHARE_FROM_MODELS.format(m=method, s=meta.id, join="array_join")).collect()
            assert as_counts([tuple(r) for r in from_models]) == expected, (meta.id, method)
            from_aggregate = spark.sql(SHARE_FROM_AGGREGATE.format(m=method, s=meta.id, join="array_join")).collect()
            assert as_counts([tuple(r) for r in from_aggregate]) == expected, (meta.id, method)


def test_spark_reads_every_table_of_the_whole_lake_with_hive_partitioning(
    spark: Any, store: tuple[Path, list[SnapshotMeta]]
) -> None:
    data_dir, snapshots = store
    for table in TABLES:
        frame = spark.read.parquet(str(data_dir / LAKE_DIR / table))
        types = dict(frame.dtypes)
        # The partitions, once each (a column in the files too would be refused or doubled), typed from the paths.
        assert (types["snapshot_date"], types["snapshot"]) == ("date", "string")
        assert [c for c in frame.columns if c in ("snapshot", "snapshot_date")] == ["snapshot_date", "snapshot"]
        rows = frame.groupBy("snapshot_date", "snapshot", "snapshot_id", "classifier_version").count().collect()
        found = {
            (r["snapshot_date"].isoformat(), r["snapshot"], r["snapshot_id"], r["classifier_version"]) for r in rows
        }
        assert found == {(m.taken_at.date().isoformat(), m.id, m.id, CLASSIFIER_VERSION) for m in snapshots}
        if table == "models":
            assert {r["snapshot"]: r["count"] for r in rows} == {m.id: m.models for m in snapshots}


def test_the_readme_spark_snippet_answers_like_the_api(
    spark: Any, store: tuple[Path, list[SnapshotMeta]], api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = run_snippet("Spark", store[0], monkeypatch)["share"]
    rows = [(r["pipeline_tag"], r["bucket"], r["models"]) for r in share.collect()]
    assert as_counts(rows) == buckets_only(api_counts(api, store[1][-1].id, "tags"))


# ------------------------------------------------------------------------------------------------------
# DuckDB and Polars
# ------------------------------------------------------------------------------------------------------


def test_duckdb_and_polars_read_the_lake_in_place_and_agree_with_the_api(
    store: tuple[Path, list[SnapshotMeta]], api: TestClient
) -> None:
    data_dir, snapshots = store
    lake = data_dir / LAKE_DIR
    join = "array_to_string"  # DuckDB's name of Spark's array_join
    con = duckdb.connect()
    for table in ("models", "share_by_task"):
        files = con.read_parquet(str(lake / table / "*" / "*" / "*.parquet"), hive_partitioning=True)
        files.create_view(table)
    models = pl.scan_parquet(lake / "models" / "**" / "*.parquet", hive_partitioning=True)
    assert models.collect_schema()["snapshot_date"] == pl.Date
    for meta in snapshots:
        for method in METHODS:
            expected = api_counts(api, meta.id, method)
            assert as_counts(con.sql(SHARE_FROM_MODELS.format(m=method, s=meta.id, join=join)).fetchall()) == expected
            assert (
                as_counts(con.sql(SHARE_FROM_AGGREGATE.format(m=method, s=meta.id, join=join)).fetchall()) == expected
            )
            one = models.filter(pl.col("snapshot") == meta.id)
            buckets = one.group_by("pipeline_tag", f"bucket_{method}").agg(pl.len()).collect().rows()
            combinations = (
                one.filter(pl.col(f"bucket_{method}") == "shared")
                .group_by("pipeline_tag", pl.col(f"frameworks_{method}").list.join("+"))
                .agg(pl.len())
                .collect()
                .rows()
            )
            assert as_counts(buckets + combinations) == expected, (meta.id, method)


def buckets_only(counts: Counts) -> Counts:
    """Counts without the combinations (what the README's snippets count)."""
    return {key: n for key, n in counts.items() if "+" not in key[1]}


def snippet(engine: str) -> str:
    """The README's snippet for an engine: the python block of the lake section that starts with `# <engine>`."""
    section = README.split("## The lake: Spark, DuckDB, Polars", 1)[1].split("\n## ", 1)[0]
    (code,) = [str(c) for c in re.findall(r"```python\n(.*?)```", section, re.S) if re.match(rf"# {engine}\b", c)]
    return code


def run_snippet(engine: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run a README snippet as a reader would: from a directory holding the data dir as `data/`."""
    workdir = data_dir.parent / f"reader-{engine}"
    workdir.mkdir(exist_ok=True)
    if not (workdir / "data").exists():
        (workdir / "data").symlink_to(data_dir)
    monkeypatch.chdir(workdir)
    code = snippet(engine)
    if engine == "Spark":
        # Spark's JVM resolves relative paths against the directory it started in, not this one.
        code = code.replace('"data/', f'"{workdir}/data/')
    namespace: dict[str, Any] = {}
    exec(compile(code, f"README.md ({engine})", "exec"), namespace)  # our own README's code
    return namespace


def test_the_readme_duckdb_and_polars_snippets_answer_like_the_api(
    store: tuple[Path, list[SnapshotMeta]], api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = buckets_only(api_counts(api, store[1][-1].id, "tags"))
    share = run_snippet("DuckDB", store[0], monkeypatch)["share"]
    assert as_counts(share.fetchall()) == expected
    share = run_snippet("Polars", store[0], monkeypatch)["share"]
    assert as_counts(share.rows()) == expected
