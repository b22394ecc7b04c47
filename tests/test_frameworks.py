"""Every classification rule on real records, and the SQL and Python classifiers agreeing on every one."""

from __future__ import annotations

import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.records import parse_record
from hubcensus.queries.buckets import bucket_columns, bucket_values, flatten, nest, to_bucket
from hubcensus.queries.facts import holds_weights, weight_files
from hubcensus.queries.frameworks import (
    BIT,
    CLASSIFIER_VERSION,
    FRAMEWORKS,
    METHODS,
    RULES,
    Facts,
    Framework,
    classified_sql,
    classify,
    combination_name,
    explain,
    frameworks_of,
    mask_of,
    mask_sql,
    shared_combinations,
)
from hubcensus.queries.rules import GGUF_FILE
from hubcensus.queries.share import ShareResult, framework_share, framework_trend
from hubcensus.queries.store import SnapshotStore
from hubcensus.queries.transformers_table import model_types, transformers_table
from tests.data import BUNDLED, FIXTURES, LIST_2025, ROOT, TAKEN_2022

METHODOLOGY = (ROOT / "docs" / "METHODOLOGY.md").read_text()

PT, TF, JX = BIT["pytorch"], BIT["tensorflow"], BIT["jax"]
TREES = FIXTURES / "hamidah_2025_model_trees_modelinfo.jsonl.gz"
SOURCES = {"crawl": BUNDLED, "trees": TREES, "list": LIST_2025}


def _load(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as f:
        text = f.read()
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]


@cache
def real(source: str, model_id: str) -> dict[str, Any]:
    """One real record, as the API gave it (the 2022 crawl, the 2025 fine-tune trees, the 2025-01-14 list)."""
    return next(r for r in _load(SOURCES[source]) if (r.get("id") or r.get("modelId")) == model_id)


def facts(record: dict[str, Any]) -> Facts:
    """What a snapshot keeps of a record, read by the real record parser."""
    return Facts.of_row(parse_record(record))


# ------------------------------------------------------------------------------------------------------
# Every rule fires on a real record (and says what it matched).
# ------------------------------------------------------------------------------------------------------

