"""Import of every real dump shape, bad records included, and refusal of unusable input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.queries.store import SnapshotStore
from tests.data import FIXTURES, TAKEN_2022

REAL_LISTS = sorted(FIXTURES.glob("rimel_*.json.gz"))


def _import(path: Path, data_dir: Path, max_bad_share: float = 0.05) -> duckdb.DuckDBPyConnection:
    meta = import_dump(path, data_dir, taken_at=TAKEN_2022, max_bad_share=max_bad_share)
    return duckdb.connect(str(SnapshotStore(data_dir).path_of(meta.id)), read_only=True)


def _published(data_dir: Path) -> list[str]:
    return [m.id for m in SnapshotStore(data_dir).snapshots()]


@pytest.mark.parametrize("path", REAL_LISTS, ids=lambda p: p.name)
def test_real_2024_25_list_responses_import(path: Path, tmp_path: Path) -> None:
    with gzip.open(path, "rt") as f:
        records = json.load(f)
    con = _import(path, tmp_path)
    ids = {r["id"] for r in records}
    assert con.execute("SELECT count(*) FROM models").fetchone() == (len(ids),)
    meta = SnapshotStore(tmp_path).get()
    assert meta.bad_records == 0 and meta.duplicates == len(records) - len(ids)
    # Modern shape: createdAt and (list responses carry no author) an author derived from the id.
    first = records[0]
    row = con.execute(
        "SELECT author, strftime(created_at, '%Y-%m-%dT%H:%M:%S'), downloads, pipeline_tag FROM models WHERE id = ?",
        [first["id"]],
    ).fetchone()
    assert row == (
        first["id"].split("/")[0],
        first["createdAt"][:19],
        first["downloads"],
        first["pipeline_tag"],
    )


def test_2022_shape_derives_author_and_keeps_files(tmp_path: Path) -> None:
    con = _import(FIXTURES.parent.parent / "hubcensus" / "data" / "hub-2022-02-21.jsonl.gz", tmp_path)
    assert con.execute("SELECT count(*), count(created_at), count(author) FROM models").fetchone() == (
        29_432,
        0,  # the 2022 API had no createdAt: null, never invented
        29_432 - 68,  # 68 legacy ids without a namespace have no author
    )
    row = con.execute(
        "SELECT author, weight_files, library_name FROM models WHERE id = ?",
        ["09panesara/distilbert-base-uncased-finetuned-cola"],
    ).fetchone()
    # Only the files that can hold weights are kept: pytorch_model.bin and training_args.bin, not README.md.
    assert row is not None and row[0] == "09panesara"
    assert sorted(row[1]) == ["pytorch_model.bin", "training_args.bin"]


def test_modelinfo_dump_with_snake_case_fields(tmp_path: Path) -> None:
    con = _import(FIXTURES / "hamidah_2025_model_trees_modelinfo.jsonl.gz", tmp_path)
    assert con.execute("SELECT count(*) FROM models").fetchone() == (1_983,)
    assert con.execute("SELECT count(created_at), count(gated) FROM models").fetchone() == (1_982, 1_982)
    # Siblings written as "RepoSibling(rfilename='...')" strings still give the file names.
    row = con.execute(
        "SELECT count_if(list_contains(weight_files, 'model.safetensors')), count(weight_files) FROM models"
    ).fetchone()
    assert row is not None and row[0] > 100 and not any("RepoSibling" in f for f in _all_files(con))
    assert con.execute("SELECT DISTINCT gated FROM models ORDER BY 1").fetchall() == [
        ("auto",),
        ("false",),
        ("manual",),
        (None,),
    ]


def _all_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT unnest(weight_files) FROM models").fetchall()]


def test_concatenated_arrays_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "two.json"
    path.write_text(
        json.dumps([{"id": "a/1", "tags": ["pytorch"]}]) + "\n" + json.dumps([{"id": "b/2"}, {"id": "c/3"}])
    )
    con = _import(path, tmp_path / "data")
    assert con.execute("SELECT list(id ORDER BY id) FROM models").fetchone() == (["a/1", "b/2", "c/3"],)


def test_bad_records_are_counted_with_reasons_not_dropped(tmp_path: Path) -> None:
    good = [json.dumps({"id": f"u/m{i}", "downloads": i}) for i in range(97)]
    lines = [
        *good,
        "{not json",
        json.dumps({"id": "u/x", "downloads": "many"}),
        json.dumps(["a", "list"]),
        "",
    ]
    path = tmp_path / "dump.jsonl"
    path.write_text("\n".join(lines))
    con = _import(path, tmp_path / "data")
    meta = SnapshotStore(tmp_path / "data").get()
    assert (meta.models, meta.bad_records) == (97, 3)
    assert set(meta.bad_reasons) == {
        "invalid JSON: Expecting property name enclosed in double quotes",
        "downloads: Input should be a valid integer, unable to parse string as an integer",
        "not an object (list)",
    }
    assert con.execute("SELECT list(position ORDER BY position) FROM bad_records").fetchone() == ([98, 99, 100],)


def test_unknown_fields_ignored_and_missing_fields_null(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "u/m", "brandNewField": {"x": 1}}))
    con = _import(path, tmp_path / "data")
    assert con.execute("SELECT tags, downloads, weight_files, fw_inferred FROM models").fetchone() == (
        None,
        None,
        None,
        0,
    )


def test_too_many_bad_records_fails_and_publishes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([json.dumps({"id": "u/ok"}), "garbage", "more garbage"]))
    with pytest.raises(IngestError, match="2 of 3 records are bad"):
        import_dump(path, tmp_path / "data", taken_at=TAKEN_2022, max_bad_share=0.5)
    assert _published(tmp_path / "data") == []
    assert list((tmp_path / "data" / "tmp").iterdir()) == [tmp_path / "data" / "tmp" / ".lock"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"id,downloads\nx,1\n", "not a JSON array, JSON Lines or Parquet"),
        (b'[{"id": "a/b"}, {"id": ', "invalid JSON after record 1"),
        (b"[]", "no readable model records"),
    ],
)
def test_unusable_files_fail_clearly(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "dump.json"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message):
        import_dump(path, tmp_path / "data", taken_at=TAKEN_2022, max_bad_share=0.05)
    assert _published(tmp_path / "data") == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        import_dump(tmp_path / "nope.jsonl", tmp_path, taken_at=TAKEN_2022, max_bad_share=0.05)


def test_hub_stats_style_parquet(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["org/a", "org/b"],
            "author": ["org", "org"],
            "createdAt": pa.array([1_700_000_000_000, None], type=pa.timestamp("ms", tz="UTC")),
            "downloads": [5, 7],
            "tags": [["pytorch", "text-generation"], ["safetensors"]],
            "pipeline_tag": ["text-generation", None],
            "library_name": ["transformers", "timm"],
        }
    )
    path = tmp_path / "models.parquet"
    pq.write_table(table, path)
    con = _import(path, tmp_path / "data")
    assert con.execute("SELECT id, fw_tags, fw_inferred FROM models ORDER BY id").fetchall() == [
        ("org/a", 1, 1),
        ("org/b", 0, 1),
    ]
