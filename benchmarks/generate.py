"""Make a Hub of N models by resampling real Hub records, streamed to a JSON Lines .gz file.

Whole records are resampled from the real material in `shared/data/hub-real` (see its PROVENANCE.md), so
tags, pipeline_tag, library_name, siblings (file names), downloads and likes keep their real *joint*
distribution: no field is ever mixed across records. What is new per model:

- `id`: `<author>/<real name>-<n>`, unique by `n`; `author` is the record's real author, or, for a share
  of models (`--synthetic-authors`), a synthetic one from a heavy-tailed population (a few authors with
  many models, many with one or two), as on the Hub.
- `createdAt`: records that carry one keep it (the Hub's `2022-03-02T23:29:04.000Z` placeholder verbatim,
  real dates moved by a few weeks of jitter, so the months fill in); records that have none (the 2022
  crawl, the 2024 top-downloads list) get the placeholder with probability `--placeholder-share`, else a
  date from the Hub's growth curve (exponential, doubling every `--doubling-days`, from `--created-from`
  to `--created-until`). `lastModified` is kept when it is not before `createdAt`, else follows it.
- `sha`: 40 random hex digits; `gated`: the record's value, `false` when it had none (the modern API).

Sources (`--mix`, weights of whole-record draws):

- `saranscript`: the 2022-02-21 full crawl (`raw/saranscript_2022-02-21_api_models_full.jsonl.gz`, 29,432
  records with siblings, library_name, tags): the only complete, unbiased crawl.
- `hamidah`: 2025 fine-tune trees (normalized, 1,983 records with siblings and createdAt): modern repos
  (safetensors, gguf, many shards).
- `rimel`: 2024-25 trending/top lists (normalized, 4,712 records with tags, createdAt, library_name).
- `enochlev`: 2024-09 top ~10k by downloads (normalized, 9,715 records with tags, no siblings).

Deterministic for a given `--seed` and inputs (gzip header without a timestamp). Memory stays flat: the
pool is ~45k pre-serialised records, and output is written record by record.

    python -m benchmarks.generate -n 2000000 -o benchmarks/data/hub-2000000.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.child import peak_rss

GENERATOR_VERSION = 1
DEFAULT_SOURCE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hub-real"
PLACEHOLDER = "2022-03-02T23:29:04.000Z"
PLACEHOLDER_PREFIX = "2022-03-02T23:29:0"
DEFAULT_MIX = {"saranscript": 0.55, "hamidah": 0.20, "rimel": 0.15, "enochlev": 0.10}
# Where each pool comes from: the raw 2022 crawl, and the tagged records of the normalized file per source.
_NORMALIZED_SOURCES = {
    "hamidah": "hamidahoderinwale/model_metadata_analyses",
    "rimel": "RIMEL-UCA/RIMEL-UCA.github.io",
    "enochlev": "enochlev/CS573_Documentation_Quality",
}
_DAY = 86_400.0
_JITTER_DAYS = 45.0
_LAST_MODIFIED_MEAN_DAYS = 30.0


@dataclass(frozen=True)
class PoolRecord:
    """One real record, with its constant JSON fragments serialised once."""

    name: str  # the repository name (after the author)
    author: str | None
    created_at: str | None  # the Hub's text, when the source has it
    last_modified: float | None  # epoch seconds
    middle: str  # "downloads":…,"likes":…,"tags":…,"pipeline_tag":…,"library_name":…,"private":…,"gated":…
    tail: str  # "siblings":…


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def _pool_record(rec: dict[str, Any]) -> PoolRecord:
    model_id = rec.get("id") or rec["modelId"]
    author, _, name = model_id.rpartition("/")
    siblings = rec.get("siblings")
    gated = rec.get("gated")
    middle = {
        "downloads": rec.get("downloads"),
        "likes": rec.get("likes"),
        "tags": rec.get("tags"),
        "pipeline_tag": rec.get("pipeline_tag"),
        "library_name": rec.get("library_name"),
        "private": bool(rec.get("private") or False),
        "gated": False if gated is None else gated,
    }
    tail = None if siblings is None else [{"rfilename": s["rfilename"]} for s in siblings]
    return PoolRecord(
        name=name[:80],
        author=rec.get("author") or author or None,
        created_at=rec.get("createdAt"),
        last_modified=_epoch(rec.get("lastModified")),
        middle=_dumps(middle)[1:-1],
        tail='"siblings":' + _dumps(tail),
    )


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def load_pools(source_dir: Path, names: list[str]) -> dict[str, list[PoolRecord]]:
    """The real records of each named source, in file order (so draws are reproducible)."""
    pools: dict[str, list[PoolRecord]] = {name: [] for name in names}
    if "saranscript" in pools:
        raw = source_dir / "raw" / "saranscript_2022-02-21_api_models_full.jsonl.gz"
        pools["saranscript"] = [_pool_record(r) for r in _iter_jsonl(raw)]
    wanted = {src: name for name, src in _NORMALIZED_SOURCES.items() if name in pools}
    if wanted:
        for rec in _iter_jsonl(source_dir / "normalized" / "hub_models.jsonl.gz"):
            origin = str(rec.get("_source", "")).split("@")[0].split(":")[0]
            name = wanted.get(origin)
            if name is not None and rec.get("tags") is not None:
                pools[name].append(_pool_record(rec))
    unknown = [n for n in names if n not in DEFAULT_MIX]
    if unknown:
        raise SystemExit(f"unknown source(s) in --mix: {unknown}; known: {sorted(DEFAULT_MIX)}")
    empty = [n for n, pool in pools.items() if not pool]
    if empty:
        raise SystemExit(f"no records found for {empty} under {source_dir}")
    return pools


def parse_mix(text: str) -> dict[str, float]:
    """`saranscript=0.55,hamidah=0.2` → weights."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        mix[name.strip()] = float(weight)
    return mix


