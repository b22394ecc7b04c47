"""hubcensus from a notebook.

(a) pandas and polars read the CSV and Parquet feeds of a running service;
(b) the same queries run in-process on a snapshot file, without the service.

Run it as a script, or paste the `# %%` cells into Jupyter (VS Code and PyCharm run them as cells):

    make demo                                   # in another terminal: the bundled 2022 crawl on :8000
    .venv/bin/python examples/notebook.py

    HUBCENSUS_URL       the service (default http://127.0.0.1:8000)
    HUBCENSUS_DATA_DIR  the snapshot store the service reads, for part (b) (default ./data, as `make demo`)
"""

# %% Setup: where the service and the snapshot files are
from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import pandas as pd
import polars as pl

BASE = os.environ.get("HUBCENSUS_URL", "http://127.0.0.1:8000")
DATA_DIR = Path(os.environ.get("HUBCENSUS_DATA_DIR", "data"))

# The question of the README: PyTorch against TensorFlow, decided by the models' tags.
FRAMEWORKS = ["pytorch", "tensorflow"]
COMPARE = {"method": "tags", "frameworks": ",".join(FRAMEWORKS)}
SHARE_COLUMNS = ["models", "with_framework", "pct.pytorch_only", "pct.tensorflow_only", "pct.shared"]

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
pl.Config.set_tbl_width_chars(200)

http = httpx.Client(base_url=BASE, timeout=60)
health = http.get("/healthz").raise_for_status().json()
print(f"service {BASE}: {health['snapshots']} snapshot(s), latest {health['latest']}")

# Pin the snapshot: `latest` moves when the worker publishes, an id never does. Every answer below is
# about this one snapshot, and the same URL gives the same numbers next year.
LATEST = http.get("/v1/snapshots/latest").raise_for_status().json()
SNAPSHOT = LATEST["id"]
print(f"pinned snapshot {SNAPSHOT} (taken {LATEST['taken_at']}, {LATEST['models']:,} models)")


def url(path: str, fmt: str, **params: str | int) -> str:
    """A feed URL on the pinned snapshot, for pandas to read directly."""
    query = httpx.QueryParams({**COMPARE, "snapshot": SNAPSHOT, **params, "_format": fmt})
    return f"{BASE}{path}?{query}"


# %% (a) pandas: framework share by task, straight from the CSV feed
share = pd.read_csv(url("/v1/frameworks/share", "csv"))
print("\n[pandas] share by task (top 8 tasks by models):")
print(share[["group", *SHARE_COLUMNS]].head(8).to_string(index=False))

# %% (a) pandas: share among the 30 most downloaded models, from the Parquet feed (types kept)
top30 = pd.read_parquet(url("/v1/frameworks/share", "parquet", top=30))
print("\n[pandas] the 30 most downloaded models, per task:")
print(top30[["group", "models", "exclusive.pytorch", "exclusive.tensorflow", "shared"]].to_string(index=False))

# %% (a) pandas: the trend, by the year the models were created ("unknown": no or placeholder createdAt)
trend = pd.read_csv(url("/v1/frameworks/trend", "csv", interval="year"))
print("\n[pandas] trend by year of creation:")
print(trend[["period", *SHARE_COLUMNS]].to_string(index=False))

# %% (a) pandas: history, one row per snapshot (over every snapshot, so no pin here)
history = pd.read_csv(f"{BASE}/v1/frameworks/history?{httpx.QueryParams({**COMPARE, '_format': 'csv'})}")
print("\n[pandas] history:")
for row in history.to_dict("records"):
    print(
        f"[service] {row['taken_at'][:10]}: {row['models']:,} models, PyTorch-only {row['pct.pytorch_only']:.2f} %, "
        f"TensorFlow-only {row['pct.tensorflow_only']:.2f} %, shared {row['pct.shared']:.2f} %"
    )
# In a notebook: history.plot(x="taken_at", y=["pct.pytorch_only", "pct.shared"])

# %% (a) pandas: a models list — the most downloaded models and their frameworks (by tags)
# (`bucket=tensorflow_only|pytorch_only|shared|none` keeps one bucket; `_sort=likes`, `q=bert` ... see /docs)
models = pd.read_csv(url("/v1/models", "csv", _size=5))
print("\n[pandas] the most downloaded models:")
print(models[["id", "pipeline_tag", "downloads", "frameworks"]].to_string(index=False))

