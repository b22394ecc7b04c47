"""Every classification rule, and the SQL and Python classifiers agreeing on real records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from hubcensus.queries.buckets import bucket_columns, bucket_values, nest, to_bucket
from hubcensus.queries.frameworks import (
    BIT,
    FILE_RULES,
    FRAMEWORKS,
    LIBRARY_RULES,
    TAG_RULES,
    Framework,
    classify,
    combination_name,
    evidence,
    mask_of,
    shared_combinations,
    weight_files,
)
from hubcensus.queries.store import SnapshotStore

PT, TF, JX = 1, 2, 4


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["pytorch"], PT),
        (["tf"], TF),
        (["jax"], JX),
        (["pytorch", "tf", "jax"], PT | TF | JX),
        (["tensorflow"], 0),  # not the Hub's weight tag: the 2021-22 analyses did not count it
        (["keras"], 0),
        (["safetensors"], 0),
        (["transformers", "bert"], 0),
        (["PyTorch"], 0),  # exact tag match: the Hub's tags are lower case
        ([], 0),
    ],
)
def test_tag_rules_are_exactly_the_three_weight_tags(tags: list[str], expected: int) -> None:
    assert classify(tags, None, None)["tags"] == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["pytorch_model.bin"], PT),
        (["pytorch_model-00001-of-00002.bin"], PT),
        (["sub/dir/pytorch_model.bin"], PT),
        (["model.pt"], PT),
        (["weights/best.PTH"], PT),
        (["training_args.bin"], 0),  # a pickled argument object, not weights
        (["tf_model.h5"], TF),
        (["tf_model-00001-of-00002.h5"], TF),
        (["saved_model.pb"], TF),
        (["export/saved_model.pbtxt"], TF),
        (["model.tflite"], TF),
        (["model.h5"], 0),  # generic HDF5: Keras 2 or any data, not decisive
        (["flax_model.msgpack"], JX),
        (["flax_model-00001-of-00002.msgpack"], JX),
        (["model.safetensors"], 0),  # safetensors is framework-neutral
        (["model.onnx", "model.gguf", "model.keras"], 0),
        (["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"], PT | TF | JX),
        (["not_pytorch_model.bin"], 0),
    ],
)
def test_file_rules(files: list[str], expected: int) -> None:
    assert classify(None, files, None)["files"] == expected


@pytest.mark.parametrize(
    ("library", "expected"),
    [
        ("timm", PT),
        ("diffusers", PT),
        ("sentence-transformers", PT),
        ("Sentence-Transformers", PT),
        ("tf-keras", TF),
        ("keras", 0),  # Keras 3 is multi-backend
        ("transformers", 0),  # ships any of the three
        ("gguf", 0),
        (None, 0),
    ],
)
def test_library_rules_apply_only_to_inferred(library: str | None, expected: int) -> None:
    result = classify(None, None, library)
    assert result["inferred"] == expected
    assert result["tags"] == 0 and result["files"] == 0


def test_inferred_is_the_union_of_the_three_sources() -> None:
    result = classify(["tf"], ["flax_model.msgpack"], "timm")
    assert result == {"tags": TF, "files": JX, "inferred": PT | TF | JX}
    ev = evidence(["tf"], ["flax_model.msgpack"], "timm")["inferred"]
    assert {(e.framework, e.rule, e.matched) for e in ev} == {
        ("tensorflow", "tag", "tf"),
        ("jax", "file", "flax_model.msgpack"),
        ("pytorch", "library", "timm"),
    }


def test_rule_tables_cover_every_framework() -> None:
    assert set(TAG_RULES) == set(FILE_RULES) == set(BIT) == set(FRAMEWORKS)
    assert set(LIBRARY_RULES.values()) <= set(FRAMEWORKS)
    assert sorted(BIT.values()) == [1 << i for i in range(len(FRAMEWORKS))]  # one bit each, none shared
    assert "keras" not in LIBRARY_RULES and "transformers" not in LIBRARY_RULES


def test_combination_helpers() -> None:
    assert combination_name(PT | JX) == "pytorch+jax"
    assert shared_combinations(["pytorch", "tensorflow"]) == [PT | TF]
    assert len(shared_combinations(["pytorch", "tensorflow", "jax"])) == 4
    assert mask_of(["jax", "pytorch"]) == PT | JX


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_bucket_of_one_framework(fw: Framework) -> None:
    """With one framework nothing is shared: no combination columns, an empty `combinations`, shared 0."""
    assert shared_combinations([fw]) == []
    flat = bucket_values({0: 5, BIT[fw]: 3}, [fw])
    assert list(flat) == [name for name, _ in bucket_columns([fw])]
    assert list(flat) == [
        "models",
        "with_framework",
        "none",
        "shared",
        f"exclusive.{fw}",
        f"pct.{fw}_only",
        "pct.shared",
    ]
    bucket = to_bucket(flat)
    assert (bucket.models, bucket.with_framework, bucket.none, bucket.shared) == (8, 3, 5, 0)
    assert bucket.exclusive == {fw: 3} and bucket.combinations == {}
    assert bucket.pct == {f"{fw}_only": 100.0, "shared": 0.0}
    # The JSON rows have the same keys as the total, in the same order.
    assert list(nest(flat)) == list(bucket.model_dump())
    # A row that is not a bucket gets nothing added.
    assert nest({"models": 0, "with_framework": 0, "none": 0, "shared": 0}) == {
        "models": 0,
        "with_framework": 0,
        "none": 0,
        "shared": 0,
    }


def test_weight_file_filter_keeps_every_file_a_rule_can_match(crawl_2022: list[dict[str, Any]]) -> None:
    """The snapshot keeps only weight-like file names; no file that a FILE_RULES pattern matches is lost."""
    names = {s["rfilename"] for rec in crawl_2022 for s in rec.get("siblings") or []}
    kept = set(weight_files(sorted(names)) or [])
    assert 0 < len(kept) < len(names) / 4
    for name in names - kept:
        assert classify(None, [name], None)["files"] == 0, name
    assert weight_files(None) is None and weight_files([]) == []
    for name in ("model.safetensors", "model.onnx", "model.gguf", "model.keras", "pytorch_model.bin"):
        assert weight_files([name]) == [name]


def test_sql_and_python_classifiers_agree_on_the_real_crawl(
    demo_data_dir: Path, crawl_2022: list[dict[str, Any]]
) -> None:
    store = SnapshotStore(demo_data_dir)
    con = duckdb.connect(str(store.path_of(store.get().id)), read_only=True)
    stored = {
        row[0]: (row[1], row[2], row[3])
        for row in con.execute("SELECT id, fw_tags, fw_files, fw_inferred FROM models").fetchall()
    }
    assert len(stored) == len(crawl_2022) == 29_432
    mismatches = []
    for rec in crawl_2022:
        files = [s["rfilename"] for s in rec.get("siblings") or []]
        expected = classify(rec.get("tags"), files, rec.get("library_name"))
        got = stored[rec["modelId"]]
        if got != (expected["tags"], expected["files"], expected["inferred"]):
            mismatches.append((rec["modelId"], got, expected))
    assert mismatches == []
    # The crawl's own tag counts (PROVENANCE.md): pytorch 20,707, jax 5,346, tf 1,987.
    counts = con.execute(
        "SELECT count_if(fw_tags & 1 > 0), count_if(fw_tags & 4 > 0), count_if(fw_tags & 2 > 0) FROM models"
    ).fetchone()
    assert counts == (20_707, 5_346, 1_987)
