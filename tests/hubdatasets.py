"""Dataset repos for the local Hub (tests/hubserver.py), and hub-stats-style Parquet files built from real records.

The endpoints are those `huggingface_hub` calls for `HfApi.dataset_info`, `list_repo_tree`, `list_repo_commits`,
`get_paths_info`, `HfFileSystem.open` (ranged reads) and `hf_hub_download` (found by reading its source and
logging what it requests)::

    GET  /api/datasets/{repo}[/revision/{rev}]          the repo at a revision: id, sha, siblings
    GET  /api/datasets/{repo}/tree/{rev}[/{path}]       entries (recursive=1: all below), LFS info for .parquet
    POST /api/datasets/{repo}/paths-info/{rev}          entries for the form's `paths`
    GET  /api/datasets/{repo}/commits/{rev}?p=N          commits newest first, 50 a page, Link rel="next"
    HEAD/GET /datasets/{repo}/resolve/{rev}/{path}      the file; ETag, X-Repo-Commit, Range (206), Accept-Ranges

Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound), which the client maps to its
exceptions. Faults are injected with HubServer's hook (a file gone, a 5xx mid-download) or by serving damaged bytes
(a truncated Parquet file).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import duckdb

COMMITS_PAGE = 50
HUBSTATS_DOWNLOADS_ALL_TIME = date(2025, 2, 26)  # hub-stats has downloadsAllTime from this day
HUBSTATS_TRENDING = date(2024, 10, 1)  # and trendingScore from about this month
HUBSTATS_GATED = date(2025, 6, 1)  # `gated` only in some weeks: here from this day


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo: bytes, or a file on disk (served by ranges, never read whole)."""

    data: bytes | Path

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end)."""
        if isinstance(self.data, bytes):
            return self.data[start:end]
        with self.data.open("rb") as stream:
            stream.seek(start)
            return stream.read(end - start)

    def chunks(self, start: int, end: int, size: int = 1 << 20) -> Iterator[bytes]:
        """Bytes [start, end) in chunks, for streaming a large file."""
        for at in range(start, end, size):
            yield self.read(at, min(at + size, end))

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks(0, self.size, 8 << 20):
            digest.update(chunk)
        return digest.hexdigest()

    @property
    def git_oid(self) -> str:
        digest = hashlib.sha1(f"blob {self.size}\0".encode())
        for chunk in self.chunks(0, self.size, 8 << 20):
            digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class Commit:
    sha: str
    date: datetime
    title: str
    files: dict[str, RepoFile]


@dataclass
class DatasetRepo:
    """A dataset repo's history: commits oldest first, each with the whole tree at that commit."""

    repo_id: str
    commits: list[Commit] = field(default_factory=list)
    _oids: dict[int, tuple[str, str]] = field(default_factory=dict)

    def commit(
        self, when: datetime, files: dict[str, bytes | Path], *, remove: Iterable[str] = (), title: str = "update"
    ) -> str:
        """Add a commit that writes `files` and removes `remove`; returns its sha."""
        tree = dict(self.commits[-1].files) if self.commits else {}
        for path in remove:
            tree.pop(path, None)
        tree.update({path: RepoFile(data) for path, data in files.items()})
        sha = hashlib.sha1(f"{self.repo_id}:{len(self.commits)}:{when.isoformat()}:{title}".encode()).hexdigest()
        self.commits.append(Commit(sha, when.astimezone(UTC), title, tree))
        return sha

    def at(self, revision: str) -> Commit | None:
        """The commit a revision names: `main`, or a full or short sha."""
        if not self.commits:
            return None
        if revision == "main":
            return self.commits[-1]
        return next((c for c in self.commits if c.sha.startswith(revision) and len(revision) >= 7), None)

    def oids(self, file: RepoFile) -> tuple[str, str]:
        """(git blob id, sha256) of a file, computed once."""
        key = id(file)
        if key not in self._oids:
            self._oids[key] = (file.git_oid, file.sha256)
        return self._oids[key]


