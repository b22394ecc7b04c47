"""The archive: published snapshots (and their lake files) on S3-compatible object storage.

Both sides use this one contract: the worker uploads what it publishes (`Archive.upload`), API nodes without
a shared disk read it (`queries.mirror`). Layout under `s3://bucket/prefix` (docs/ARCHITECTURE.md, "The archive
and API nodes")::

    <prefix>/snapshots/<id>/snapshot.duckdb    the files of snapshots/<id>/, byte for byte
    <prefix>/snapshots/<id>/meta.json
    <prefix>/snapshots/<id>/summary.parquet
    <prefix>/lake/<table>/snapshot_date=…/snapshot=<id>/….parquet   the snapshot's lake files (queries.lake)
    <prefix>/manifests/<id>.json               the commit point: written LAST, lists every file (size, sha256)
    <prefix>/deleted/<id>.json                 a tombstone: the snapshot was deleted on purpose, never re-upload it

A snapshot exists in the archive when, and only when, its manifest does: a reader lists `manifests/` and never
sees a half-uploaded snapshot. One manifest per snapshot, never a shared index, so no writer (two workers, an
older release) can hide or overwrite another's snapshots by rewriting a common file.

Credentials and the endpoint come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, AWS_REGION), read by boto3 itself; nothing here logs or stores them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import boto3.exceptions
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hubcensus.queries.datadir import DB_NAME, META_NAME, SUMMARY_NAME, Layout, SnapshotMeta, fsync_path, read_meta
from hubcensus.queries.lake import lake_files
from hubcensus.queries.store import SnapshotStore
from hubcensus.queries.summary import revision

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# The manifest's format. A reader skips (and logs) a manifest of a newer format it cannot read; a manifest of an
# older format, or whose SnapshotMeta lacks fields added since, is read with their defaults.
MANIFEST_FORMAT = 1

# A store that is down must fail a call in seconds, never hang a worker's run or a request: short connect
# timeout, bounded read timeout, few retries (botocore's "standard" mode backs off between them).
# A read timeout bounds each wait for bytes (not a whole transfer), so it can be short even for large files.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 2
# Large files go in parts, several at once (boto3's transfer manager), which is what makes a 2M-model file fast.
TRANSFER = TransferConfig(multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=10)


class ArchiveError(RuntimeError):
    """The archive could not be reached or answered wrongly (the message says which object, never a secret)."""


class ChecksumMismatch(ArchiveError):
    """A downloaded file is not the one the manifest names (size or sha256): it was not kept."""


@dataclass(frozen=True)
class ArchiveLocation:
    """Where the archive lives: a bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> ArchiveLocation:
        """`s3://bucket/prefix` (the prefix optional); ValueError for anything else."""
        scheme, sep, rest = url.partition("://")
        if scheme != "s3" or not sep:
            raise ValueError(f"not an s3:// URL: {url!r} (e.g. s3://my-bucket/hubcensus)")
        bucket, _, prefix = rest.partition("/")
        if not bucket or "@" in bucket or ":" in bucket:
            raise ValueError(f"no bucket name in {url!r} (credentials go in AWS_* variables, not the URL)")
        return cls(bucket, prefix.strip("/"))

    @property
    def url(self) -> str:
        """The archive as `s3://bucket/prefix`."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, relative: str) -> str:
        """The object key of a path relative to the archive's root."""
        return f"{self.prefix}/{relative}" if self.prefix else relative


class ArchivedFile(BaseModel):
    """One file of an archived snapshot."""

    path: str = Field(description="Relative to the archive's root, as to the data dir: `snapshots/<id>/…`, `lake/…`.")
    size: int
    sha256: str


class Manifest(BaseModel):
    """The commit point of one archived snapshot: what it is, and every file it has (written after them all)."""

    model_config = ConfigDict(extra="ignore")  # a newer release may add fields: still readable

    format: int = MANIFEST_FORMAT
    snapshot: SnapshotMeta
    files: list[ArchivedFile]
    uploaded_at: datetime
    uploaded_by: str = Field("", description="The host that uploaded it.")

    def file(self, path: str) -> ArchivedFile | None:
        """The entry of one file, by its relative path."""
        return next((f for f in self.files if f.path == path), None)


def snapshot_path(snapshot_id: str, name: str) -> str:
    """A snapshot file's path relative to the data dir and to the archive's root."""
    return f"snapshots/{snapshot_id}/{name}"


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_client() -> S3Client:
    """An S3 client configured from the standard AWS variables, with timeouts and bounded retries."""
    config = botocore.config.Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=16,
    )
    client: S3Client = boto3.session.Session().client("s3", config=config)
    return client


