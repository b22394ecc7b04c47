"""Snapshot the Hub's model list through the official client, `HfApi.list_models`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import HfApi, set_client_factory
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils._http import default_client_factory

from ingest.errors import IngestError
from ingest.records import BadRecord, parse_record
from ingest.writer import SnapshotWriter
from queries.store import SnapshotMeta

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"

# What the queries need, and no more: `expand` keeps pages small compared with `full=True`.
EXPAND: list[Any] = [
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
    "sha",
    "siblings",
]


def configure_http(endpoint: str, timeout: float) -> None:
    """Give every Hub request a timeout, and keep the token on the configured endpoint.

    huggingface_hub passes `timeout=None` explicitly on listing calls, which overrides any client
    default, so a silent server would hang a run forever. We keep its own client factory (offline
    mode, request ids) and add a request hook that (1) sets the request's connect/read/write/pool
    timeouts, which httpx reads from the request itself, and (2) strips the Authorization header
    from any request leaving the endpoint's origin: a `Link: rel="next"` pointing elsewhere must
    never receive the token.
    """
    origin = httpx2.URL(endpoint)
    timeouts = httpx2.Timeout(timeout).as_dict()

    def on_request(request: httpx2.Request) -> None:
        request.extensions["timeout"] = timeouts
        url = request.url
        if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
            request.headers.pop("authorization", None)

    def factory() -> httpx2.Client:
        client = default_client_factory()
        client.event_hooks["request"] = [*client.event_hooks["request"], on_request]
        return client

    set_client_factory(factory)


def model_info_to_record(info: ModelInfo) -> dict[str, Any]:
    """The API field names of a ModelInfo, for the same validation as dump records."""
    return {
        "id": info.id,
        "author": info.author,
        "createdAt": info.created_at,
        "lastModified": info.last_modified,
        "downloads": info.downloads,
        "likes": info.likes,
        "tags": info.tags,
        "pipeline_tag": info.pipeline_tag,
        "library_name": info.library_name,
        "private": info.private,
        "gated": info.gated,
        "sha": info.sha,
        "siblings": None if info.siblings is None else [{"rfilename": s.rfilename} for s in info.siblings],
    }


def ingest_hub(
    data_dir: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    limit: int | None = None,
    filters: Sequence[str] = (),
    timeout: float = 30.0,
) -> SnapshotMeta:
    """Page through `/api/models` and publish everything as one snapshot, or nothing on failure."""
    endpoint = endpoint.rstrip("/")
    configure_http(endpoint, timeout)
    # token=False stops the client from falling back to a token it finds on disk or in HF_TOKEN
    # when the caller has deliberately given none.
    api = HfApi(endpoint=endpoint, token=token or False)
    params: dict[str, Any] = {"limit": limit, "filter": list(filters), "expand": EXPAND}
    started = datetime.now(UTC)
    with SnapshotWriter(data_dir, taken_at=started, source=endpoint, kind="ingest", params=params) as writer:
        try:
            models = api.list_models(filter=list(filters) or None, limit=limit, expand=EXPAND)
            for position, info in enumerate(models, start=1):
                try:
                    writer.add(parse_record(model_info_to_record(info)))
                except BadRecord as exc:
                    writer.add_bad(position, str(exc), info.id)
                if position % 100_000 == 0:
                    log.info("ingest: %d models read from %s", position, endpoint)
        except httpx2.TimeoutException as exc:
            raise IngestError(
                f"The Hub at {endpoint} did not answer within {timeout:g} s, after retries "
                f"({type(exc).__name__}); nothing was published. Raise --timeout or try later."
            ) from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise IngestError(
                f"The Hub at {endpoint} answered HTTP {status} after retries; nothing was published."
            ) from exc
        except (httpx2.HTTPError, ValueError) as exc:
            # ValueError covers a page body that is not valid JSON.
            raise IngestError(f"Reading {endpoint}/api/models failed: {exc}; nothing was published.") from exc
        return writer.publish()
