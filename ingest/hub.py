"""Snapshot the Hub's model list through the official client, page by page.

`HfApi.list_models` hides the pagination cursor, builds a Python `ModelInfo` per model and fixes its
retry policy, so it can neither resume a failed run nor be tuned for politeness. We page `/api/models`
with the same client's own building blocks instead — `build_hf_headers`, the shared session, the
client's `http_backoff` (retries on 429/5xx/timeouts, honouring `RateLimit` and `Retry-After`) and
`hf_raise_for_status` — exactly as `list_models` does inside, and keep the `Link: rel="next"` cursor of
every page so that a failed run can continue where it stopped (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import ExpandModelProperty_T
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff, parse_ratelimit_headers
from huggingface_hub.utils._http import default_client_factory

from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.progress import Progress
from hubcensus.ingest.records import BadRecord, parse_record
from hubcensus.ingest.writer import SnapshotWriter, bulk_gc, storage_errors
from hubcensus.queries.datadir import SnapshotMeta, redact_url

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"

# What the queries need, and no more: `expand` keeps pages small compared with `full=True`.
EXPAND: list[ExpandModelProperty_T] = [
    "author",
    "createdAt",
    "lastModified",
    "downloads",
    "likes",
    "tags",
    "pipeline_tag",
    "library_name",
    "private",
    "gated",
    "siblings",
    # The classifier's facts (queries.facts.Facts): config.model_type and .architectures, and
    # transformersInfo.auto_model. Their cost per page is measured in docs/ARCHITECTURE.md ("What ingest asks").
    "config",
    "transformersInfo",
]


class Cancelled(IngestError):
    """The run was asked to stop (SIGTERM, SIGINT); what was committed is kept for resuming."""


@dataclass
class HubOptions:
    """How to talk to the Hub: where, as whom, how fast, how patiently."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = None
    timeout: float = 30.0
    page_size: int = 1000
    max_rate: float = 1.5  # requests per second; the Hub allows ~500 per 5 minutes anonymous
    max_retries: int = 5  # per page, on 429/5xx/network errors (the client's own back-off)
    retry_wait: float = 1.0  # first back-off, doubled each retry
    retry_wait_max: float = 30.0
    resume_max_age: float = 6 * 3600.0  # seconds a failed run's cursor is trusted for resuming
    stop: threading.Event = field(default_factory=threading.Event)


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its `user:password@` part, and that user and password (decoded), if it had one."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), (unquote(user), unquote(password))


def configure_http(
    endpoint: str,
    timeout: float,
    basic_auth: tuple[str, str] | None = None,
    pace: Callable[[httpx2.Request], None] | None = None,
) -> None:
    """Give every Hub request a timeout, and keep the credentials on the configured endpoint.

    huggingface_hub's own listing calls pass `timeout=None`, which overrides any client default, so we
    keep its client factory (offline mode, request ids) and add a request hook that (1) sets the
    request's connect/read/write/pool timeouts, which httpx reads from the request itself, (2) strips
    the Authorization header from any request leaving the endpoint's origin: a redirect or a
    `Link: rel="next"` pointing elsewhere must never receive the token, and (3) with `basic_auth` (the
    `user:password@` of the endpoint URL), sends it on every request to that origin: httpx would send
    URL credentials on the first page only, since the `Link` of the next pages carries none. `pace`, if given,
    is called before every request (a backfill's rate limits: the client's own file reads have no other hook).
    """
    origin = httpx2.URL(endpoint)
    timeouts = httpx2.Timeout(timeout).as_dict()
    basic = "Basic " + b64encode(":".join(basic_auth).encode()).decode() if basic_auth else None

    def on_request(request: httpx2.Request) -> None:
        if pace is not None:
            pace(request)
        request.extensions["timeout"] = timeouts
        url = request.url
        if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
            request.headers.pop("authorization", None)
        elif basic is not None:
            request.headers["authorization"] = basic

    def factory() -> httpx2.Client:
        client = default_client_factory()
        client.event_hooks["request"] = [*client.event_hooks["request"], on_request]
        return client

    set_client_factory(factory)


