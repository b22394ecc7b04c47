"""ETags, 304 and Cache-Control of the feeds, HEAD, and answers that do not depend on the cache."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.feeds.common import FORMATS, ROUTES, SNAPSHOT_ROUTES, VARIANTS, Census, next_link

# --- 5. ETag, 304, Cache-Control -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_etag_and_not_modified(census: Census, http: httpx.Client, route: str) -> None:
    path, params = census.path(route), census.params(route, _size="11")
    first = http.get(path, params=params)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]+"', etag), etag  # strong: no W/ prefix
    second = http.get(path, params=params)
    assert second.content == first.content and second.headers["etag"] == etag
    not_modified = http.get(path, params=params, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert not_modified.headers["cache-control"] == first.headers["cache-control"]
    among = http.get(path, params=params, headers={"If-None-Match": f'"0000", {etag}'})
    assert among.status_code == 304
    stale = http.get(path, params=params, headers={"If-None-Match": '"0000"'})
    assert stale.status_code == 200 and stale.content == first.content
    # The JSON answer's ETag does not validate the CSV answer.
    as_csv = http.get(path, params={**params, "_format": "csv"}, headers={"If-None-Match": etag})
    assert as_csv.status_code == 200 and as_csv.headers["etag"] != etag


@pytest.mark.parametrize("route", ROUTES)
def test_etag_differs_by_query_and_format(census: Census, http: httpx.Client, route: str) -> None:
    path, params = census.path(route), census.params(route)
    etags = {
        "base": http.get(path, params=params).headers["etag"],
        "size": http.get(path, params={**params, "_size": "3"}).headers["etag"],
        "meaning": http.get(path, params={**params, **VARIANTS[route]}).headers["etag"],
        **{fmt: http.get(path, params={**params, "_format": fmt}).headers["etag"] for fmt in FORMATS[1:]},
    }
    assert len(set(etags.values())) == len(etags), etags


@pytest.mark.parametrize("route", SNAPSHOT_ROUTES)
def test_cache_control_by_snapshot_parameter(census: Census, http: httpx.Client, route: str) -> None:
    # `_size=17`/`19`: keys no other test uses.
    path = census.path(route)
    named = http.get(path, params={"snapshot": census.latest, "_size": "19"})
    assert named.headers["cache-control"] == "public, max-age=86400, immutable"
    assert named.headers["x-hubcensus-snapshot"] == census.latest
    latest = http.get(path, params={"_size": "17"})
    assert latest.status_code == 200
    assert latest.headers["cache-control"] == "public, max-age=60"
    assert latest.headers["x-hubcensus-snapshot"] == census.latest
    # Same data: `latest` and the latest id differ only in how long the answer may be kept.
    assert named.json()["rows"][:17] == latest.json()["rows"]
    old = http.get(path, params={"snapshot": census.old, "_size": "17", "_format": "csv"})
    assert old.status_code == 200
    assert old.headers["cache-control"] == "public, max-age=86400, immutable"
    assert old.headers["x-hubcensus-snapshot"] == census.old
    # A 304 carries the same rule.
    revalidated = http.get(path, params={"_size": "17"}, headers={"If-None-Match": latest.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.headers["cache-control"] == "public, max-age=60"


@pytest.mark.parametrize("route", ["share", "tasks"])
@pytest.mark.parametrize("first", ["by_id", "latest"])
def test_latest_is_never_served_as_immutable(census: Census, http: httpx.Client, route: str, first: str) -> None:
    """Regression: `snapshot=<id>` and `latest` shared one answer-cache entry, headers included, so
    `latest` was served `immutable` once the same query had been asked by id (fixed in d9bbd81)."""
    size = {"by_id": "23", "latest": "29"}[first]  # keys no other test uses
    by_id = {"snapshot": census.latest, "_size": size}
    latest = {"_size": size}
    for params in (by_id, latest) if first == "by_id" else (latest, by_id):
        http.get(census.path(route), params=params)
    assert http.get(census.path(route), params=latest).headers["cache-control"] == "public, max-age=60"
    assert http.get(census.path(route), params=by_id).headers["cache-control"] == ("public, max-age=86400, immutable")


@pytest.mark.parametrize("route", ["diff", "diff_models"])
def test_cache_control_of_diffs(census: Census, http: httpx.Client, route: str) -> None:
    params = census.params(route)
    by_ids = http.get(census.path(route), params=params)
    assert by_ids.headers["cache-control"] == "public, max-age=86400, immutable"
    assert by_ids.headers["x-hubcensus-snapshot"] == f"{census.mid}..{census.latest}"
    to_latest = http.get(census.path(route, b="latest"), params=params)
    assert to_latest.headers["cache-control"] == "public, max-age=60"
    assert to_latest.json()["rows"] == by_ids.json()["rows"]


def test_cache_control_of_history(census: Census, http: httpx.Client) -> None:
    open_ended = http.get("/v1/frameworks/history")
    assert open_ended.headers["cache-control"] == "public, max-age=60"
    assert set(open_ended.headers["x-hubcensus-snapshot"].split(":", 1)[1].split(",")) == {
        census.old,
        census.mid,
        census.latest,
    }
    # Even a range in the past can gain a snapshot (an import with an older --taken-at): never immutable.
    closed = http.get("/v1/frameworks/history", params={"to": "2025-01-14T00:00:00Z"})
    assert closed.headers["cache-control"] == "public, max-age=60"
    assert closed.json()["rows"] == open_ended.json()["rows"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("route", ROUTES)
def test_answers_are_deterministic_without_the_cache(
    census: Census, http: httpx.Client, bare_url: str, route: str, fmt: str
) -> None:
    """Byte-identical answers even when recomputed; the same ETag when recomputed on the same host."""
    path, params = census.path(route), census.params(route, _format=fmt, _size="13")
    with httpx.Client(base_url=bare_url, timeout=60) as bare:
        one, two = bare.get(path, params=params), bare.get(path, params=params)
    cached = http.get(path, params=params)
    assert one.status_code == two.status_code == cached.status_code == 200
    assert one.content == two.content
    # The ETag covers the Host (next_url is absolute), so servers on two ports differ; one host agrees.
    assert one.headers["etag"] == two.headers["etag"]
    # Only the base URL inside next_url / Link differs between the two servers.
    assert one.content.replace(bare_url.encode(), census.url.encode()) == cached.content
    assert (next_link(one) or "").replace(bare_url, census.url) == (next_link(cached) or "")


# --- regressions: bugs found while writing these tests (fixed since, in d9bbd81) ---------------------


def test_head_is_answered_like_get(census: Census, http: httpx.Client) -> None:
    """HEAD was 405 (RFC 9110 §9.1: servers MUST support HEAD)."""
    get = http.get("/v1/frameworks/share", params={"_format": "csv"})
    head = http.head("/v1/frameworks/share", params={"_format": "csv"})
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-type", "cache-control", "content-length"):
        assert head.headers[name] == get.headers[name], name
