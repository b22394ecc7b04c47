"""What a benchmark run reports: the table of measures with their targets (PASS/MISS), the gross-regression
bounds of `--quick`, the machine it ran on, and the table as Markdown for docs/PERFORMANCE.md."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from typing import Any

from benchmarks.processes import ROOT

MB = 1e6
MiB = 2**20
GiB = 2**30


@dataclass
class Row:
    section: str
    measure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: no target


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def _fmt_bytes(x: float) -> str:
    return f"{x / MiB:,.0f} MiB" if x >= 10 * MiB else f"{x / MiB:,.1f} MiB"


def size_rows(n: int, r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    sec = f"N={n:,}"
    gen = r["generate"]
    rows.append(Row(sec, "generate (cached)" if gen.get("cached") else "generate", f"{gen['seconds']:.1f} s"))
    rows.append(Row(sec, "generator peak RSS", _fmt_bytes(gen["peak_rss_bytes"])))
    ing = r["ingest"]
    rows.append(
        Row(sec, "ingest models/s", _fmt_rate(ing["models_per_s"]), "≥ 20,000/s", ing["models_per_s"] >= 20_000)
    )
    rows.append(
        Row(
            sec,
            "ingest worker peak RSS",
            _fmt_bytes(ing["peak_rss_bytes"]) + _phases(ing),
            "≤ 1 GiB",
            ing["peak_rss_bytes"] <= GiB,
        )
    )
    if "ingest_probe" in r:
        probe = r["ingest_probe"]
        rows.append(Row(sec, f"ingest peak RSS at N={probe['models']:,}", _fmt_bytes(probe["peak_rss_bytes"])))
    imp, raw = r["import"], r["read_json"]
    rows.append(Row(sec, "import models/s", _fmt_rate(imp["models_per_s"])))
    rows.append(Row(sec, "import peak RSS", _fmt_bytes(imp["peak_rss_bytes"]) + _phases(imp)))
    rows.append(Row(sec, "DuckDB read_json models/s", _fmt_rate(raw["models_per_s"])))
    ratio = imp["models_per_s"] / raw["models_per_s"]
    rows.append(Row(sec, "import / read_json rate", f"{ratio:.1%}", "≥ 50%", ratio >= 0.5))
    # The size and share targets are stated for the whole Hub (2M models); smaller runs show the figure only.
    whole_hub = n >= 2_000_000
    rows.append(
        Row(
            sec,
            "snapshot on disk",
            f"{imp['snapshot_bytes'] / MB:,.1f} MB ({imp['snapshot_bytes'] / n:,.0f} B/model)",
            "≤ 150 MB" if whole_hub else "(150 MB at 2M)",
            imp["snapshot_bytes"] <= 150 * MB if whole_hub else None,
        )
    )
    rows.append(Row(sec, "  of which blocks in use", f"{imp['snapshot_used_bytes'] / MB:,.1f} MB"))
    rows.append(Row(sec, "  read_json table on disk", f"{raw['db_bytes'] / MB:,.1f} MB"))
    if "backfill" in r:
        rows.extend(backfill_rows(sec, r["backfill"]))
    q = r["queries"]
    for key, res in q.items():
        u, c, s = res["uncached"], res["cached"], res["sql"]
        value = (
            f"p50 {u['p50_ms']:.1f} ms, p99 {u['p99_ms']:.1f} ms | SQL p50 {s['p50_ms']:.1f} ms "
            f"(x{res['ratio_to_sql']:.1f})"
            + (f" | raw-derivation SQL {res['raw_sql']['p50_ms']:.1f} ms" if "raw_sql" in res else "")
            + f" | cached p50 {c['p50_ms']:.2f} ms"
        )
        if key.startswith("share_task_"):
            ok = u["p50_ms"] <= 50 and res["ratio_to_sql"] <= 2
            target = "p50 ≤ 50 ms, ≤ 2x SQL" + ("" if whole_hub else " (at 2M)")
            rows.append(Row(sec, res["label"], value, target, ok if whole_hub else None))
        else:
            rows.append(Row(sec, res["label"], value))
    share = q["share_task_inferred"]["cached"]["p50_ms"]
    rows.append(Row(sec, "cached share p50 (server)", f"{share:.2f} ms", "≤ 2 ms", share <= 2))
    http = r["http"]
    hz, cs = http["healthz"], http["cached_share"]
    rows.append(
        Row(sec, "HTTP /healthz c=32", f"{hz['rps']:,.0f} req/s, p50 {hz['p50_ms']:.1f} ms, p99 {hz['p99_ms']:.1f} ms")
    )
    rows.append(
        Row(
            sec,
            "HTTP cached share c=32",
            f"{cs['rps']:,.0f} req/s, p50 {cs['p50_ms']:.1f} ms, p99 {cs['p99_ms']:.1f} ms",
            "≥ 1,000 req/s, p99 ≤ 50 ms",
            cs["rps"] >= 1000 and cs["p99_ms"] <= 50 and cs["errors"] == 0,
        )
    )
    mem = http["memory"]
    after_load = _fmt_bytes(http["memory_after_load"]["VmHWM"])
    rows.append(
        Row(
            sec,
            f"API peak RSS, {http['snapshots']} snapshots queried",
            f"{_fmt_bytes(mem['VmHWM'])} (after the HTTP load on the latest only: {after_load})",
            "(no target)",
        )
    )
    return rows


def weekly_rows(n: int, w: dict[str, Any]) -> list[Row]:
    """The history across a store of weekly snapshots (benchmarks/weekly.py), and what years of them cost."""
    sec = f"N={n:,}, {w['weeks']} weekly"
    whole_hub = n >= 2_000_000
    disk, h, mem = w["disk"], w["history"], w["memory"]
    rows = [
        Row(
            sec,
            "store built by SQL",
            f"{w['build_s']:.0f} s ({w['models']['first']:,} -> {w['models']['last']:,} models)",
        ),
        Row(
            sec,
            "disk per snapshot",
            f"{disk['mean_bytes'] / MB:,.1f} MB mean, {disk['last']['bytes'] / MB:,.1f} MB newest "
            f"({disk['bytes_per_model']:.0f} B/model); summary {disk['summary_mean_bytes'] / 1e3:,.1f} kB",
            "reported",
        ),
        Row(sec, "disk, whole store", f"{disk['total_bytes'] / 1e9:,.2f} GB"),
        Row(
            sec,
            f"history across {w['weeks']}, uncached",
            f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms (first, loading the summaries: "
            f"{w['history_first_ms']:.0f} ms)",
            "p50 ≤ 100 ms" + ("" if whole_hub else " (at 2M)"),
            h["p50_ms"] <= 100 if whole_hub else None,
        ),
        Row(sec, "  by task", f"p50 {w['history_by_task']['p50_ms']:.1f} ms"),
        Row(sec, "  from the model tables (min_downloads)", f"{w['history_models_ms']:,.0f} ms (one request)"),
        Row(sec, "/v1/snapshots", f"p50 {w['snapshots_list']['p50_ms']:.1f} ms"),
        Row(sec, f"share on {w['shares']['n']} of them", f"p50 {w['shares']['p50_ms']:.1f} ms (attach included)"),
        Row(
            sec,
            "API peak RSS",
            f"{_fmt_bytes(mem['VmHWM'])} (after the model-table history: "
            f"{_fmt_bytes(w['memory_after_fallback']['VmHWM'])})",
            "≤ 1.5 GiB",
            mem["VmHWM"] <= 1.5 * GiB,
        ),
    ]
    year = w["year"]
    rows.append(
        Row(
            sec,
            "a year of snapshots at this size",
            f"weekly {year['weekly_year'] / 1e9:,.1f} GB, daily {year['daily_year'] / 1e9:,.1f} GB "
            f"({year['snapshot'] / MB:,.0f} MB each)",
        )
    )
    return rows


def _phases(r: dict[str, Any]) -> str:
    if "peak_rss_publish_bytes" not in r:
        return ""
    if r["publish_s"] < 0.05:
        # DuckDB's JSON reader writes the published table itself: publishing is only the rename.
        return " (publish: a rename)"
    return (
        f" (streaming {_fmt_bytes(r['peak_rss_stream_bytes'])}, "
        f"publish {_fmt_bytes(r['peak_rss_publish_bytes'])} in {r['publish_s']:.1f} s)"
    )


def rate_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for r in results:
        # With fixed windows the calls of the first window are free: the last window opens at
        # (windows - 1) x w, so a perfect client finishes a little after that, below pages ÷ rate.
        windows = math.ceil(r["pages"] / r["quota"])
        fixed = (windows - 1) * r["window_s"]
        rows.append(
            Row(
                "rate-limited",
                f"ingest {r['models']:,} models, {r['pages']} pages, {r['quota']}/{r['window_s']:g}s ({r['variant']})",
                f"{r['seconds']:.1f} s vs floor {r['floor_s']:.1f} s = x{r['ratio_to_floor']:.2f} "
                f"(last window opens at {fixed:.0f} s); {r['server']['throttled']} x 429",
                "≤ 1.1x floor",
                r["ratio_to_floor"] <= 1.1,
            )
        )
    return rows


def backfill_rows(sec: str, b: dict[str, Any]) -> list[Row]:
    """Backfill of one hub-stats-style Parquet file from the loopback Hub, against DuckDB's read_parquet of it."""
    ranged, raw = b["ranged"], b["read_parquet"]
    rows = [
        Row(sec, "DuckDB read_parquet models/s", _fmt_rate(raw["models_per_s"])),
        Row(
            sec,
            "backfill models/s (ranged reads)",
            f"{_fmt_rate(ranged['models_per_s'])} ({ranged['seconds']:.1f} s, reading {ranged['fetch_s']:.1f} s)",
        ),
        Row(
            sec,
            "backfill / read_parquet rate",
            f"{ranged['vs_read_parquet']:.1%}",
            "≥ 50%",
            ranged["vs_read_parquet"] >= 0.5,
        ),
        Row(sec, "backfill peak RSS", _fmt_bytes(ranged["peak_rss_bytes"]), "≤ 1 GiB", ranged["peak_rss_bytes"] <= GiB),
    ]
    if "download" in b:
        d = b["download"]
        rows.append(
            Row(
                sec,
                "  full download, then import",
                f"{_fmt_rate(d['models_per_s'])} ({d['vs_read_parquet']:.1%} of read_parquet), peak RSS "
                f"{_fmt_bytes(d['peak_rss_bytes'])}",
            )
        )
    return rows