# Everything a call to the store may raise when it is down, unreachable, refuses us or answers garbage.
STORE_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def _not_found(exc: botocore.exceptions.ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class Archive:
    """One archive: upload, list, read and delete snapshots. Every failure of the store is an ArchiveError."""

    def __init__(self, location: ArchiveLocation, client: S3Client | None = None) -> None:
        self.location = location
        self.client = client or make_client()

    @classmethod
    def from_url(cls, url: str) -> Archive:
        """The archive at `s3://bucket/prefix`, with a client from the AWS variables."""
        return cls(ArchiveLocation.parse(url))

    @property
    def url(self) -> str:
        """Its s3:// URL (no credentials: they are never in it)."""
        return self.location.url

    def _key(self, relative: str) -> str:
        return self.location.key(relative)

    def _fail(self, what: str, exc: Exception) -> ArchiveError:
        return ArchiveError(f"archive {self.url}: {what} failed: {exc}")

    # --- listing and reading ---------------------------------------------------------------------

    def _list(self, folder: str) -> Iterator[str]:
        """The names (after `folder/`) of the objects under a folder of the archive."""
        prefix = self._key(folder) + "/"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(prefix) :]
        except STORE_ERRORS as exc:
            raise self._fail(f"listing {folder}/", exc) from exc

    def committed(self) -> list[str]:
        """The ids of the committed snapshots (those with a manifest), sorted."""
        return sorted(name.removesuffix(".json") for name in self._list("manifests") if name.endswith(".json"))

    def deleted(self) -> set[str]:
        """The ids of snapshots deleted on purpose (tombstones): never uploaded again."""
        return {name.removesuffix(".json") for name in self._list("deleted") if name.endswith(".json")}

    def _get(self, relative: str) -> bytes | None:
        try:
            body: bytes = self.client.get_object(Bucket=self.location.bucket, Key=self._key(relative))["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if _not_found(exc):
                return None
            raise self._fail(f"reading {relative}", exc) from exc
        except STORE_ERRORS as exc:
            raise self._fail(f"reading {relative}", exc) from exc
        return body

    def manifest(self, snapshot_id: str) -> Manifest | None:
        """The manifest of a committed snapshot; None if it has none, or one this release cannot read (logged)."""
        body = self._get(f"manifests/{snapshot_id}.json")
        if body is None:
            return None
        try:
            raw = json.loads(body)
            if int(raw.get("format", 0)) > MANIFEST_FORMAT:
                log.warning(
                    "archive: manifest of %s has format %s, newer than this release's", snapshot_id, raw["format"]
                )
                return None
            return Manifest.model_validate(raw)
        except (ValueError, ValidationError, AttributeError) as exc:
            log.warning("archive: the manifest of %s cannot be read, skipped: %s", snapshot_id, exc)
            return None

    def download(self, entry: ArchivedFile, target: Path) -> None:
        """Fetch one file into `target` atomically: to a temp file beside it, checked against the manifest's size
        and sha256, then renamed into place (mode 0444). Nothing is left behind on any failure."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(name)
        try:
            try:
                self.client.download_file(self.location.bucket, self._key(entry.path), str(tmp), Config=TRANSFER)
            except STORE_ERRORS as exc:
                raise self._fail(f"downloading {entry.path}", exc) from exc
            size = tmp.stat().st_size
            if size != entry.size or sha256_of(tmp) != entry.sha256:
                raise ChecksumMismatch(f"archive {self.url}: {entry.path} is not the file its manifest names")
            tmp.chmod(0o444)
            fsync_path(tmp)
            os.rename(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    # --- writing ---------------------------------------------------------------------------------

    def upload(self, data_dir: Path, snapshot_id: str) -> Manifest:
        """Upload one published snapshot: its files and its lake files, then its manifest (the commit point).

        Re-running it after a failure (the store down, the process killed) uploads everything again and then
        commits: object keys are fixed, so a retry overwrites the same objects, and until the manifest is
        written no reader sees any of them.
        """
        layout = Layout(Path(data_dir))
        directory = layout.snapshot(snapshot_id)
        meta = read_meta(directory)
        paths = [directory / n for n in (DB_NAME, META_NAME, SUMMARY_NAME) if (directory / n).exists()]
        paths += lake_files(data_dir, snapshot_id)
        files = []
        for path in paths:
            relative = path.relative_to(layout.root).as_posix()
            entry = ArchivedFile(path=relative, size=path.stat().st_size, sha256=sha256_of(path))
            try:
                self.client.upload_file(str(path), self.location.bucket, self._key(relative), Config=TRANSFER)
            except (*STORE_ERRORS, boto3.exceptions.S3UploadFailedError) as exc:
                raise self._fail(f"uploading {relative}", exc) from exc
            files.append(entry)
        manifest = Manifest(snapshot=meta, files=files, uploaded_at=datetime.now(UTC), uploaded_by=socket.gethostname())
        self._put(f"manifests/{snapshot_id}.json", manifest.model_dump_json(indent=2).encode())
        return manifest

    def _put(self, relative: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.location.bucket, Key=self._key(relative), Body=body)
        except STORE_ERRORS as exc:
            raise self._fail(f"writing {relative}", exc) from exc

    def delete(self, snapshot_id: str) -> bool:
        """Delete a snapshot from the archive on purpose: a tombstone (so no worker uploads it again), then its
        manifest (it is no longer listed), then its files. False if it had no manifest."""
        manifest = self.manifest(snapshot_id)
        self._put(f"deleted/{snapshot_id}.json", json.dumps({"at": datetime.now(UTC).isoformat()}).encode())
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self._key(f"manifests/{snapshot_id}.json"))
            for entry in manifest.files if manifest else []:
                self.client.delete_object(Bucket=self.location.bucket, Key=self._key(entry.path))
        except STORE_ERRORS as exc:
            raise self._fail(f"deleting {snapshot_id}", exc) from exc
        return manifest is not None


def pending_uploads(data_dir: Path, archive: Archive) -> list[str]:
    """The local snapshots the archive lacks (no manifest, or one of an older revision), oldest first; those
    deleted from the archive on purpose are left out."""
    committed = set(archive.committed())
    deleted = archive.deleted()
    pending = []
    for meta in sorted(SnapshotStore(data_dir).snapshots(), key=lambda m: (m.taken_at, m.id)):
        if meta.id in deleted:
            continue
        if meta.id in committed:
            if meta.reclassified is None:
                continue  # only a reclassification changes a published snapshot's files: no manifest to read
            manifest = archive.manifest(meta.id)
            if manifest is None or revision(manifest.snapshot) == revision(meta):
                continue  # committed (or committed by a newer release, whose manifest we leave alone)
        pending.append(meta.id)
    return pending
