"""What the tests read, and the answers they hold the product against, computed without SQL.

The real files (the bundled 2022 crawl and the fixtures, with the dates they were taken), and the direct
computation of a model's bucket and of a share, in Python from the raw API records.
"""

from __future__ import annotations

import gzip
import json
import tarfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from hubcensus.ingest.records import parse_record
from hubcensus.queries.frameworks import FRAMEWORKS, Facts, Method, classify, frameworks_of

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUNDLED = ROOT / "hubcensus" / "data" / "hub-2022-02-21.jsonl.gz"
TAKEN_2022 = datetime(2022, 2, 21, tzinfo=UTC)
# Two real Hub listings (list responses, without siblings), and when they were taken.
LIST_2024 = FIXTURES / "rimel_2024-12-15_list.json.gz"
TAKEN_2024 = datetime(2024, 12, 15, tzinfo=UTC)
LIST_2025 = FIXTURES / "rimel_2025-01-14_list.json.gz"
TAKEN_2025 = datetime(2025, 1, 14, tzinfo=UTC)
# The 2025 fine-tune trees (full model infos), and the snapshot classifier 2026.11.1 wrote of them.
TREES = FIXTURES / "hamidah_2025_model_trees_modelinfo.jsonl.gz"
OLD_RELEASE = FIXTURES / "snapshot-2026.11.1-fine-tune-trees.tar.gz"
OLD_ID = "20250426T000000Z-6ed330"


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON Lines .gz file."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def bucket_of(rec: dict[str, Any], method: str = "tags", universe: Sequence[str] = FRAMEWORKS) -> str:
    """The bucket of one raw API record, computed in Python: a framework name, 'shared' or 'none'."""
    masks = classify(Facts.of_row(parse_record(rec)))
    fws = [f for f in frameworks_of(masks[cast(Method, method)]) if f in universe]
    return "none" if not fws else fws[0] if len(fws) == 1 else "shared"


def expected_share(
    records: list[dict[str, Any]], method: str, universe: Sequence[str], by: str = "pipeline_tag", **filters: str
) -> dict[str | None, Counter[str]]:
    """Share per group computed directly from the raw records, without SQL."""
    out: dict[str | None, Counter[str]] = {}
    for rec in records:
        if all(rec.get(k) == v for k, v in filters.items()):
            out.setdefault(rec.get(by), Counter())[bucket_of(rec, method, universe)] += 1
    return out


def old_release_store(data_dir: Path) -> Path:
    """A data dir holding the snapshot hubcensus at classifier 2026.11.1 wrote (no config facts stored)."""
    (data_dir / "snapshots").mkdir(parents=True)
    with tarfile.open(OLD_RELEASE) as tar:
        tar.extractall(data_dir / "snapshots", filter="data")
    return data_dir
