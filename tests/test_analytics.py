"""The analytics queries against direct computations on the same real records."""

from __future__ import annotations

import gzip
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.frameworks import FRAMEWORKS
from hubcensus.queries.history import breaks, why_not_comparable
from hubcensus.queries.sql import QueryTimeout, run, time_limit
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.data import BUNDLED, LIST_2024, LIST_2025, bucket_of
from tests.helpers import hubcensus

PLACEHOLDERS = ("2022-03-02T23:29:04", "2022-03-02T23:29:05")


def load_list(path: Path) -> list[dict[str, Any]]:
    """A real /api/models list response, one record per id (the last wins, as on import)."""
    with gzip.open(path, "rt") as f:
        return list({r["id"]: r for r in json.load(f)}.values())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three dated real snapshots: the 2022 crawl and two 2024-25 list responses."""
    d = tmp_path_factory.mktemp("analytics")
    for path, day in ((BUNDLED, "2022-02-21"), (LIST_2024, "2024-12-15"), (LIST_2025, "2025-01-14")):
        import_dump(path, d, taken_at=datetime.fromisoformat(day).replace(tzinfo=UTC), max_bad_share=0.0)
    return d


@pytest.fixture(scope="module")
def ids(data_dir: Path) -> dict[str, str]:
    """Snapshot ids by day taken."""
    return {m.taken_at.date().isoformat(): m.id for m in SnapshotStore(data_dir).snapshots()}


@pytest.fixture()
def api(data_dir: Path) -> Iterator[TestClient]:
    """The app over the three snapshots."""
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        yield c


def test_share_weighted_by_downloads(api: TestClient, ids: dict[str, str], crawl_2022: list[dict[str, Any]]) -> None:
    body = api.get(
        "/v1/frameworks/share", params={"snapshot": ids["2022-02-21"], "weight": "downloads", "method": "tags"}
    ).json()
    assert body["weight"] == "downloads"
    sums: Counter[str] = Counter()
    for rec in crawl_2022:
        sums[bucket_of(rec)] += rec.get("downloads") or 0
    total = body["total"]
    assert total["models"] == sum(sums.values())
    assert total["exclusive"] == {fw: sums[fw] for fw in FRAMEWORKS}
    assert total["shared"] == sums["shared"] and total["none"] == sums["none"]


def test_share_of_the_30_most_downloaded(
    api: TestClient, ids: dict[str, str], crawl_2022: list[dict[str, Any]]
) -> None:
    """What the 2021-22 analyses did: only the top 30 by downloads (ties by id)."""
    body = api.get(
        "/v1/frameworks/share",
        params={
            "snapshot": ids["2022-02-21"],
            "top": 30,
            "order": "downloads",
            "method": "tags",
            "frameworks": "pytorch,tensorflow",
        },
    ).json()
    top = sorted(crawl_2022, key=lambda r: (-(r.get("downloads") or -1), r["modelId"]))[:30]
    expected = Counter(bucket_of(r, universe=("pytorch", "tensorflow")) for r in top)
    assert body["total"]["models"] == 30
    assert body["total"]["exclusive"] == {"pytorch": expected["pytorch"], "tensorflow": expected["tensorflow"]}
    assert body["total"]["shared"] == expected["shared"]
    by_likes = api.get("/v1/frameworks/share", params={"snapshot": ids["2022-02-21"], "top": 30, "order": "likes"})
    assert by_likes.json()["total"]["models"] == 30 and by_likes.json() != body


def test_min_downloads_and_creation_window(api: TestClient, ids: dict[str, str]) -> None:
    records = load_list(LIST_2025)
    body = api.get("/v1/frameworks/share", params={"min_downloads": 1000}).json()
    assert body["snapshot"]["id"] == ids["2025-01-14"]
    assert body["total"]["models"] == sum(1 for r in records if (r.get("downloads") or 0) >= 1000)
    window = api.get("/v1/frameworks/share", params={"created_after": "2024-06-01", "created_before": "2024-12-01"})
    expected = [r for r in records if "2024-06-01" <= (r.get("createdAt") or "")[:10] < "2024-12-01"]
    assert window.json()["total"]["models"] == len(expected) > 0
    # The placeholder date is "unknown": it never passes a date filter, however wide.
    wide = api.get("/v1/frameworks/share", params={"created_after": "2000-01-01"}).json()
    known = [r for r in records if r.get("createdAt") and not r["createdAt"].startswith(PLACEHOLDERS)]
    assert wide["total"]["models"] == len(known) < len(records)


@pytest.mark.parametrize(("interval", "cut"), [("month", 7), ("year", 4), ("quarter", None)])
def test_trend_by_creation_period(api: TestClient, interval: str, cut: int | None) -> None:
    records = load_list(LIST_2025)
    body = api.get("/v1/frameworks/trend", params={"interval": interval, "method": "tags"}).json()

    def period(rec: dict[str, Any]) -> str:
        created = rec.get("createdAt")
        if not created or created.startswith(PLACEHOLDERS):
            return "unknown"
        if cut is None:
            return f"{created[:4]}-Q{(int(created[5:7]) - 1) // 3 + 1}"
        return str(created[:cut])

    expected: dict[str, Counter[str]] = {}
    for rec in records:
        expected.setdefault(period(rec), Counter())[bucket_of(rec)] += 1
    got = {row["period"]: row for row in body["rows"]}
    assert set(got) == set(expected)
    for p, counts in expected.items():
        assert got[p]["models"] == sum(counts.values())
        assert got[p]["exclusive"]["pytorch"] == counts["pytorch"] and got[p]["shared"] == counts["shared"]
    periods = [row["period"] for row in body["rows"]]
    assert periods[-1] == "unknown" and periods[:-1] == sorted(periods[:-1])
    assert "2022-03" not in periods or got["2022-03"]["models"] == sum(
        1
        for r in records
        if (r.get("createdAt") or "").startswith("2022-03") and not r["createdAt"].startswith(PLACEHOLDERS)
    )
    assert body["total"]["models"] == len(records)


def test_trend_on_a_snapshot_without_creation_dates(api: TestClient, ids: dict[str, str]) -> None:
    body = api.get("/v1/frameworks/trend", params={"snapshot": ids["2022-02-21"]}).json()
    assert [(r["period"], r["models"]) for r in body["rows"]] == [("unknown", 29_432)]


def test_history_across_snapshots(api: TestClient, ids: dict[str, str]) -> None:
    body = api.get("/v1/frameworks/history", params={"method": "tags", "frameworks": "pytorch,tensorflow"}).json()
    assert [r["snapshot"] for r in body["rows"]] == [ids["2022-02-21"], ids["2024-12-15"], ids["2025-01-14"]]
    for row in body["rows"]:
        one = api.get(
            "/v1/frameworks/share",
            params={"snapshot": row["snapshot"], "method": "tags", "frameworks": "pytorch,tensorflow"},
        ).json()
        assert {k: row[k] for k in one["total"]} == one["total"]
    ranged = api.get("/v1/frameworks/history", params={"from": "2024-01-01", "to": "2024-12-31"}).json()
    assert [r["snapshot"] for r in ranged["rows"]] == [ids["2024-12-15"]]
    grouped = api.get("/v1/frameworks/history", params={"by": "pipeline_tag", "from": "2024-12-01"}).json()
    per_snapshot = Counter(r["snapshot"] for r in grouped["rows"])
    assert set(per_snapshot) == {ids["2024-12-15"], ids["2025-01-14"]} and min(per_snapshot.values()) > 5
    bad = api.get("/v1/frameworks/history", params={"from": "2025-01-01", "to": "2024-01-01"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_parameter"


def test_diff_of_two_real_snapshots(api: TestClient, ids: dict[str, str]) -> None:
    old = {r["id"] for r in load_list(LIST_2024)}
    new = {r["id"] for r in load_list(LIST_2025)}
    body = api.get(f"/v1/snapshots/{ids['2024-12-15']}/diff/{ids['2025-01-14']}").json()
    assert (body["added"], body["removed"], body["common"]) == (len(new - old), len(old - new), len(new & old))
    added = api.get(
        f"/v1/snapshots/{ids['2024-12-15']}/diff/{ids['2025-01-14']}/models",
        params={"change": "added", "_size": 10_000},
    ).json()
    assert {r["id"] for r in added["rows"]} == new - old
    assert all(r["before"] is None and r["after"] for r in added["rows"])
    # Deltas: every count of b minus a, per group.
    a_share = api.get("/v1/frameworks/share", params={"snapshot": ids["2024-12-15"]}).json()
    b_share = api.get("/v1/frameworks/share", params={"snapshot": ids["2025-01-14"]}).json()
    a_rows = {r["group"]: r["models"] for r in a_share["rows"]}
    b_rows = {r["group"]: r["models"] for r in b_share["rows"]}
    deltas = {r["group"]: r["models"] for r in body["rows"]}
    assert deltas == {g: b_rows.get(g, 0) - a_rows.get(g, 0) for g in a_rows.keys() | b_rows.keys()}


def test_diff_counts_changed_framework_sets(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    before = crawl_2022[:1000]
    after = [dict(r) for r in crawl_2022[:1000]]
    changed = [i for i, r in enumerate(after) if "pytorch" in (r.get("tags") or [])][:7]
    for i in changed:
        after[i]["tags"] = [t for t in after[i]["tags"] if t != "pytorch"] + ["tf"]
    after = [*after[5:], {"modelId": "new/model", "tags": ["jax"]}]
    for name, recs, day in (("a.jsonl", before, 1), ("b.jsonl", after, 2)):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in recs))
        import_dump(tmp_path / name, tmp_path / "d", taken_at=datetime(2022, 3, day, tzinfo=UTC), max_bad_share=0)
    a, b = sorted(m.id for m in SnapshotStore(tmp_path / "d").snapshots())
    with TestClient(create_app(Settings(data_dir=tmp_path / "d"))) as c:
        body = c.get(f"/v1/snapshots/{a}/diff/{b}").json()
        still_there = [i for i in changed if i >= 5]
        assert (body["added"], body["removed"]) == (1, 5)
        assert body["changed"]["tags"] == len(still_there)
        rows = c.get(f"/v1/snapshots/{a}/diff/{b}/models", params={"change": "changed", "method": "tags"}).json()
        assert sorted(r["id"] for r in rows["rows"]) == sorted(crawl_2022[i]["modelId"] for i in still_there)
        assert all("tensorflow" in r["after"] for r in rows["rows"])


def test_dimensions(api: TestClient, ids: dict[str, str], crawl_2022: list[dict[str, Any]]) -> None:
    snap = {"snapshot": ids["2022-02-21"]}
    tasks = api.get("/v1/tasks", params=snap).json()["rows"]
    assert {r["value"]: r["models"] for r in tasks} == dict(Counter(r.get("pipeline_tag") for r in crawl_2022))
    libraries = api.get("/v1/libraries", params=snap).json()["rows"]
    assert sum(r["models"] for r in libraries) == 29_432
    authors = api.get("/v1/authors", params={**snap, "top": 5}).json()
    expected = Counter(r["modelId"].split("/")[0] for r in crawl_2022 if "/" in r["modelId"]).most_common(5)
    assert [(r["value"], r["models"]) for r in authors["rows"]] == expected
    assert authors["next"] is None
    models = [r["models"] for r in tasks]
    assert models == sorted(models, reverse=True)


def test_models_list_and_detail(api: TestClient, ids: dict[str, str], crawl_2022: list[dict[str, Any]]) -> None:
    snap = ids["2022-02-21"]
    share = api.get("/v1/frameworks/share", params={"snapshot": snap, "method": "files"}).json()
    only_tf = api.get(
        "/v1/models", params={"snapshot": snap, "method": "files", "bucket": "tensorflow_only", "_size": 5000}
    ).json()
    assert len(only_tf["rows"]) == share["total"]["exclusive"]["tensorflow"]
    assert {r["frameworks"] for r in only_tf["rows"]} == {"tensorflow"}
    found = api.get("/v1/models", params={"snapshot": snap, "q": "DistilBERT-base-uncased", "_sort": "id"}).json()
    assert found["rows"] and all("distilbert-base-uncased" in r["id"].lower() for r in found["rows"])
    assert [r["id"] for r in found["rows"]] == sorted(r["id"] for r in found["rows"])
    by_downloads = api.get("/v1/models", params={"snapshot": snap, "_size": 50}).json()["rows"]
    downloads = [r["downloads"] or 0 for r in by_downloads]
    most = max(crawl_2022, key=lambda r: r.get("downloads") or 0)
    assert downloads == sorted(downloads, reverse=True) and by_downloads[0]["id"] == most["modelId"]
    detail = api.get("/v1/models/bert-base-uncased", params={"snapshot": snap}).json()["model"]
    assert detail["frameworks"]["tags"]["frameworks"] == ["pytorch", "tensorflow", "jax"]
    flax = next(e for e in detail["frameworks"]["files"]["evidence"] if e["framework"] == "jax")
    assert (flax["rule"], flax["matched"], flax["convention"]) == (
        "file.flax_model",
        ["file flax_model.msgpack"],
        False,
    )
    assert flax["reason"] == "transformers' and diffusers' Flax weights."
    # Loadable: bert has PyTorch, TensorFlow and Flax implementations in transformers 4.x.
    loadable = {e["rule"] for e in detail["frameworks"]["loadable"]["evidence"]}
    assert {"transformers4.pytorch", "transformers4.tensorflow", "transformers4.jax"} <= loadable
    assert detail["model_type"] == "bert" and detail["architectures"] == ["BertForMaskedLM"]
    namespaced = api.get("/v1/models/google/electra-small-discriminator", params={"snapshot": snap})
    assert namespaced.status_code == 200 and namespaced.json()["model"]["author"] == "google"
    missing = api.get("/v1/models/no/such-model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    bad = api.get("/v1/models", params={"bucket": "mxnet_only"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_parameter"
    bad_sort = api.get("/v1/models", params={"_sort": "sha"})
    assert bad_sort.status_code == 422


def test_query_command(data_dir: Path, ids: dict[str, str]) -> None:
    table = hubcensus(
        "query",
        "share",
        "--method",
        "tags",
        "--frameworks",
        "pytorch,tensorflow",
        "--top",
        "30",
        "--snapshot",
        ids["2022-02-21"],
        "--data-dir",
        str(data_dir),
    )
    assert table.returncode == 0, table.stderr
    assert f"snapshot {ids['2022-02-21']} · method tags" in table.stdout and "fill-mask" in table.stdout
    csv = hubcensus("query", "tasks", "--format", "csv", "--data-dir", str(data_dir))
    assert csv.returncode == 0 and csv.stdout.splitlines()[0] == '"value","models","downloads"'
    as_json = hubcensus(
        "query",
        "diff",
        "--a",
        ids["2024-12-15"],
        "--b",
        ids["2025-01-14"],
        "--format",
        "json",
        "--data-dir",
        str(data_dir),
    )
    assert json.loads(as_json.stdout)["added"] == 1_861
    bad = hubcensus("query", "share", "--method", "weights", "--data-dir", str(data_dir))
    assert bad.returncode == 1 and "[invalid_parameter]" in bad.stderr
    unknown = hubcensus("query", "nonsense", "--data-dir", str(data_dir))
    assert unknown.returncode == 2 and "unknown query" in unknown.stderr


def test_query_time_limit_answers_504(tmp_path: Path) -> None:
    """A query past the time limit is stopped and answered in the envelope, never left to hang."""
    snap = tmp_path / "snapshots" / "20240101T000000Z-big000"
    snap.mkdir(parents=True)
    con = duckdb.connect(str(snap / "snapshot.duckdb"))
    con.execute("""CREATE TABLE models AS SELECT 'org' || (i % 5000) || '/model-' || i AS id, 'org' AS author,
        NULL::TIMESTAMP AS created_at, NULL::TIMESTAMP AS last_modified, (i * 7919) % 100000 AS downloads,
        0::BIGINT AS likes, ['pytorch'] AS tags, 'fill-mask' AS pipeline_tag, 'transformers' AS library_name,
        false AS private, 'false' AS gated, NULL::VARCHAR[] AS weight_files,
        1::UTINYINT AS fw_tags, 1::UTINYINT AS fw_files, 1::UTINYINT AS fw_inferred FROM range(3000000) t(i)""")
    con.close()
    meta = {
        "id": snap.name,
        "taken_at": "2024-01-01T00:00:00Z",
        "source": "synthetic",
        "kind": "import",
        "models": 3_000_000,
        "bad_records": 0,
        "duration_s": 0,
        "classifier_version": "x",
        "published_at": "2024-01-01T00:00:00Z",
    }
    (snap / "meta.json").write_text(json.dumps(meta))
    with TestClient(create_app(Settings(data_dir=tmp_path, query_timeout=0.005))) as c:
        r = c.get("/v1/models", params={"q": "model-29", "_sort": "-downloads"})
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "query_timeout"
        assert c.get("/healthz").status_code == 200  # the worker thread is free again


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_universe_of_one_framework(api: TestClient, ids: dict[str, str], fw: str) -> None:
    """ "How many models ship PyTorch at all?" is a valid question: every route and format answers it."""
    records = load_list(LIST_2025)
    buckets = Counter(bucket_of(r, "inferred", (fw,)) for r in records)
    body = api.get("/v1/frameworks/share", params={"frameworks": fw}).json()
    assert body["frameworks"] == [fw]
    # Nothing can be shared within one framework; the bucket keeps every key, `combinations` empty.
    assert body["total"] == {
        "models": len(records),
        "with_framework": buckets[fw],
        "none": buckets["none"],
        "shared": 0,
        "exclusive": {fw: buckets[fw]},
        "combinations": {},
        "pct": {f"{fw}_only": 100.0 if buckets[fw] else None, "shared": 0.0 if buckets[fw] else None},
    }
    assert all(r["shared"] == 0 and r["combinations"] == {} for r in body["rows"])
    # A trailing comma names the same universe: the very same answer.
    assert api.get("/v1/frameworks/share", params={"frameworks": f"{fw},"}).json()["total"] == body["total"]
    columns = ["models", "with_framework", "none", "shared", f"exclusive.{fw}", f"pct.{fw}_only", "pct.shared"]
    a, b = ids["2024-12-15"], ids["2025-01-14"]
    nothing = {"pipeline_tag": "no-such-task"}
    routes: dict[str, tuple[list[str], dict[str, str]]] = {
        "/v1/frameworks/share": (["group"], nothing),
        "/v1/frameworks/trend": (["period"], nothing),
        "/v1/frameworks/history": (["snapshot", "taken_at"], {"from": "2100-01-01"}),
        f"/v1/snapshots/{a}/diff/{b}": (["group"], {}),
    }
    for route, (keys, empty) in routes.items():
        charts = ("vl", "svg", "png") if "diff" not in route else ()
        for fmt in ("json", "csv", "ndjson", "parquet", *charts):
            r = api.get(route, params={"frameworks": fw, "_format": fmt})
            assert r.status_code == 200, (route, fmt, r.text[:300])
        # The flat columns depend on the universe only: the same with rows and with none.
        for extra in ({}, empty):
            params = {"frameworks": fw, **extra}
            csv_header = api.get(route, params={**params, "_format": "csv"}).text.splitlines()[0]
            assert csv_header.replace('"', "").split(",") == [*keys, *columns], (route, extra)
            parquet = pq.read_table(io.BytesIO(api.get(route, params={**params, "_format": "parquet"}).content))
            assert parquet.column_names == [*keys, *columns], (route, extra)


def test_query_command_with_one_framework(data_dir: Path) -> None:
    done = hubcensus("query", "share", "--frameworks", "pytorch", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "exclusive.pytorch" in done.stdout


def test_history_marks_the_snapshots_that_are_not_one_series(api: TestClient, ids: dict[str, str]) -> None:
    """The 2022 crawl (29,432 models), the 2024-12-15 list (1,319) and the 2025-01-14 list (3,180) cover
    different populations: each step is marked, with its reason."""
    body = api.get("/v1/frameworks/history").json()
    assert body["not_comparable"] == [
        {
            "before": ids["2022-02-21"],
            "after": ids["2024-12-15"],
            "reasons": ["model counts differ by a factor of 22.3 (29,432 and 1,319)"],
        },
        {
            "before": ids["2024-12-15"],
            "after": ids["2025-01-14"],
            "reasons": ["model counts differ by a factor of 2.4 (1,319 and 3,180)"],
        },
    ]
    one = api.get("/v1/frameworks/history", params={"from": "2025-01-01"}).json()
    assert one["not_comparable"] == [] and len(one["rows"]) == 1


def _meta(**changes: Any) -> SnapshotMeta:
    base = {
        "id": "a",
        "taken_at": datetime(2025, 1, 1, tzinfo=UTC),
        "source": "https://huggingface.co",
        "kind": "ingest",
        "models": 1_000_000,
        "bad_records": 0,
        "duration_s": 1.0,
        "classifier_version": "2026.11.1",
        "published_at": datetime(2025, 1, 1, tzinfo=UTC),
        "params": {"limit": None, "filter": [], "expand": ["tags"]},
    }
    return SnapshotMeta.model_validate({**base, **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"models": 1_900_000}, None),  # growth within the factor
        ({"models": 2_100_000}, "model counts differ by a factor of 2.1 (1,000,000 and 2,100,000)"),
        ({"models": 0}, "model counts differ (one is empty) (1,000,000 and 0)"),
        ({"kind": "import", "source": "dump.jsonl"}, "an ingest and an import"),
        ({"source": "http://mirror"}, "ingested from https://huggingface.co and http://mirror"),
        ({"params": {"limit": 1000, "filter": [], "expand": ["tags"]}}, "ingested with different limits or filters"),
        ({"params": {"limit": None, "filter": ["gguf"], "expand": ["tags"]}}, "ingested with different limits"),
        ({"classifier_version": "2027.1.1"}, "classifier versions 2026.11.1 and 2027.1.1"),
    ],
)
def test_why_not_comparable(changes: dict[str, Any], reason: str | None) -> None:
    a, b = _meta(), _meta(id="b", taken_at=datetime(2025, 2, 1, tzinfo=UTC), **changes)
    reasons = why_not_comparable(a, b)
    if reason is None:
        assert reasons == [] and breaks([b, a]) == []
    else:
        assert len(reasons) == 1 and reasons[0].startswith(reason)
        (found,) = breaks([b, a])  # in time order, whatever order they come in
        assert (found.before.id, found.after.id, found.reasons) == ("a", "b", reasons)
    # Imports come from different files by nature: the file name alone is no reason.
    assert why_not_comparable(_meta(kind="import", source="x.jsonl"), _meta(kind="import", source="y.jsonl")) == []


def test_a_time_limit_that_passes_before_the_query_starts_still_stops_it() -> None:
    """DuckDB drops an interrupt sent before a statement starts; under load a short limit can pass that early.

    With a limit of a microsecond the deadline passes while the statement is still being prepared, every time
    in practice: the query (about 4 s) must still be stopped, not run to its end.
    """
    con = duckdb.connect()
    for _ in range(5):
        started = time.monotonic()
        with time_limit(1e-6), pytest.raises(QueryTimeout):
            run(con, "SELECT count(*) FROM range(300000000) t(i) WHERE i % 7 = 3")
        assert time.monotonic() - started < 2
    assert run(con, "SELECT 42 AS answer").to_pylist() == [{"answer": 42}]  # the connection works after