# %% (a) polars: it cannot read these URLs itself (its HTTP reader needs byte Range requests, which the
# API does not serve), so httpx fetches the bytes and polars reads them from memory.
answer = http.get("/v1/frameworks/share", params={**COMPARE, "snapshot": SNAPSHOT, "_format": "parquet"})
by_task = pl.read_parquet(io.BytesIO(answer.raise_for_status().content))
print(f"\n[polars] share by task, from snapshot {answer.headers['X-Hubcensus-Snapshot']}:")
print(by_task.select("group", *SHARE_COLUMNS).head(5))


def read_all(path: str, **params: str | int) -> pl.DataFrame:
    """Every page of a feed into one polars frame, following the `Link: rel="next"` header.

    Parquet, not CSV: a Parquet page carries its columns' types, the same on every page. From CSV, polars
    infers each page's types from its values, and a page where every `downloads` is null reads as text,
    which then cannot be stacked on the pages where it is a number.
    """
    response = http.get(path, params={"snapshot": SNAPSHOT, **params, "_format": "parquet"}).raise_for_status()
    pages = [pl.read_parquet(io.BytesIO(response.content))]
    while "next" in response.links:
        response = http.get(response.links["next"]["url"]).raise_for_status()
        pages.append(pl.read_parquet(io.BytesIO(response.content)))
    return pl.concat(pages)


shared = read_all("/v1/models", **COMPARE, bucket="shared", _size=100)
print(f"\n[polars] {shared.height:,} models ship both PyTorch and TensorFlow weights (all pages); by task:")
print(shared.group_by("pipeline_tag").len().sort("len", descending=True).head(5))

# %% (b) In-process, without the service: the `queries` functions on the snapshot files themselves
from hubcensus.queries.filters import ModelFilter  # noqa: E402  (a notebook imports where it needs)
from hubcensus.queries.share import framework_share, framework_trend  # noqa: E402
from hubcensus.queries.store import SnapshotStore, open_snapshot  # noqa: E402

store = SnapshotStore(DATA_DIR)
snapshots = store.snapshots()  # newest first
if not snapshots:
    raise SystemExit(f"no snapshot in {DATA_DIR.resolve()}: set HUBCENSUS_DATA_DIR to the service's data dir")
print(f"\n[in-process] {len(snapshots)} snapshot(s) in {DATA_DIR}:")
for meta in snapshots:
    print(f"  {meta.id}  {meta.taken_at:%Y-%m-%d}  {meta.models:>7,} models  {meta.kind}  {meta.source}")

# %% (b) The 30 most downloaded models of the pinned snapshot, per task
con = open_snapshot(DATA_DIR, SNAPSHOT)  # read-only; open_snapshot(DATA_DIR) opens the newest
result = framework_share(con, method="tags", frameworks=FRAMEWORKS, filters=ModelFilter(top=30))
print(f"\n[in-process] top 30: {result.total.models} models, {result.total.pct}")
print(result.rows.to_pandas()[["group", "models", "exclusive.pytorch", "exclusive.tensorflow", "shared"]])

# The same numbers both ways: the service answers with the very same functions.
over_http = http.get("/v1/frameworks/share", params={**COMPARE, "snapshot": SNAPSHOT, "top": 30}).json()["total"]
assert over_http == result.total.model_dump(), (over_http, result.total)
print("[in-process] agrees with the service: top 30 totals are identical")

# %% (b) The trend in-process, as a polars frame (pl.from_arrow: no copy through pandas)
yearly = framework_trend(con, interval="year", method="tags", frameworks=FRAMEWORKS)
print("\n[in-process] trend by year of creation:")
print(pl.from_arrow(yearly.rows).select("period", *SHARE_COLUMNS))
con.close()

# %% (b) Every snapshot, oldest first: the history, computed from the files
for meta in reversed(snapshots):
    with open_snapshot(DATA_DIR, meta.id) as snapshot_con:
        total = framework_share(snapshot_con, method="tags", frameworks=FRAMEWORKS).total
    print(
        f"[in-process] {meta.taken_at:%Y-%m-%d}: {total.models:,} models, "
        f"PyTorch-only {total.pct['pytorch_only']:.2f} %, TensorFlow-only {total.pct['tensorflow_only']:.2f} %, "
        f"shared {total.pct['shared']:.2f} %"
    )

http.close()