# Gross-regression bounds for `--quick`: ratios only, never absolute times; generous on purpose (a few
# times the values measured when they were set), so that only a real regression trips them.
BOUNDS: dict[str, tuple[str, float]] = {
    "share_vs_sql": ("<=", 40.0),  # share by task (inferred) p50 / plain SQL p50; measured ~4-8 at 20k
    "cached_vs_uncached": ("<=", 0.75),  # cached p50 / uncached p50 of the same share; measured ~0.25
    # import rate / read_json rate; measured ~1.1 at 20k, 0.64 at 2M with DuckDB's reader; the record-by-record
    # reader alone gives 0.1-0.3, so this trips if clean dumps stop taking the fast path.
    "import_vs_read_json": (">=", 0.4),
    "ingest_vs_read_json": (">=", 0.04),  # ingest rate / read_json rate; measured ~0.3 at 20k, 0.085 at 2M
    "http_share_vs_healthz": (">=", 0.15),  # cached share req/s / healthz req/s at c=32; measured ~0.4
    "rate_limited_vs_floor": ("<=", 1.5),  # rate-limited ingest / pages÷rate; measured ~0.8-1.0
    # Ingest peak-RSS increase over the imported libraries, at N / at N/5: 1 if memory is flat, 5 if it
    # grows linearly with N; measured ~1.6 (DuckDB's buffer pool grows a little with the staged data).
    "ingest_rss_growth": ("<=", 3.0),
    "snapshot_vs_read_json": ("<=", 5.0),  # snapshot bytes / read_json table bytes; measured ~1.7
    "backfill_vs_read_parquet": (">=", 0.15),  # backfill rate / read_parquet rate; measured ~0.4 at 20k-100k
}