@dataclass
class Reply:
    """What the dataset endpoints answer; hubserver turns it into its Response."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Iterator[bytes] | None = None


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)


def _not_found(code: str, message: str) -> Reply:
    return _json(404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})


_API = re.compile(r"^/api/datasets/([^/]+/[^/]+)(?:/(revision|tree|paths-info|commits)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def handle(
    repos: dict[str, DatasetRepo], method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
    body: bytes, base_url: str,
) -> Reply | None:  # fmt: skip
    """The answer to a dataset-repo request, or None if the path is not one of these endpoints."""
    resolve = _RESOLVE.match(path)
    if resolve:
        repo_id, revision, file_path = resolve.group(1), unquote(resolve.group(2)), unquote(resolve.group(3))
        return _resolve(repos, method, repo_id, revision, file_path, headers)
    api = _API.match(path)
    if not api:
        return None
    repo_id, kind, revision = api.group(1), api.group(2), unquote(api.group(3) or "main")
    sub = unquote((api.group(4) or "").strip("/"))
    repo = repos.get(repo_id)
    if repo is None or not repo.commits:
        return _not_found("RepoNotFound", f"Repository not found: {repo_id}")
    commit = repo.at(revision)
    if commit is None:
        return _not_found("RevisionNotFound", f"Invalid rev id: {revision}")
    if kind in (None, "revision"):
        return _json(200, _info(repo, commit))
    if kind == "tree":
        recursive = (query.get("recursive") or ["false"])[-1].lower() in ("1", "true")
        entries = _tree(repo, commit, sub, recursive)
        return _not_found("EntryNotFound", f"{sub} does not exist") if entries is None else _json(200, entries)
    if kind == "paths-info":
        form = parse_qs(body.decode(), keep_blank_values=True)
        wanted = form.get("paths", [])
        found = []
        for p in wanted:
            entry = _entry(repo, commit, p)
            if entry is not None:
                found.append(entry)
        return _json(200, found)
    return _commits(repo, commit, query, base_url, path)


def _info(repo: DatasetRepo, commit: Commit) -> dict[str, Any]:
    return {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": commit.sha,
        "lastModified": commit.date.isoformat().replace("+00:00", "Z"),
        "private": False,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        "createdAt": repo.commits[0].date.isoformat().replace("+00:00", "Z"),
    }


def _dirs(commit: Commit) -> set[str]:
    dirs: set[str] = set()
    for p in commit.files:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def _entry(repo: DatasetRepo, commit: Commit, path: str) -> dict[str, Any] | None:
    file = commit.files.get(path)
    if file is not None:
        oid, sha256 = repo.oids(file)
        entry: dict[str, Any] = {"type": "file", "oid": oid, "size": file.size, "path": path}
        if path.endswith(".parquet"):  # stored in LFS on the Hub
            entry["lfs"] = {"oid": sha256, "size": file.size, "pointerSize": 134}
        return entry
    if path in _dirs(commit):
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
    return None


def _tree(repo: DatasetRepo, commit: Commit, sub: str, recursive: bool) -> list[dict[str, Any]] | None:
    if sub and sub not in _dirs(commit):
        return None
    prefix = sub + "/" if sub else ""
    names = set()
    for p in [*commit.files, *_dirs(commit)]:
        if not p.startswith(prefix) or p == sub:
            continue
        rest = p[len(prefix) :]
        if recursive or "/" not in rest:
            names.add(p)
    return [e for p in sorted(names) if (e := _entry(repo, commit, p)) is not None]


def _commits(repo: DatasetRepo, commit: Commit, query: dict[str, list[str]], base_url: str, path: str) -> Reply:
    history = [c for c in repo.commits if c.date <= commit.date][::-1]  # newest first, as the Hub
    page = int((query.get("p") or ["0"])[-1])
    items = history[page * COMMITS_PAGE : (page + 1) * COMMITS_PAGE]
    payload = [
        {
            "id": c.sha,
            "title": c.title,
            "message": "",
            "authors": [{"user": repo.repo_id.split("/")[0], "avatar": None}],
            "date": c.date.isoformat().replace("+00:00", "Z"),
        }
        for c in items
    ]
    headers = {}
    if (page + 1) * COMMITS_PAGE < len(history):
        headers["Link"] = f'<{base_url}{path}?p={page + 1}>; rel="next"'
    return _json(200, payload, headers)


def _resolve(
    repos: dict[str, DatasetRepo], method: str, repo_id: str, revision: str, path: str, headers: dict[str, str]
) -> Reply:
    repo = repos.get(repo_id)
    if repo is None or not repo.commits:
        return _not_found("RepoNotFound", f"Repository not found: {repo_id}")
    commit = repo.at(revision)
    if commit is None:
        return _not_found("RevisionNotFound", f"Invalid rev id: {revision}")
    file = commit.files.get(path)
    if file is None:
        return _not_found("EntryNotFound", f"{path} does not exist on {revision}")
    oid, sha256 = repo.oids(file)
    etag = sha256 if path.endswith(".parquet") else oid
    out = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{etag}"',
        "X-Repo-Commit": commit.sha,
        "X-Linked-Size": str(file.size),
        "X-Linked-ETag": f'"{etag}"',
    }
    start, end, status = 0, file.size, 200
    wanted = headers.get("range")
    if wanted:
        match = _RANGE.match(wanted.strip())
        if match is None or not (match.group(1) or match.group(2)):
            return Reply(416, {"Content-Range": f"bytes */{file.size}"})
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1, file.size) if match.group(2) else file.size
        else:  # a suffix: the last N bytes
            start = max(file.size - int(match.group(2)), 0)
        if start >= file.size or start >= end:
            return Reply(416, {"Content-Range": f"bytes */{file.size}"})
        status = 206
        out["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
    out["Content-Length"] = str(end - start)
    if method == "HEAD":
        return Reply(status, out)
    return Reply(status, out, stream=file.chunks(start, end))


def resolve_url(base_url: str, repo_id: str, revision: str, path: str) -> str:
    """The resolve URL of a file, as huggingface_hub builds it."""
    return f"{base_url}/datasets/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


# --------------------------------------------------------------------------------------------------
# hub-stats-style Parquet from real records
# --------------------------------------------------------------------------------------------------

_RECORD_COLUMNS = (
    "{id: 'VARCHAR', modelId: 'VARCHAR', author: 'VARCHAR', createdAt: 'VARCHAR', lastModified: 'VARCHAR', "
    "downloads: 'BIGINT', likes: 'BIGINT', tags: 'VARCHAR[]', pipeline_tag: 'VARCHAR', library_name: 'VARCHAR', "
    "gated: 'JSON', siblings: 'STRUCT(rfilename VARCHAR)[]', config: 'JSON', cardData: 'JSON'}"
)


def hubstats_sql(week: date) -> str:
    """SQL reading API-shape JSON Lines records (the only parameter) as hub-stats' models.parquet of `week`: its
    columns and types, without the columns hub-stats did not have yet that week."""
    base_models = "list_filter(tags, lambda t: starts_with(t, 'base_model:') AND len(string_split(t, ':')) = 3)"
    columns = [
        "substr(md5(mid), 1, 24) AS _id",
        "mid AS id",
        "coalesce(author, CASE WHEN contains(mid, '/') THEN split_part(mid, '/', 1) END) AS author",
        "TRY_CAST(createdAt AS TIMESTAMPTZ) AS createdAt",
        "TRY_CAST(lastModified AS TIMESTAMPTZ) AS lastModified",
        "coalesce(downloads, 0) AS downloads",
    ]
    if week >= HUBSTATS_DOWNLOADS_ALL_TIME:
        columns.append("coalesce(downloads, 0) * 7 AS downloadsAllTime")
    columns.append("coalesce(likes, 0) AS likes")
    if week >= HUBSTATS_TRENDING:
        columns.append("(coalesce(likes, 0) / 10.0)::DOUBLE AS trendingScore")
    columns += [
        "pipeline_tag",
        "library_name",
        "coalesce(tags, []::VARCHAR[]) AS tags",
        f"CASE WHEN len({base_models}) > 0 THEN {{'relation': split_part({base_models}[1], ':', 2), "
        f"'models': list_transform({base_models}, lambda t: {{'id': split_part(t, ':', 3)}})}} END AS baseModels",
        "NULL::STRUCT(total BIGINT, parameters MAP(VARCHAR, BIGINT)) AS safetensors",
        "NULL::STRUCT(total BIGINT, architecture VARCHAR) AS gguf",
        "cardData::VARCHAR AS cardData",
        "siblings",
        "config::VARCHAR AS config",
    ]
    if week >= HUBSTATS_GATED:
        columns.append("CASE WHEN json_type(gated) = 'VARCHAR' THEN gated->>'$' ELSE gated::VARCHAR END AS gated")
    return (
        f"SELECT {', '.join(columns)} FROM (SELECT *, coalesce(id, modelId) AS mid "
        f"FROM read_json(?, format = 'newline_delimited', columns = {_RECORD_COLUMNS})) WHERE mid IS NOT NULL"
    )


def write_hubstats(records: Path, out: Path, week: date, row_group_size: int = 100_000) -> Path:
    """Write `records` (API-shape JSON Lines, .gz fine) as hub-stats' models.parquet of `week`."""
    with tempfile.TemporaryDirectory() as spill:
        con = duckdb.connect(config={"temp_directory": spill, "preserve_insertion_order": True})
        try:
            con.execute(
                f"COPY ({hubstats_sql(week)}) TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE {int(row_group_size)})",
                [str(records)],
            )
        finally:
            con.close()
    return out