DISTILBERT = ("crawl", "09panesara/distilbert-base-uncased-finetuned-cola")  # pytorch_model.bin, Trainer, tag
EXAMPLES: dict[str, tuple[str, str, str]] = {
    "tag.pytorch": (*DISTILBERT, "tag pytorch"),
    "tag.tf": ("crawl", "Abirate/bert_fine_tuned_cola", "tag tf"),
    "tag.jax": ("crawl", "18811449050/bert_cn_finetuning", "tag jax"),
    "file.pytorch_model": (*DISTILBERT, "file pytorch_model.bin"),
    "file.torch_save": ("crawl", "123www/test_model", "file optimizer-002.pt"),
    "file.diffusers_pytorch": ("trees", "0xOracle/Image-GAN", "file pytorch_lora_weights.safetensors"),
    "file.tf_model": ("crawl", "Abirate/bert_fine_tuned_cola", "file tf_model.h5"),
    "file.saved_model": ("crawl", "Ab0/autoencoder-keras-mnist-demo", "file saved_model.pb"),
    "file.tflite": ("crawl", "SamMorgan/yolo_v4_tflite", "file android/app/src/main/assets/yolov4-416-fp32.tflite"),
    "file.flax_model": ("crawl", "18811449050/bert_cn_finetuning", "file flax_model.msgpack"),
    "file.gguf": ("trees", "mradermacher/DeepSeek-V3-GGUF", "file DeepSeek-V3.IQ4_XS.gguf.part1of8"),
    "file.onnx": ("crawl", "Jacopo/ToonClip", "file model.onnx"),
    "weight_tag.pytorch": (*DISTILBERT, "tag pytorch"),
    "weight_tag.tf": ("crawl", "Abirate/bert_fine_tuned_cola", "tag tf"),
    "weight_tag.jax": ("crawl", "18811449050/bert_cn_finetuning", "tag jax"),
    "format_tag.gguf": ("list", "bartowski/EXAONE-3.5-7.8B-Instruct-GGUF", "tag gguf"),
    "format_tag.onnx": ("crawl", "AmineKhiari/Loquela", "tag onnx"),
    "mlx": ("trees", "mlx-community/EXAONE-Deep-32B-4bit", "tag mlx"),
    "keras": ("trees", "nguyenbaobee/CTUMP", "library_name keras"),
    "keras2.tensorflow": ("crawl", "Ab0/autoencoder-keras-mnist-demo", "file saved_model.pb"),
    "library.pytorch": ("crawl", "AI-Growth-Lab/PatentSBERTa", "library_name sentence-transformers"),
    "library.tensorflow": ("crawl", "tensorspeech/tts-fastspeech-ljspeech-en", "library_name tensorflowtts"),
    "library.gguf": ("list", "city96/t5-v1_1-xxl-encoder-gguf", "library_name gguf"),
    "library.onnx": ("list", "onnx-community/dpt-dinov2-small-kitti", "library_name transformers.js"),
    "trainer.pytorch": (*DISTILBERT, "file training_args.bin"),
    "peft.pytorch": ("trees", "AeNyoung/lora-llama-2-7b-nsmc", "file adapter_model.safetensors"),
    "textual_inversion.pytorch": ("trees", "sd-concepts-library/concept-art-2-1", "file learned_embeds.bin"),
    "ckpt.pytorch": ("crawl", "AkshaySg/LanguageIdentification", "file classifier.ckpt"),
    "save_pretrained.pytorch": ("trees", "AGBonnet/medinote-7b", "file model-00001-of-00003.safetensors"),
    "safetensors_tag.pytorch": ("list", "meta-llama/Llama-3.3-70B-Instruct", "tag safetensors"),
    "transformers4.pytorch": (*DISTILBERT, "config.model_type distilbert"),
    "transformers4.tensorflow": (*DISTILBERT, "config.model_type distilbert"),
    "transformers4.jax": (*DISTILBERT, "config.model_type distilbert"),
}


def test_every_rule_has_a_real_example() -> None:
    # No real record in ../shared/data/hub-real holds a `.keras` file: that rule is tested on a real Keras repo
    # with one added (test_a_keras_file_is_keras).
    assert set(EXAMPLES) | {"file.keras"} == {r.id for r in RULES}
    assert len({r.id for r in RULES}) == len(RULES)


@pytest.mark.parametrize("rule_id", sorted(EXAMPLES))
def test_each_rule_on_a_real_record(rule_id: str) -> None:
    source, model_id, matched = EXAMPLES[rule_id]
    rule = next(r for r in RULES if r.id == rule_id)
    ev = explain(facts(real(source, model_id)))
    fired = [e for m in rule.methods for e in ev[m] if e.rule == rule_id]
    assert fired, f"{rule_id} did not fire on {model_id}"
    assert matched in fired[0].matched and fired[0].framework == rule.framework
    assert fired[0].reason == rule.reason and fired[0].convention == rule.convention
    masks = classify(facts(real(source, model_id)))
    assert all(masks[m] & BIT[rule.framework] for m in rule.methods)


def test_a_keras_file_is_keras() -> None:
    record = {**real("trees", "nguyenbaobee/CTUMP"), "siblings": [{"rfilename": "model.keras"}], "library_name": None}
    masks = classify(facts(record))
    assert masks["files"] == masks["inferred"] == BIT["keras"]