def checks(size_results: dict[int, dict[str, Any]], rate: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, r in size_results.items():
        q = r["queries"]["share_task_inferred"]
        values: dict[str, float] = {
            "share_vs_sql": r["queries"]["share_task_inferred"]["ratio_to_sql"],
            "cached_vs_uncached": q["cached"]["p50_ms"] / q["uncached"]["p50_ms"],
            "import_vs_read_json": r["import"]["models_per_s"] / r["read_json"]["models_per_s"],
            "ingest_vs_read_json": r["ingest"]["models_per_s"] / r["read_json"]["models_per_s"],
            "http_share_vs_healthz": r["http"]["cached_share"]["rps"] / r["http"]["healthz"]["rps"],
            "snapshot_vs_read_json": r["import"]["snapshot_bytes"] / r["read_json"]["db_bytes"],
        }
        if "backfill" in r:
            values["backfill_vs_read_parquet"] = r["backfill"]["ranged"]["vs_read_parquet"]
        if "ingest_probe" in r:
            big, small = r["ingest"], r["ingest_probe"]
            grow_big = big["peak_rss_bytes"] - big["rss_after_imports_bytes"]
            grow_small = max(small["peak_rss_bytes"] - small["rss_after_imports_bytes"], 1)
            values["ingest_rss_growth"] = grow_big / grow_small
        for name, value in values.items():
            op, bound = BOUNDS[name]
            ok = value <= bound if op == "<=" else value >= bound
            out.append({"check": name, "n": n, "value": round(value, 4), "bound": f"{op} {bound:g}", "ok": ok})
    for r in rate:
        op, bound = BOUNDS["rate_limited_vs_floor"]
        value = r["ratio_to_floor"]
        out.append(
            {"check": "rate_limited_vs_floor", "n": r["models"], "value": round(value, 4), "bound": f"{op} {bound:g}"}
            | {"ok": value <= bound}
        )
    return out


def render_table(rows: list[Row]) -> str:
    head = ("", "measure", "value", "target", "")
    cells = [head] + [
        (r.section, r.measure, r.value, r.target, "" if r.ok is None else ("PASS" if r.ok else "MISS")) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(c[j].ljust(widths[j]) for j in range(5)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| N | measure | value | target | |", "|---|---|---|---|---|"]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for r in rows:
        status = "" if r.ok is None else ("**PASS**" if r.ok else "**MISS**")
        lines.append(f"| {r.section} | {cell(r.measure)} | {cell(r.value)} | {cell(r.target)} | {status} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import duckdb

    def cmd(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(args, capture_output=True, text=True, check=False).stdout
        return ""

    lscpu = {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in cmd("lscpu").splitlines())
        if k.strip() in ("Architecture", "CPU(s)", "Model name", "Thread(s) per core", "Core(s) per socket")
    }
    product = ["ingest", "queries", "service", "hubcensus"]
    return {
        "git_commit": cmd("git", "-C", str(ROOT), "rev-parse", "HEAD").strip(),
        "git_product_changes": cmd("git", "-C", str(ROOT), "status", "--porcelain", "--", *product).strip(),
        "lscpu": lscpu,
        "free_h": cmd("free", "-h").strip(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