class _Pacer:
    """At most `rate` requests per second, and a pause when the Hub says the window is spent."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop = stop
        self.next_at = 0.0

    def wait(self) -> None:
        delay = self.next_at - time.monotonic()
        if delay > 0 and self.stop.wait(delay):
            raise Cancelled("stopped while waiting to send the next request")
        self.next_at = time.monotonic() + self.interval

    def observe(self, response: httpx2.Response) -> None:
        # A successful answer that says `r=0` means the next call would get a 429: wait out the window.
        info = parse_ratelimit_headers(response.headers)
        if info is not None and info.remaining == 0:
            log.warning("rate limit window spent; waiting %ss", info.reset_in_seconds)
            self.next_at = max(self.next_at, time.monotonic() + info.reset_in_seconds)


def _resume_key(endpoint: str, filters: Sequence[str], limit: int | None, page_size: int) -> str:
    material = json.dumps([endpoint, sorted(filters), limit, page_size, EXPAND])
    return "ingest-" + hashlib.sha256(material.encode()).hexdigest()[:16]


def _fetch_page(
    url: str, params: dict[str, Any] | None, headers: dict[str, str], opts: HubOptions
) -> tuple[list[Any], str | None, httpx2.Response]:
    """One page: the records, the next page's URL, the response. Retries bodies that do not parse."""
    for attempt in range(opts.max_retries + 1):
        response = http_backoff(
            "GET",
            url,
            params=params,
            headers=headers,
            timeout=httpx2.Timeout(opts.timeout),
            max_retries=opts.max_retries,
            base_wait_time=opts.retry_wait,
            max_wait_time=opts.retry_wait_max,
        )
        hf_raise_for_status(response)
        try:
            records = response.json()
            if not isinstance(records, list):
                raise ValueError(f"expected a JSON array, got {type(records).__name__}")
        except ValueError as exc:  # a truncated or garbled body: fetch the same page again
            if attempt == opts.max_retries:
                raise IngestError(f"{url}: the page is not valid JSON after {attempt + 1} attempts: {exc}") from exc
            wait = min(opts.retry_wait * 2**attempt, opts.retry_wait_max)
            log.warning("page body did not parse (%s); retrying in %ss", exc, wait)
            if opts.stop.wait(wait):
                raise Cancelled("stopped while retrying a page") from exc
            continue
        next_url = response.links.get("next", {}).get("url")
        # A Link with credentials in it: they would be stored in the resume state and logged on retries.
        return records, split_userinfo(next_url)[0] if next_url else None, response
    raise AssertionError("unreachable")


def ingest_hub(
    data_dir: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    limit: int | None = None,
    filters: Sequence[str] = (),
    timeout: float = 30.0,
    options: HubOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> SnapshotMeta:
    """Page through `/api/models` and publish everything as one snapshot, or nothing on failure.

    Each page is committed with the cursor of the next one; a failed or stopped run leaves a resume
    directory that the next run with the same endpoint, filters and limit continues, if it is younger
    than `options.resume_max_age`.
    """
    opts = options or HubOptions(endpoint=endpoint, token=token, timeout=timeout, max_rate=0)
    # Credentials in the URL are sent as a header, never as part of a URL that could be logged or stored;
    # `shown` is the endpoint as it appears anywhere else (logs, errors, meta.json `source`).
    endpoint, basic_auth = split_userinfo(opts.endpoint.rstrip("/"))
    shown = redact_url(opts.endpoint.rstrip("/"))
    configure_http(endpoint, opts.timeout, basic_auth)
    if basic_auth and opts.token:
        log.warning("the endpoint URL has a user and password: they are sent instead of the token")
    # token=False: with no token given, send none, rather than one found on disk or in HF_TOKEN.
    headers = build_hf_headers(token=(None if basic_auth else opts.token) or False, library_name="hubcensus")
    params: dict[str, Any] = {"limit": limit, "filter": list(filters), "expand": EXPAND}
    pacer = _Pacer(opts.max_rate, opts.stop)
    started = time.monotonic()
    with (
        bulk_gc(),
        storage_errors(shown),
        SnapshotWriter(
            data_dir,
            taken_at=datetime.now(UTC),
            source=shown,
            kind="ingest",
            params=params,
            resume_key=_resume_key(endpoint, filters, limit, opts.page_size),
            resume_max_age=opts.resume_max_age,
        ) as writer,
    ):
        if writer.resumed:
            log.info("resuming %s after %d pages (%d models)", shown, writer.pages, writer.rows_seen)
            url: str | None = writer.next_url
            query: dict[str, Any] | None = None
        else:
            log.info("ingest from %s into snapshot %s", shown, writer.id)
            url = f"{endpoint}/api/models"
            query = {"limit": min(opts.page_size, limit or opts.page_size), "expand": EXPAND}
            if filters:
                query["filter"] = list(filters)
        try:
            while url is not None and (limit is None or writer.rows_seen < limit):
                if opts.stop.is_set():
                    raise Cancelled("stopped")
                pacer.wait()
                records, next_url, response = _fetch_page(url, query, headers, opts)
                pacer.observe(response)
                if limit is not None:
                    records = records[: limit - writer.rows_seen]
                rows, bad = _parse_page(records, writer.pages)
                writer.add_page(rows, bad, next_url)
                url, query = next_url, None
                if on_progress is not None:
                    on_progress(Progress(writer.pages, writer.rows_seen, limit, time.monotonic() - started))
        except httpx2.TimeoutException as exc:
            raise IngestError(
                f"The Hub at {shown} did not answer within {opts.timeout:g} s, after retries "
                f"({type(exc).__name__}); nothing was published. Raise --timeout or try later."
            ) from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise IngestError(
                f"The Hub at {shown} answered HTTP {status} after retries; nothing was published."
            ) from exc
        except httpx2.HTTPError as exc:
            raise IngestError(f"Reading {shown}/api/models failed: {exc}; nothing was published.") from exc
        return writer.publish()


def _parse_page(records: list[Any], page: int) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str, str]] = []
    for i, record in enumerate(records):
        try:
            rows.append(parse_record(record))
        except BadRecord as exc:
            # Position: page * 1,000,000 + index, readable and unique across pages.
            bad.append((page * 1_000_000 + i, str(exc), json.dumps(record, default=str)[:200]))
    return rows, bad