# ------------------------------------------------------------------------------------------------------
# The exceptions: conversions and Keras 2, decided on real records.
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "model_id", "inferred"),
    [
        # MLX conversions: their cards copy the base model's `pytorch` tag; MLX, never PyTorch.
        ("trees", "mlx-community/Llama-4-Scout-17B-16E-Instruct-4bit", "mlx"),
        ("trees", "AGCobra/EXAONE-Deep-32B-mlx-4Bit", "mlx"),
        ("trees", "mlx-community/phi-2", "mlx"),  # weights.npz, MLX's first format
        # GGUF conversions: library transformers, base tags; only GGUF (split files too, and GGML).
        ("trees", "mradermacher/DeepSeek-V3-GGUF", "gguf"),
        ("trees", "TheBloke/Llama-2-7B-Chat-GGML", "gguf"),  # tagged pytorch by its card
        ("list", "nidum/Nidum-Llama-3.2-3B-Uncensored-GGUF", "gguf"),  # library adapter-transformers
        # A GGUF file beside safetensors in the original repo: both (and transformers 4.x had Flax Gemma).
        ("trees", "google/gemma-7b", "pytorch+gguf"),
        # Keras 2 (a SavedModel): TensorFlow, not Keras 3.
        ("crawl", "Ab0/autoencoder-keras-mnist-demo", "tensorflow"),
        # Repos with weights in formats outside the universe: none.
        ("trees", "OpenVINO/gemma-7b-fp16-ov", ""),
    ],
)
def test_the_exceptions_on_real_records(source: str, model_id: str, inferred: str) -> None:
    masks = classify(facts(real(source, model_id)))
    assert combination_name(masks["inferred"]) == inferred
    # loadable adds only what transformers 4.x could load the repo's own checkpoint into: nothing for these.
    loadable = "pytorch+jax+gguf" if model_id == "google/gemma-7b" else inferred
    assert combination_name(masks["loadable"]) == loadable


def test_loadable_reads_transformers_own_mappings() -> None:
    table = transformers_table()
    assert table["transformers_version"].startswith("4.")
    assert {"bert", "llama", "qwen2"} <= model_types("pytorch")
    assert "bert" in model_types("tensorflow") and "qwen2" not in model_types("tensorflow")
    # A Qwen2 fine-tune: transformers 4.x implements qwen2 in PyTorch only.
    qwen = [r for r in _load(TREES) if (r.get("config") or {}).get("model_type") == "qwen2"]
    assert qwen and all(classify(facts(r))["loadable"] & (TF | JX) == 0 for r in qwen)
    # A Llama fine-tune saved as safetensors from PyTorch loads in PyTorch and Flax (transformers 4.x had Flax Llama).
    masks = classify(facts(real("trees", "AGBonnet/medinote-7b")))
    assert masks["inferred"] == PT and masks["loadable"] == PT | JX


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["pytorch"], PT),
        (["tf"], TF),
        (["jax"], JX),
        (["pytorch", "tf", "jax"], PT | TF | JX),
        (["tensorflow"], 0),  # not the Hub's weight tag: the 2021-22 analyses did not count it
        (["keras", "gguf", "onnx", "mlx", "safetensors"], 0),  # `tags` stays exactly the three weight tags
        (["PyTorch"], 0),  # exact tag match: the Hub's tags are lower case
        ([], 0),
    ],
)
def test_tag_method_is_exactly_the_three_weight_tags(tags: list[str], expected: int) -> None:
    assert classify(Facts(tags=tags))["tags"] == expected


# ------------------------------------------------------------------------------------------------------
# SQL and Python agree on every real record; nothing a rule reads is dropped.
# ------------------------------------------------------------------------------------------------------

REAL_DUMPS = [BUNDLED, *sorted(FIXTURES.glob("*.json.gz")), *sorted(FIXTURES.glob("*.jsonl.gz"))]


