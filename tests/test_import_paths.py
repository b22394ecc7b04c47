"""DuckDB's JSON reader (ingest.duckread) and the exact Python reader must give the same snapshot.

The fast reader only claims records whose every field has the plain Hub shape; these tests check
that whatever it claims it converts exactly as `HubModelRecord` does, that it leaves everything
else to the exact reader, and that `import_dump` gives identical snapshots either way on every
real fixture and on dumps with bad records, repeated ids and broken syntax.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hubcensus.ingest.duckread import rows_sql
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.progress import Progress
from hubcensus.ingest.records import BadRecord, parse_record
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.store import SnapshotStore
from tests.data import BUNDLED, FIXTURES, TAKEN_2022, read_jsonl_gz

BASE: dict[str, Any] = {
    "id": "org/model",
    "author": "org",
    "createdAt": "2024-03-08T07:40:01.000Z",
    "lastModified": "2024-03-31T07:42:28.000Z",
    "downloads": 88,
    "likes": 0,
    "tags": ["transformers", "pytorch", "tf"],
    "pipeline_tag": "text-generation",
    "library_name": "transformers",
    "private": False,
    "gated": False,
    "siblings": [{"rfilename": "pytorch_model.bin"}, {"rfilename": "README.md"}, {"rfilename": "tf_model.h5"}],
}

SCALAR_VALUES: list[Any] = [
    None, "", " ", "x", "ünï/cødé", "a\\/b", 0, 5, -3, 2**63, 5.0, 5.5, 1e20, True, False, [], ["a"], {}, {"a": 1},
    "5", " 5 ", "5.0", "true", "yes", "0",
    "2022-03-02T23:29:04.000Z", "2022-03-02T23:29:04Z", "2022-03-02T23:29:04+02:00", "2022-03-02T23:29:04",
    "2022-03-02T23:29:04.123456Z", "2022-03-02 23:29:04", "2022-03-02", "2022-02-30T00:00:00Z",
    "2022-03-02T24:00:00Z", "0000-01-01T00:00:00Z", 1700000000, 1700000000000,
]  # fmt: skip
FIELDS = [
    "id", "modelId", "author", "createdAt", "created_at", "lastModified", "last_modified", "downloads", "likes",
    "pipeline_tag", "library_name", "private", "gated",
]  # fmt: skip
TAG_LISTS: list[Any] = [None, [], ["pytorch"], ["a", 1], ["a", None], ["a", True], [["a"]], [{"a": 1}], ["\u00e9\\n"]]
SIBLING_LISTS: list[Any] = [
    None, [], [{"rfilename": "a/PYTORCH_MODEL.BIN"}], [{"rfilename": "x.bin", "size": 3, "lfs": {"a": 1}}],
    [{"rfilename": 5}], [{"rfilename": None}], [{"x": 1}], [None], [{"rfilename": ["a.bin"]}],
    [{"rfilename": "flax_model.msgpack"}, {"rfilename": "model.safetensors"}],
]  # fmt: skip


def _variants() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [dict(BASE)]
    for field in FIELDS:
        for value in SCALAR_VALUES:
            rec = dict(BASE)
            if field == "modelId":
                del rec["id"]
            if field in ("created_at", "last_modified"):
                del rec[{"created_at": "createdAt", "last_modified": "lastModified"}[field]]
            rec[field] = value
            out.append(rec)
    for tags in TAG_LISTS:
        out.append({**BASE, "tags": tags})
    for siblings in SIBLING_LISTS:
        out.append({**BASE, "siblings": siblings})
    out.append({"id": None, "modelId": "legacy-id"})  # null is absent: the modelId counts
    out.append({"modelId": "org/2022-shape", "tags": ["jax"], "siblings": [{"rfilename": "flax_model.msgpack"}]})
    out.append({})
    return out


def _python_row(rec: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return parse_record(rec)
    except BadRecord:
        return None


def test_every_row_the_fast_reader_claims_is_the_row_the_exact_reader_makes(tmp_path: Path) -> None:
    variants = _variants()
    path = tmp_path / "matrix.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in variants))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cur = con.execute(rows_sql("newline_delimited", "none"), [str(path)])
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert len(rows) == len(variants)
    claimed = 0
    for rec, row in zip(variants, rows, strict=True):
        if row["id"] is None:
            assert all(v is None for v in row.values()), rec  # an unclaimed record leaves nothing behind
            continue
        claimed += 1
        assert _python_row(rec) == row, rec
    # The fast reader must claim the common shapes, or the comparison above proves nothing.
    assert rows[0]["id"] == "org/model" and claimed > 150


@pytest.mark.parametrize(
    ("field", "value", "plain"),
    [
        ("downloads", 5, True),
        ("downloads", "5", False),  # pydantic reads "5" as 5: left to it
        ("downloads", 5.0, False),
        ("id", 5, False),
        ("createdAt", "2022-03-02T23:29:04+02:00", True),
        ("createdAt", 1700000000, False),
        ("createdAt", "2022-02-30T00:00:00Z", False),
        ("private", "yes", False),
        ("gated", "manual", True),
        ("tags", ["a", 1], False),
        ("siblings", [{"rfilename": 5}], False),
    ],
)
def test_what_the_fast_reader_leaves_to_the_exact_one(tmp_path: Path, field: str, value: Any, plain: bool) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({**BASE, field: value}) + "\n")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    (row,) = con.execute(f"SELECT id FROM ({rows_sql('newline_delimited', 'none')})", [str(path)]).fetchall()
    assert (row[0] is not None) == plain


def _snapshot(data_dir: Path, meta: SnapshotMeta) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    con = duckdb.connect(str(SnapshotStore(data_dir).path_of(meta.id)), read_only=True)
    try:
        models = con.execute("SELECT * FROM models ORDER BY id").fetchall()
        bad = con.execute("SELECT position, reason FROM bad_records ORDER BY position").fetchall()
    finally:
        con.close()
    return models, bad


def _both(path: Path, tmp_path: Path, max_bad_share: float = 1.0) -> tuple[SnapshotMeta, SnapshotMeta]:
    fast = import_dump(path, tmp_path / "auto", taken_at=TAKEN_2022, max_bad_share=max_bad_share)
    exact = import_dump(path, tmp_path / "python", taken_at=TAKEN_2022, max_bad_share=max_bad_share, reader="python")
    assert _snapshot(tmp_path / "auto", fast) == _snapshot(tmp_path / "python", exact)
    keys = ("models", "bad_records", "duplicates", "bad_reasons")
    assert [getattr(fast, k) for k in keys] == [getattr(exact, k) for k in keys]
    assert exact.reader == "python"
    return fast, exact


FILES = [BUNDLED, *sorted(FIXTURES.glob("*.json*.gz"))]  # the real dumps (not the snapshot tarball)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_both_readers_give_the_same_snapshot_of_every_real_dump(path: Path, tmp_path: Path) -> None:
    fast, _ = _both(path, tmp_path)
    # DuckDB alone reads dumps without repeated ids; the 2024-25 list responses repeat ids (pages
    # overlap), and the ModelInfo dump writes siblings as strings, which DuckDB refuses outright.
    expected = "python" if "modelinfo" in path.name else "duckdb+python" if fast.duplicates else "duckdb"
    assert fast.reader == expected


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


GOOD = [json.dumps({**BASE, "id": f"org/m{i}"}) for i in range(20)]
# Nested past what json.loads decodes (about 1,000 levels), in a field a snapshot reads and in ones it does not.
DEEP_TAGS = json.dumps({**BASE, "id": "x/deep", "tags": 0}).replace('"tags": 0', '"tags": ' + "[" * 2000 + "]" * 2000)
DEEP_CARD = json.dumps({**BASE, "id": "x/card"})[:-1] + ', "cardData": ' + '{"a": ' * 2000 + "1" + "}" * 2000 + "}"
DEEP_SIBLING = json.dumps({**BASE, "id": "x/sib", "siblings": [{"rfilename": "a.bin", "lfs": 0}]}).replace(
    '"lfs": 0', '"lfs": ' + "[" * 2000 + "]" * 2000
)


@pytest.mark.parametrize(
    ("name", "lines", "reader"),
    [
        ("clean", GOOD, "duckdb"),
        ("blank-lines", [GOOD[0], "", "   ", *GOOD[1:]], "duckdb"),
        ("repeated-id", [*GOOD, GOOD[3]], "duckdb+python"),
        ("repeated-id-changed", [GOOD[3].replace('"likes": 0', '"likes": 7'), *GOOD], "duckdb+python"),
        ("bad-value", [*GOOD[:5], json.dumps({**BASE, "id": "x/y", "downloads": "many"}), *GOOD[5:]], "duckdb+python"),
        (
            "lax-values",
            [*GOOD[:5], json.dumps({**BASE, "id": "x/y", "downloads": "5", "createdAt": 1.7e9})],
            "duckdb+python",
        ),
        (
            "repeated-lax-last",  # the later, re-read record must win over the earlier, claimed one
            [*GOOD[:5], json.dumps({**BASE, "id": "org/m2", "likes": "9"}), *GOOD[6:]],
            "duckdb+python",
        ),
        (
            "repeated-lax-first",  # the later, claimed record must win over the earlier, re-read one
            [*GOOD[:2], json.dumps({**BASE, "id": "org/m5", "likes": "9"}), *GOOD[2:]],
            "duckdb+python",
        ),
        ("no-valid-record", [json.dumps({"id": 5})], "duckdb+python"),
        ("syntax-error", [*GOOD[:5], '{"id": oops}', *GOOD[5:]], "python"),
        ("two-objects-one-line", [*GOOD[:5], GOOD[5] + " " + GOOD[6], *GOOD[7:]], "python"),
        ("not-an-object", [*GOOD[:5], "[1, 2]", "7", *GOOD[5:]], "python"),
        ("list-not-a-list", [*GOOD[:5], json.dumps({"id": "x/y", "tags": "pytorch"}), *GOOD[5:]], "python"),
        ("repeated-key", [*GOOD[:5], '{"id": "x/y", "id": "x/z"}', *GOOD[5:]], "python"),
        (
            "sibling-strings",
            [json.dumps({"id": "a/b", "siblings": ["RepoSibling(rfilename='tf_model.h5')"]})],
            "python",
        ),
        ("deep-tags", [*GOOD[:5], DEEP_TAGS, *GOOD[5:]], "duckdb+python"),
        ("deep-unread-fields", [*GOOD[:5], DEEP_CARD, DEEP_SIBLING, *GOOD[5:]], "duckdb"),
        ("deep-everywhere", [*GOOD[:5], DEEP_CARD, DEEP_TAGS, DEEP_SIBLING, *GOOD[5:]], "duckdb+python"),
        ("array", ["[" + ",\n".join(GOOD) + "]"], "duckdb"),
        ("array-deep-tags", ["[" + ",\n".join([*GOOD[:5], DEEP_TAGS, *GOOD[5:]]) + "]"], "duckdb+python"),
        ("array-deep-unread-fields", ["[" + ",\n".join([*GOOD[:5], DEEP_CARD, DEEP_SIBLING]) + "]"], "duckdb"),
        ("array-bad-value", ["[" + ",\n".join([*GOOD, json.dumps({"id": ""}), GOOD[0]]) + "]"], "duckdb+python"),
        ("concatenated-arrays", ["[" + ",".join(GOOD[:5]) + "]", "[" + ",".join(GOOD[5:]) + "]"], "python"),
    ],
)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_both_readers_agree_on_odd_dumps(name: str, lines: list[str], reader: str, gz: bool, tmp_path: Path) -> None:
    path = _write(tmp_path / f"{name}.json{'.gz' if gz else ''}", lines, gz)
    if name == "no-valid-record":
        for r in ("auto", "python"):
            with pytest.raises(IngestError, match="no readable model records"):
                import_dump(path, tmp_path / r, taken_at=TAKEN_2022, max_bad_share=1.0, reader=r)
        return
    fast, _ = _both(path, tmp_path)
    assert fast.reader == reader


def test_both_readers_fail_alike_past_the_bad_share(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [GOOD[0], json.dumps({"id": 5}), json.dumps({"downloads": 1})])
    messages = []
    for reader in ("auto", "python"):
        with pytest.raises(IngestError) as err:
            import_dump(path, tmp_path / reader, taken_at=TAKEN_2022, max_bad_share=0.5, reader=reader)
        messages.append(str(err.value))
        assert SnapshotStore(tmp_path / reader).snapshots() == []
    assert messages[0] == messages[1] and "2 of 3 records are bad" in messages[0]


# Parquet (hub-stats style): typed columns, checked once per file, and NULLs per row.

SIBLING_TYPE = pa.list_(pa.struct([("rfilename", pa.string()), ("size", pa.int64())]))


def _typed_table(n: int = 30) -> pa.Table:
    base = 1_700_000_000_000
    return pa.table(
        {
            "id": [f"org/m{i}" for i in range(n)],
            "author": [None if i % 3 else "org" for i in range(n)],
            "createdAt": pa.array([base + i * 86_400_123 for i in range(n)], pa.timestamp("ms", tz="UTC")),
            # Microseconds and no zone: the exact reader keeps milliseconds, as naive UTC.
            "lastModified": pa.array([base * 1000 + i * 1_234_567 for i in range(n)], pa.timestamp("us")),
            "downloads": pa.array([i * 7 for i in range(n)], pa.int32()),
            "likes": pa.array([None if i % 4 == 0 else i for i in range(n)], pa.int64()),
            "tags": [["pytorch", "tf"] if i % 2 else ["jax"] for i in range(n)],
            "pipeline_tag": ["fill-mask"] * n,
            "library_name": ["transformers" if i % 5 else "timm" for i in range(n)],
            "private": [False] * n,
            "gated": [None if i % 3 == 0 else bool(i % 2) for i in range(n)],
            "siblings": pa.array(
                [[{"rfilename": "pytorch_model.bin", "size": 3}, {"rfilename": "README.md", "size": None}]] * n,
                SIBLING_TYPE,
            ),
            "unknown_column": [i for i in range(n)],
        }
    )


def _parquet(tmp_path: Path, name: str, table: pa.Table) -> Path:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return path


def _with_row(table: pa.Table, **values: Any) -> pa.Table:
    row = {name: [table.column(name)[0].as_py()] for name in table.column_names}
    row.update({k: [v] for k, v in values.items()})
    return pa.concat_tables([table, pa.table(row, schema=table.schema)])


@pytest.mark.parametrize(
    ("name", "change", "reader"),
    [
        ("typed", lambda t: t, "duckdb"),
        ("null-id", lambda t: _with_row(t, id=None), "duckdb+python"),
        ("empty-id", lambda t: _with_row(t, id=""), "duckdb+python"),
        ("repeated-id", lambda t: _with_row(t, id="org/m3", likes=99), "duckdb+python"),
        ("null-tag", lambda t: _with_row(t, id="x/y", tags=["a", None]), "duckdb+python"),
        (
            "null-file-name",
            lambda t: _with_row(t, id="x/y", siblings=[{"rfilename": None, "size": 1}]),
            "duckdb+python",
        ),
        ("modelId-only", lambda t: t.rename_columns(["modelId", *t.column_names[1:]]), "duckdb"),
        ("downloads-as-text", lambda t: t.set_column(4, "downloads", pa.array([str(i) for i in range(30)])), "python"),
        (
            "times-as-text",
            lambda t: t.set_column(
                2,
                "createdAt",
                pa.array(["2022-03-02T23:29:04.000Z", "2022-03-02T23:29:04+02:00", "2022-02-30T00:00:00Z"] * 10),
            ),
            "duckdb+python",
        ),
        ("two-spellings", lambda t: t.append_column("created_at", t.column("createdAt")), "python"),
        ("no-siblings", lambda t: t.drop_columns(["siblings", "gated", "createdAt"]), "duckdb"),
    ],
)
def test_both_readers_agree_on_parquet(name: str, change: Any, reader: str, tmp_path: Path) -> None:
    path = _parquet(tmp_path, name, change(_typed_table()))
    fast, _ = _both(path, tmp_path)
    assert fast.reader == reader


def test_the_2022_crawl_as_parquet_reads_alike(tmp_path: Path) -> None:
    records = read_jsonl_gz(BUNDLED)
    table = pa.Table.from_pylist(
        [{k: r.get(k) for k in ("modelId", "tags", "pipeline_tag", "downloads", "likes", "library_name", "private")}
         | {"siblings": r.get("siblings")} for r in records]
    )  # fmt: skip
    fast, _ = _both(_parquet(tmp_path, "crawl", table), tmp_path)
    assert (fast.reader, fast.models) == ("duckdb", 29_432)


def test_a_duckdb_load_reports_how_far_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # DuckDB gives no rows until a load ends, so progress is its own estimate, polled while it runs.
    monkeypatch.setattr("hubcensus.ingest.writer.PROGRESS_EVERY_S", 0.01)
    records = read_jsonl_gz(BUNDLED)
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for copy in range(3):
            for r in records:
                f.write(json.dumps({**r, "modelId": f"{r['modelId']}-{copy}"}) + "\n")
    seen: list[Progress] = []
    meta = import_dump(path, tmp_path / "data", taken_at=TAKEN_2022, max_bad_share=0, on_progress=seen.append)
    assert meta.reader == "duckdb" and meta.models == 3 * len(records)
    percents = [p.percent for p in seen if p.percent is not None]
    assert percents and all(0 <= p <= 100 for p in percents)
    assert (seen[-1].models, seen[-1].total, seen[-1].percent) == (meta.models, meta.models, None)