@dataclass(frozen=True)
class Options:
    """What shapes the generated Hub besides the real records."""

    n: int
    seed: int = 42
    mix: tuple[tuple[str, float], ...] = tuple(DEFAULT_MIX.items())
    placeholder_share: float = 0.05
    synthetic_authors: float = 0.5
    created_from: str = "2021-01-01"
    created_until: str = "2026-11-27"
    doubling_days: float = 365.0

    def as_dict(self) -> dict[str, Any]:
        """The options as recorded beside the output (and compared to reuse a cached file)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "n": self.n,
            "seed": self.seed,
            "mix": dict(self.mix),
            "placeholder_share": self.placeholder_share,
            "synthetic_authors": self.synthetic_authors,
            "created_from": self.created_from,
            "created_until": self.created_until,
            "doubling_days": self.doubling_days,
        }


def generate(opts: Options, source_dir: Path, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Write `opts.n` records to `out` (gzip JSON Lines); returns what was done, with peak RSS."""
    started = time.perf_counter()
    names = [name for name, _ in opts.mix]
    pools = load_pools(source_dir, names)
    weights = [w for _, w in opts.mix]
    rng = random.Random(opts.seed)
    lo = _epoch(opts.created_from + "T00:00:00Z") or 0.0
    hi = _epoch(opts.created_until + "T00:00:00Z") or 0.0
    placeholder_epoch = _epoch(PLACEHOLDER) or 0.0
    span = (hi - lo) / (opts.doubling_days * _DAY)
    growth = 2.0**span - 1.0
    authors_population = max(100, opts.n // 4)
    drawn = dict.fromkeys(names, 0)
    placeholders = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    # mtime=0 and no file name in the gzip header: the same seed gives the same bytes.
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=3, mtime=0) as gz:
        buf: list[str] = []
        for n in range(opts.n):
            source = rng.choices(names, weights)[0]
            pool = pools[source]
            rec = pool[rng.randrange(len(pool))]
            drawn[source] += 1
            if rec.author is None or rng.random() < opts.synthetic_authors:
                author = f"user-{int(authors_population * rng.random() ** 3)}"
            else:
                author = rec.author
            model_id = f"{author}/{rec.name}-{n}"
            # createdAt: kept (placeholder verbatim, real dates jittered), or placeholder / growth curve.
            created: float | None
            if rec.created_at is not None and rec.created_at.startswith(PLACEHOLDER_PREFIX):
                created_text, created = rec.created_at, None
            elif rec.created_at is not None:
                jittered = (_epoch(rec.created_at) or lo) + rng.uniform(-_JITTER_DAYS, _JITTER_DAYS) * _DAY
                created = min(max(jittered, placeholder_epoch + _DAY), hi)
                created_text = _iso(created)
            elif rng.random() < opts.placeholder_share:
                created_text, created = PLACEHOLDER, None
            else:
                created = lo + opts.doubling_days * _DAY * math.log2(1.0 + rng.random() * growth)
                created_text = _iso(created)
            if created is None:
                placeholders += 1
            floor = created if created is not None else placeholder_epoch
            modified = rec.last_modified
            if modified is None or (created is not None and modified < created):
                modified = min(floor + rng.expovariate(1.0 / (_LAST_MODIFIED_MEAN_DAYS * _DAY)), hi)
            sha = f"{rng.getrandbits(160):040x}"
            buf.append(
                f'{{"id":{_dumps(model_id)},"author":{_dumps(author)},"createdAt":"{created_text}",'
                f'"lastModified":"{_iso(modified)}",{rec.middle},"sha":"{sha}",{rec.tail}}}\n'
            )
            if len(buf) >= 2000:
                gz.write("".join(buf).encode())
                buf.clear()
                if progress and (n + 1) % 200_000 == 0:
                    rate = (n + 1) / (time.perf_counter() - started)
                    print(f"  generated {n + 1:,} models ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        gz.write("".join(buf).encode())
    tmp.replace(out)
    seconds = time.perf_counter() - started
    info = {
        **opts.as_dict(),
        "source_dir": str(source_dir),
        "pool_records": {name: len(pool) for name, pool in pools.items()},
        "drawn": drawn,
        "placeholder_created_at": placeholders,
        "bytes": out.stat().st_size,
        "seconds": round(seconds, 2),
        "peak_rss_bytes": peak_rss(),
        "rss_measure": "VmHWM",
    }
    out.with_name(out.name + ".meta.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def cached_or_generate(opts: Options, source_dir: Path, out: Path) -> dict[str, Any]:
    """Reuse `out` if it was generated with the same options, else generate it in a subprocess (so that
    the peak RSS recorded is the generator's alone)."""
    meta_path = out.with_name(out.name + ".meta.json")
    if out.exists() and meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in opts.as_dict()} == opts.as_dict() and meta.get("rss_measure") == "VmHWM":
            return {**meta, "cached": True}
    cmd = [sys.executable, "-m", "benchmarks.generate", "-n", str(opts.n), "-o", str(out), "--source", str(source_dir)]
    cmd += ["--seed", str(opts.seed), "--mix", ",".join(f"{k}={v}" for k, v in opts.mix)]
    cmd += ["--placeholder-share", str(opts.placeholder_share), "--synthetic-authors", str(opts.synthetic_authors)]
    cmd += ["--created-from", opts.created_from, "--created-until", opts.created_until]
    cmd += ["--doubling-days", str(opts.doubling_days)]
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parent.parent, stdout=sys.stderr)
    return {**json.loads(meta_path.read_text()), "cached": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--models", type=int, required=True, help="how many models")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .jsonl.gz")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the hub-real folder [%(default)s]")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--mix",
        type=parse_mix,
        default=DEFAULT_MIX,
        help="weights of the sources, e.g. saranscript=0.55,hamidah=0.2,rimel=0.15,enochlev=0.1",
    )
    parser.add_argument("--placeholder-share", type=float, default=0.05, help="of records without createdAt")
    parser.add_argument("--synthetic-authors", type=float, default=0.5, help="share of synthetic authors")
    parser.add_argument("--created-from", default="2021-01-01")
    parser.add_argument("--created-until", default="2026-11-27")
    parser.add_argument("--doubling-days", type=float, default=365.0, help="the Hub's growth: doubling time")
    args = parser.parse_args(argv)
    opts = Options(
        n=args.models,
        seed=args.seed,
        mix=tuple(args.mix.items()),
        placeholder_share=args.placeholder_share,
        synthetic_authors=args.synthetic_authors,
        created_from=args.created_from,
        created_until=args.created_until,
        doubling_days=args.doubling_days,
    )
    info = generate(opts, args.source, args.out)
    print(
        f"{args.out}: {info['n']:,} models, {info['bytes'] / 1e6:,.1f} MB gz, {info['seconds']:.1f} s "
        f"({info['n'] / max(info['seconds'], 1e-9):,.0f} models/s), peak RSS {info['peak_rss_bytes'] / 2**20:,.0f} MiB"
    )
    print(f"drawn per source: {info['drawn']}; placeholder createdAt: {info['placeholder_created_at']:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