@pytest.mark.parametrize("path", REAL_DUMPS, ids=lambda p: p.name)
def test_sql_and_python_agree_on_every_real_record(path: Path, tmp_path: Path) -> None:
    meta = import_dump(path, tmp_path, taken_at=TAKEN_2022, max_bad_share=0.05)
    con = duckdb.connect(str(tmp_path / "snapshots" / meta.id / "snapshot.duckdb"), read_only=True)
    rows = con.sql("SELECT * FROM models").to_arrow_table().to_pylist()
    assert len(rows) == meta.models > 0
    mismatches = [
        (row["id"], m, row[f"fw_{m}"], mask)
        for row in rows
        for m, mask in classify(Facts.of_row(row)).items()
        if row[f"fw_{m}"] != mask
    ]
    assert mismatches == []
    # The stored facts are the parser's: the Python classifier of the raw record says the same.
    by_id = {row["id"]: row for row in rows}
    for record in _load(path):
        row = parse_record(record)
        assert classify(Facts.of_row(row)) == {m: by_id[row["id"]][f"fw_{m}"] for m in METHODS} or (
            meta.duplicates  # a repeated id keeps its last record
        )


def test_the_2022_tag_counts_are_the_crawls_own() -> None:
    # PROVENANCE.md: pytorch 20,707, jax 5,346, tf 1,987 tags in the crawl.
    counts = {fw: sum(bool(classify(facts(r))["tags"] & BIT[fw]) for r in _load(BUNDLED)) for fw in FRAMEWORKS}
    assert counts == {"pytorch": 20_707, "tensorflow": 1_987, "jax": 5_346, "keras": 0, "mlx": 0, "gguf": 0, "onnx": 0}


def test_the_file_filter_keeps_every_name_a_rule_can_match() -> None:
    """A snapshot keeps only weight-like file names; no name that any rule matches is lost."""
    names = {
        s["rfilename"] if isinstance(s, dict) else str(s)
        for path in REAL_DUMPS
        for rec in _load(path)
        for s in rec.get("siblings") or []
    }
    kept = set(weight_files(sorted(names)) or [])
    assert 0 < len(kept) < len(names) / 3
    for name in names - kept:
        assert classify(Facts(files=[name])) == dict.fromkeys(METHODS, 0), name
    assert weight_files(None) is None and weight_files([]) == []
    for name in ("model.safetensors", "model.onnx", "m.onnx_data", "model.gguf", "x.gguf.part1of2", "model.keras"):
        assert weight_files([name]) == [name]


def test_classified_sql_computes_each_test_once_and_matches_python() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE facts (id VARCHAR, tags VARCHAR[], library_name VARCHAR, weight_files VARCHAR[],"
        " model_type VARCHAR, architectures VARCHAR[], auto_model VARCHAR)"
    )
    cases = {
        "mlx": Facts(tags=["mlx", "pytorch", "safetensors"], files=["model.safetensors"], library_name="mlx"),
        "gguf-only": Facts(tags=["gguf", "pytorch"], files=["a.Q4_K_M.gguf", "training_args.bin"]),
        "unlisted": Facts(tags=["safetensors", "llama"]),
        "keras2": Facts(tags=["keras"], files=["model.h5"], library_name="keras"),
    }
    for name, f in cases.items():
        con.execute(
            "INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, f.tags, f.library_name, f.files, f.model_type, f.architectures, f.auto_model],
        )
    got = {
        r[0]: r[1:]
        for r in con.sql(
            f"SELECT id, {', '.join(f'fw_{m}' for m in METHODS)} FROM ({classified_sql('SELECT * FROM facts')})"
        ).fetchall()
    }
    for name, f in cases.items():
        assert got[name] == tuple(classify(f)[m] for m in METHODS), name
    assert frameworks_of(got["unlisted"][METHODS.index("inferred")]) == ["pytorch"]


# ------------------------------------------------------------------------------------------------------
# Bitmasks and buckets.
# ------------------------------------------------------------------------------------------------------


def test_one_bit_per_framework_in_a_stable_order() -> None:
    # Stored in every snapshot: the first three keep the values of every earlier classifier.
    assert list(BIT.items())[:3] == [("pytorch", 1), ("tensorflow", 2), ("jax", 4)]
    assert sorted(BIT.values()) == [1 << i for i in range(len(FRAMEWORKS))]
    assert max(BIT.values()) < 256  # a UTINYINT


