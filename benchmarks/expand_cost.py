"""What asking the Hub for the classifier's facts costs: bytes and time per page of `/api/models`.

    .venv/bin/python -m benchmarks.expand_cost

Serves real records (the 2025 fine-tune trees: full ModelInfo objects with config and transformersInfo; and
the 2022 crawl, whose objects carry config) from tests/hubserver.py, and pages through all of them with the
real client's helpers, as `hubcensus ingest` does, once with the fields of classifier 2026.11.1 and once with
today's (`ingest.hub.EXPAND`). Prints bytes per page (1,000 models) and time per page for each.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from hubcensus.ingest.hub import EXPAND
from tests.hubserver import HubServer, load_records

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {
    "2025 fine-tune trees (1,983 ModelInfo)": ROOT
    / "tests"
    / "fixtures"
    / "hamidah_2025_model_trees_modelinfo.jsonl.gz",
    "2022 crawl (29,432 full objects)": ROOT / "hubcensus" / "data" / "hub-2022-02-21.jsonl.gz",
}
# What classifier 2026.11.1 asked for: no config, no transformersInfo; `sha`, which no snapshot stored.
BEFORE = [e for e in EXPAND if e not in ("config", "transformersInfo")] + ["sha"]
ROUNDS = 5


def page_through(url: str, expand: list[str]) -> tuple[list[int], list[float]]:
    """Bytes and seconds of every page, following the Link header as the ingest does."""
    sizes, times = [], []
    with httpx.Client(timeout=60) as client:
        next_url: str | None = f"{url}/api/models"
        params: dict[str, Any] | None = {"limit": 1000, "expand": expand}
        while next_url is not None:
            started = time.perf_counter()
            response = client.get(next_url, params=params)
            response.raise_for_status()
            response.json()  # parsed, as the ingest parses every page
            times.append(time.perf_counter() - started)
            sizes.append(len(response.content))
            next_url = response.links.get("next", {}).get("url")
            params = None
    return sizes, times


def main() -> None:
    """Print the table."""
    print("| records | fields | pages | bytes / page (1,000 models) | ms / page, median of 5 rounds |")
    print("|---|---|---:|---:|---:|")
    for name, path in DATASETS.items():
        with HubServer(load_records(path), page_size=1000) as hub:
            for label, expand in (("2026.11.1 (no config)", BEFORE), ("today (+config, transformersInfo)", EXPAND)):
                page_through(hub.url, expand)  # warm the server's projection cache
                rounds = [page_through(hub.url, expand) for _ in range(ROUNDS)]
                sizes = rounds[0][0]
                per_page_ms = statistics.median(1000 * sum(t) / len(t) for _, t in rounds)
                full = [s for s in sizes[:-1]] or sizes  # the last page is partial
                print(f"| {name} | {label} | {len(sizes)} | {statistics.mean(full):,.0f} | {per_page_ms:.1f} |")


if __name__ == "__main__":
    main()