def hubstats_bytes(records: Iterable[dict[str, Any]], week: date, row_group_size: int = 1000) -> bytes:
    """`records` (dicts in the API's shape) as hub-stats' models.parquet of `week`, in memory."""
    with tempfile.TemporaryDirectory() as folder:
        jsonl = Path(folder) / "records.jsonl"
        with jsonl.open("w") as stream:
            for record in records:
                stream.write(json.dumps(record) + "\n")
        return write_hubstats(jsonl, Path(folder) / "models.parquet", week, row_group_size).read_bytes()


def main(argv: list[str] | None = None) -> int:
    """Serve one Parquet file as a weekly archive's week (`models/<week>/models.parquet`) until SIGTERM; prints the
    base URL on stdout when ready (the benchmark's loopback Hub)."""
    import argparse
    import signal
    import sys
    import threading

    from tests.hubserver import HubServer

    parser = argparse.ArgumentParser(prog="python -m tests.hubdatasets", description=main.__doc__)
    parser.add_argument("path", type=Path, help="a hub-stats-style models.parquet")
    parser.add_argument("--repo", default="hfmlsoc/hub_weekly_snapshots")
    parser.add_argument("--week", type=date.fromisoformat, default=date(2025, 6, 4))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    repo = DatasetRepo(args.repo)
    when = datetime.combine(args.week, datetime.min.time(), UTC)
    repo.commit(when, {f"models/{args.week.isoformat()}/models.parquet": args.path.resolve()})
    repo.oids(repo.commits[-1].files[f"models/{args.week.isoformat()}/models.parquet"])  # hashed before ready
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: done.set())
    with HubServer([], datasets={args.repo: repo}, port=args.port) as hub:
        print(hub.url, flush=True)
        print(f"serving {args.path} as {args.repo} week {args.week}", file=sys.stderr)
        while not done.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