def test_combination_helpers() -> None:
    assert combination_name(PT | JX) == "pytorch+jax"
    assert shared_combinations(["pytorch", "tensorflow"]) == [PT | TF]
    assert len(shared_combinations(["pytorch", "tensorflow", "jax"])) == 4
    assert len(shared_combinations(FRAMEWORKS)) == 2 ** len(FRAMEWORKS) - 1 - len(FRAMEWORKS)
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


def test_flatten_undoes_nest() -> None:
    # A share row with its group key and every kind of dotted column; every combination occurs (nest leaves out
    # those that do not), so flattening gives back the row, keys in order.
    universe: list[Framework] = ["pytorch", "tensorflow"]
    row = {
        "group": "fill-mask",
        **bucket_values({0: 1, BIT["pytorch"]: 5, BIT["pytorch"] | BIT["tensorflow"]: 2}, universe),
    }
    assert flatten(nest(row)) == row and list(flatten(nest(row))) == list(row)
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}


# ------------------------------------------------------------------------------------------------------
# The answers that must hold on today's Hub (issue "framework answers that hold on today's Hub").
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[SnapshotStore, str]]:
    """The three real snapshots, imported with the real importer: name -> (store, snapshot id)."""
    out = {}
    for name, path in SOURCES.items():
        data_dir = tmp_path_factory.mktemp(name)
        meta = import_dump(path, data_dir, taken_at=TAKEN_2022, max_bad_share=0.05)
        out[name] = (SnapshotStore(data_dir), meta.id)
    return out


def _share(snapshots: dict[str, tuple[SnapshotStore, str]], name: str, **kwargs: Any) -> ShareResult:
    store, snapshot_id = snapshots[name]
    with store.cursor(snapshot_id) as con:
        return framework_share(con, **kwargs)


def test_fine_tune_trees_leave_none_only_without_weights(snapshots: dict[str, tuple[SnapshotStore, str]]) -> None:
    store, snapshot_id = snapshots["trees"]
    with store.cursor(snapshot_id) as con:
        rows = con.sql("SELECT * FROM models").to_arrow_table().to_pylist()
    weighted = [r for r in rows if holds_weights(r["weight_files"])]
    unclassified = [r["id"] for r in weighted if r["fw_inferred"] == 0]
    assert len(weighted) > 1_500 and len(unclassified) <= 0.05 * len(weighted)
    mlx = [r for r in rows if "mlx" in (r["tags"] or []) or (r["library_name"] or "").lower() == "mlx"]
    assert len(mlx) == 27 and all(frameworks_of(r["fw_inferred"]) == ["mlx"] for r in mlx)
    gguf_only = [
        r for r in weighted if all(re.search(GGUF_FILE, f.lower()) for f in r["weight_files"] if holds_weights([f]))
    ]
    assert len(gguf_only) == 13 and all(frameworks_of(r["fw_inferred"]) == ["gguf"] for r in gguf_only)


def test_the_2025_list_leaves_few_text_generation_models_without_a_framework(
    snapshots: dict[str, tuple[SnapshotStore, str]],
) -> None:
    share = _share(snapshots, "list")
    (row,) = [r for r in share.rows.to_pylist() if r["group"] == "text-generation"]
    assert row["models"] == 777 and row["none"] <= 0.15 * row["models"]  # 554 (71 %) under classifier 2026.11.1
    tags = _share(snapshots, "list", method="tags")
    (by_tags,) = [r for r in tags.rows.to_pylist() if r["group"] == "text-generation"]
    assert by_tags["none"] == 558  # `tags` is unchanged: the Hub's weight tags say nothing about these


