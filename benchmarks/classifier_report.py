"""The classifier on the three real snapshots: the figures docs/METHODOLOGY.md quotes, measured anew.

    .venv/bin/python -m benchmarks.classifier_report

Imports each real dump with the real importer (as `hubcensus import` does) into a scratch data dir, then
prints, per snapshot: the totals of every method under the default universe, `none` in text-generation,
each rule's count (from the stored facts, checking that SQL and Python agree on every model), the criteria
of issue "framework answers that hold on today's Hub", and the trend by creation year.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.facts import holds_weights
from hubcensus.queries.frameworks import (
    FRAMEWORKS,
    METHODS,
    RULES,
    Facts,
    explain,
    frameworks_of,
    mask_of,
)
from hubcensus.queries.share import framework_share, framework_trend
from hubcensus.queries.store import SnapshotStore

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = {
    "2022 crawl": (ROOT / "hubcensus" / "data" / "hub-2022-02-21.jsonl.gz", datetime(2022, 2, 21, tzinfo=UTC)),
    "2025-01-14 list": (
        ROOT / "tests" / "fixtures" / "rimel_2025-01-14_list.json.gz",
        datetime(2025, 1, 14, tzinfo=UTC),
    ),
    "2025 fine-tune trees": (
        ROOT / "tests" / "fixtures" / "hamidah_2025_model_trees_modelinfo.jsonl.gz",
        datetime(2025, 4, 26, tzinfo=UTC),
    ),
}
FACTS_SQL = """SELECT id, tags, weight_files, library_name, model_type, architectures, auto_model,
    fw_tags, fw_files, fw_inferred, fw_loadable FROM models ORDER BY id"""


def _facts(row: dict[str, Any]) -> Facts:
    return Facts(
        tags=row["tags"],
        files=row["weight_files"],
        library_name=row["library_name"],
        model_type=row["model_type"],
        architectures=row["architectures"],
        auto_model=row["auto_model"],
    )


def report_one(name: str, path: Path, taken_at: datetime, data_dir: Path) -> dict[str, Any]:
    """Import one dump and measure the classifier on it."""
    meta = import_dump(path, data_dir, taken_at=taken_at, max_bad_share=0.05)
    store = SnapshotStore(data_dir)
    out: dict[str, Any] = {"name": name, "models": meta.models, "totals": {}, "text_generation": {}}
    with store.cursor(meta.id) as con:
        for method in METHODS:
            share = framework_share(con, method=method)
            out["totals"][method] = share.total
            group = [r for r in share.rows.to_pylist() if r["group"] == "text-generation"]
            if group:
                out["text_generation"][method] = (group[0]["none"], group[0]["models"])
        rows = con.sql(FACTS_SQL).to_arrow_table().to_pylist()
        trend = framework_trend(con, interval="year", method="inferred")
        out["trend"] = {r["period"]: r for r in trend.rows.to_pylist()}
    rule_counts: Counter[str] = Counter()
    disagreements = 0
    weights = none_with_weights = 0
    mlx = {"repos": 0, "as_mlx": 0, "with_pytorch": 0}
    gguf_only = {"repos": 0, "as_gguf": 0, "with_pytorch": 0}
    for row in rows:
        facts = _facts(row)
        ev = explain(facts)
        for rule in {e.rule for m in METHODS for e in ev[m]}:
            rule_counts[rule] += 1
        masks = {m: mask_of(e.framework for e in ev[m]) for m in METHODS}
        disagreements += any(masks[m] != row[f"fw_{m}"] for m in METHODS)
        inferred = frameworks_of(row["fw_inferred"])
        if holds_weights(facts.files):
            weights += 1
            none_with_weights += not inferred
        tags = set(facts.tags or ())
        if (facts.library_name or "").lower() == "mlx" or "mlx" in tags:
            mlx["repos"] += 1
            mlx["as_mlx"] += "mlx" in inferred
            mlx["with_pytorch"] += "pytorch" in inferred
        if any(e.rule == "file.gguf" for e in ev["files"]) and not any(e.framework != "gguf" for e in ev["files"]):
            files = [f for f in facts.files or () if holds_weights([f])]
            if files and all(".gguf" in f.lower() or "ggml" in f.lower() for f in files):
                gguf_only["repos"] += 1
                gguf_only["as_gguf"] += "gguf" in inferred
                gguf_only["with_pytorch"] += "pytorch" in inferred
    out.update(
        rule_counts=rule_counts,
        disagreements=disagreements,
        weights=weights,
        none_with_weights=none_with_weights,
        mlx=mlx,
        gguf_only=gguf_only,
    )
    return out


def _with(row: dict[str, Any], fw: str) -> int:
    """Models of a bucket row that ship `fw`, alone or with others."""
    shared = sum(n for k, n in row.items() if k.startswith("combinations.") and fw in k.split(".", 1)[1].split("+"))
    return int(row[f"exclusive.{fw}"]) + shared


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f} %" if d else "n/a"


def main() -> None:
    """Print every table of the report as Markdown."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (path, taken_at)) in enumerate(SNAPSHOTS.items()):
            results.append(report_one(name, path, taken_at, Path(tmp) / str(i)))
    print("## Totals, default universe (all seven frameworks)\n")
    print(
        "| snapshot | method | with a framework | none | "
        + " | ".join(f"{fw} only" for fw in FRAMEWORKS)
        + " | shared |"
    )
    print("|---|---|---:|---:|" + "---:|" * (len(FRAMEWORKS) + 1))
    for r in results:
        for method, total in r["totals"].items():
            cells = [f"{total.exclusive[fw]:,}" for fw in FRAMEWORKS]
            none = f"{total.none:,} ({_pct(total.none, total.models)})"
            print(
                f"| {r['name']} | {method} | {total.with_framework:,} | {none} | "
                + " | ".join(cells)
                + f" | {total.shared:,} |"
            )
    print("\n## none in text-generation\n")
    for r in results:
        for method, (none, models) in r["text_generation"].items():
            print(f"- {r['name']}, {method}: {none:,} of {models:,} ({_pct(none, models)})")
    print("\n## Rules: models each rule fires on\n")
    print("| rule | framework | methods | " + " | ".join(r["name"] for r in results) + " |")
    print("|---|---|---|" + "---:|" * len(results))
    for rule in RULES:
        methods = ",".join(m for m in METHODS if m in rule.methods)
        counts = " | ".join(f"{r['rule_counts'][rule.id]:,}" for r in results)
        print(f"| `{rule.id}` | {rule.framework} | {methods} | {counts} |")
    print("\n## Criteria\n")
    for r in results:
        print(
            f"- {r['name']}: {r['models']:,} models; SQL/Python disagreements {r['disagreements']}; repos holding "
            f"weights {r['weights']:,}, of which none under inferred {r['none_with_weights']:,} "
            f"({_pct(r['none_with_weights'], r['weights'])}); MLX repos {r['mlx']}; GGUF-only repos {r['gguf_only']}"
        )
    print("\n## Trend by creation year (inferred): models that ship each framework, alone or with others\n")
    for r in results:
        years = sorted(r["trend"])
        print(f"### {r['name']}\n")
        print("| year | models | " + " | ".join(FRAMEWORKS) + " |")
        print("|---|---:|" + "---:|" * len(FRAMEWORKS))
        for year in years:
            row = r["trend"][year]
            print(f"| {year} | {row['models']:,} | " + " | ".join(f"{_with(row, fw):,}" for fw in FRAMEWORKS) + " |")
        print()


if __name__ == "__main__":
    main()