def test_the_2022_crawl_answers_by_tags_exactly_as_before(snapshots: dict[str, tuple[SnapshotStore, str]]) -> None:
    # The figures of classifier 2026.11.1 (docs/METHODOLOGY.md), universe pytorch,tensorflow(,jax).
    two = _share(snapshots, "crawl", method="tags", frameworks=["pytorch", "tensorflow"]).total
    assert (two.exclusive, two.shared, two.none) == ({"pytorch": 19_012, "tensorflow": 292}, 1_695, 8_433)
    three = _share(snapshots, "crawl", method="tags", frameworks=["pytorch", "tensorflow", "jax"]).total
    assert (three.exclusive, three.shared) == ({"pytorch": 14_737, "tensorflow": 292, "jax": 238}, 5_970)
    assert _share(snapshots, "crawl", method="tags").total.with_framework == three.with_framework == 21_237


def test_the_2025_trend_by_creation_year_shows_every_framework(snapshots: dict[str, tuple[SnapshotStore, str]]) -> None:
    store, snapshot_id = snapshots["list"]
    with store.cursor(snapshot_id) as con:
        rows = framework_trend(con, interval="year").rows.to_pylist()
    dated = [r for r in rows if r["period"] != "unknown"]
    for fw in FRAMEWORKS:
        shipping = sum(
            r[f"exclusive.{fw}"]
            + sum(n for k, n in r.items() if k.startswith("combinations.") and fw in k[13:].split("+"))
            for r in dated
        )
        assert shipping > 0, fw


def test_the_rules_are_published(client: TestClient) -> None:
    body = client.get("/v1/rules").json()
    assert body["classifier_version"] == CLASSIFIER_VERSION and body["transformers_version"].startswith("4.")
    assert body["frameworks"] == list(FRAMEWORKS) and body["methods"] == list(METHODS)
    assert [r["id"] for r in body["rules"]] == [r.id for r in RULES]
    conventions = {r["id"] for r in body["rules"] if r["convention"]}
    assert {"save_pretrained.pytorch", "safetensors_tag.pytorch", "ckpt.pytorch"} == conventions


def test_the_methodology_counts_are_the_rules_counts(snapshots: dict[str, tuple[SnapshotStore, str]]) -> None:
    """docs/METHODOLOGY.md's table gives each rule's count on the three real snapshots: it must be what they say."""
    documented = {
        m.group(1): tuple(int(n.replace(",", "")) for n in m.group(2, 3, 4))
        for m in re.finditer(r"^\| `([^`]+)` \|.*\| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", METHODOLOGY, re.M)
    }
    counts: dict[str, list[int]] = {r.id: [0, 0, 0] for r in RULES}
    for i, name in enumerate(("crawl", "list", "trees")):
        store, snapshot_id = snapshots[name]
        with store.cursor(snapshot_id) as con:
            rows = con.sql("SELECT * FROM models").to_arrow_table().to_pylist()
        for row in rows:
            ev = explain(Facts.of_row(row))
            for rule_id in {e.rule for m in METHODS for e in ev[m]}:
                counts[rule_id][i] += 1
    assert documented == {rule_id: tuple(c) for rule_id, c in counts.items()}


def test_mask_sql_stands_alone_as_well() -> None:
    # The benchmark and any ad-hoc SQL use mask_sql over the evidence columns, without classified_sql's
    # prepared column of joined file names: the same masks.
    con = duckdb.connect()
    facts = Facts(tags=["pytorch"], files=["a/pytorch_model.bin", "b.gguf", "training_args.bin"], library_name="peft")
    con.execute(
        "CREATE TABLE models AS SELECT ?::VARCHAR[] AS tags, ?::VARCHAR[] AS weight_files, ?::VARCHAR AS library_name,"
        " NULL::VARCHAR AS model_type, NULL::VARCHAR[] AS architectures, NULL::VARCHAR AS auto_model",
        [facts.tags, facts.files, facts.library_name],
    )
    got = con.execute(f"SELECT {', '.join(mask_sql(m) for m in METHODS)} FROM models").fetchall()[0]
    assert got == tuple(classify(facts)[m] for m in METHODS)
