"""Tests for tests/hubserver.py, driven by the real ``huggingface_hub`` client (no mocks)."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hubcensus.ingest.hub import EXPAND
from tests.data import BUNDLED, FIXTURES
from tests.hubserver import (
    DEFAULT_FIELDS,
    HubServer,
    RequestInfo,
    Response,
    iter_records,
    json_response,
    load_records,
    to_api_shape,
)

CRAWL_2022 = BUNDLED
SAMPLE_300 = FIXTURES / "sample_300.jsonl.gz"


@pytest.fixture(scope="module")
def crawl_2022() -> list[dict[str, Any]]:
    """2,500 records of the 2022 crawl. The file is sorted by id; this window includes 23 canonical
    (slash-less, hence author-less) ids such as ``albert-base-v1`` (from index 9451)."""
    return list(itertools.islice(iter_records(CRAWL_2022), 8500, 11000))


@pytest.fixture(scope="module")
def sample_300() -> list[dict[str, Any]]:
    return load_records(SAMPLE_300)


@pytest.fixture(scope="module")
def hub_2022(crawl_2022: list[dict[str, Any]]) -> Iterator[HubServer]:
    """Shared read-only server; tests using it must not rely on ``requests`` being empty."""
    with HubServer(crawl_2022, page_size=1000) as hub:
        yield hub


def api(hub: HubServer, token: str | bool = False) -> HfApi:
    # token=False: never pick up a token from the environment or ~/.cache/huggingface.
    return HfApi(endpoint=hub.url, token=token)


def new_requests(hub: HubServer, since: int) -> list[RequestInfo]:
    return hub.requests[since:]


def get(url: str) -> httpx2.Response:
    with httpx2.Client(timeout=10) as client:
        return client.get(url)


# --------------------------------------------------------------------------------------------------
# Records and shaping
# --------------------------------------------------------------------------------------------------


def test_to_api_shape_2022_record(crawl_2022: list[dict[str, Any]]) -> None:
    rec = crawl_2022[0]
    shaped = to_api_shape(rec)
    assert shaped["id"] == shaped["modelId"] == rec["modelId"]
    assert shaped["author"] == rec["modelId"].split("/")[0]
    assert re.fullmatch(r"[0-9a-f]{24}", shaped["_id"])
    assert to_api_shape(rec)["_id"] == shaped["_id"]  # stable
    assert shaped["siblings"] == rec["siblings"] and shaped["config"] == rec["config"]
    assert rec.get("id") is None  # input not mutated

    canonical = next(r for r in crawl_2022 if "/" not in r["modelId"])
    assert "author" not in to_api_shape(canonical)


def test_to_api_shape_modern_record_drops_provenance(sample_300: list[dict[str, Any]]) -> None:
    with_oid = next(r for r in sample_300 if "_id" in r)
    shaped = to_api_shape(with_oid)
    assert shaped["_id"] == with_oid["_id"]  # a real object id is kept
    assert not [k for k in shaped if k.startswith("_") and k != "_id"]
    assert {"_source", "_collected_at"} <= set(with_oid)
    null_author = next(r for r in sample_300 if r.get("author") is None)
    assert to_api_shape(null_author)["author"] == null_author["id"].split("/")[0]


def test_load_records_formats(tmp_path: Path, sample_300: list[dict[str, Any]]) -> None:
    recs = sample_300[:5]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    with gzip.open(tmp_path / "a.json.gz", "wt") as fh:
        json.dump(recs, fh)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in recs) + "\n\n")
    for name in ("a.json", "a.json.gz", "a.jsonl.gz"):
        assert load_records(tmp_path / name) == recs
    assert load_records(SAMPLE_300)[:5] == recs
    (tmp_path / "bad.json").write_text('{"not": "an array"}')
    with pytest.raises(ValueError):
        load_records(tmp_path / "bad.json")


# --------------------------------------------------------------------------------------------------
# Paging with the real client
# --------------------------------------------------------------------------------------------------


def test_expand_pages_through_real_client(crawl_2022: list[dict[str, Any]]) -> None:
    with HubServer(crawl_2022, page_size=1000) as hub:
        models = list(api(hub).list_models(expand=EXPAND))

        assert [m.id for m in models] == [r["modelId"] for r in crawl_2022]
        assert len(hub.requests) == 3
        first, *rest = hub.requests
        # The client sends a list param as repeated keys: expand=author&expand=createdAt&...
        assert first.path == "/api/models" and first.query == {"expand": EXPAND}
        for req in rest:  # the Link URL is followed verbatim: same params plus a cursor
            assert req.query["expand"] == EXPAND and len(req.query["cursor"]) == 1

    by_id = {r["modelId"]: r for r in crawl_2022}
    for m in models:
        rec = by_id[m.id]
        assert m.author == (m.id.split("/")[0] if "/" in m.id else None)
        assert m.siblings is not None
        assert [s.rfilename for s in m.siblings] == [s["rfilename"] for s in rec["siblings"]]
        assert m.tags == rec["tags"]
        assert (m.likes, m.downloads, m.private) == (
            rec["likes"],
            rec.get("downloads"),
            rec["private"],
        )
        assert m.pipeline_tag == rec["pipeline_tag"] and m.library_name == rec.get("library_name")
        assert m.last_modified is not None
        assert m.config == rec["config"]  # expanded: the classifier reads model_type and architectures
    assert sum(m.author is None for m in models) == 23


def test_limit_stops_early_and_is_capped(hub_2022: HubServer) -> None:
    n0 = len(hub_2022.requests)
    five = list(api(hub_2022).list_models(limit=5))
    assert len(five) == 5
    reqs = new_requests(hub_2022, n0)
    assert len(reqs) == 1 and reqs[0].query == {"limit": ["5"]}

    # limit=1500 is sent as the page size; the server caps pages at 1000, so the client follows Link.
    n0 = len(hub_2022.requests)
    many = list(api(hub_2022).list_models(limit=1500))
    assert len(many) == 1500
    assert len(new_requests(hub_2022, n0)) == 2


def test_full_and_default_fields(hub_2022: HubServer, crawl_2022: list[dict[str, Any]]) -> None:
    n0 = len(hub_2022.requests)
    full = list(api(hub_2022).list_models(full=True, limit=3))
    assert new_requests(hub_2022, n0)[0].query["full"] == ["true"]  # httpx2 sends a bool as "true"
    for m, rec in zip(full, crawl_2022, strict=False):
        assert m.siblings is not None and [s.rfilename for s in m.siblings] == [s["rfilename"] for s in rec["siblings"]]
        assert m.sha == rec["sha"] and m.config == rec["config"]

    default = list(api(hub_2022).list_models(limit=3))
    assert all(m.siblings is None and m.sha is None for m in default)
    assert [m.tags for m in default] == [r["tags"] for r in crawl_2022[:3]]

    page = get(f"{hub_2022.url}/api/models?limit=3").json()
    assert all(set(item) <= set(DEFAULT_FIELDS) for item in page)
    assert list(page[0]) == [k for k in DEFAULT_FIELDS if k in page[0]]  # the Hub's key order
    assert {"_id", "id", "modelId", "tags"} <= set(page[0])
    # config=true (fetch_config=True) adds config to the default set.
    with_config = get(f"{hub_2022.url}/api/models?limit=1&config=true").json()
    assert with_config[0]["config"] == crawl_2022[0]["config"]
    # expand[] is accepted as well as repeated expand.
    expanded = get(f"{hub_2022.url}/api/models?limit=1&expand[]=sha&expand[]=author").json()
    assert set(expanded[0]) == {"_id", "id", "sha", "author"}


def test_full_on_modern_records(sample_300: list[dict[str, Any]]) -> None:
    with HubServer(sample_300, page_size=100) as hub:
        models = list(api(hub).list_models(full=True))
        assert len(hub.requests) == 3
    assert [m.id for m in models] == [r["id"] for r in sample_300]
    assert sum(m.siblings is not None for m in models) == sum("siblings" in r for r in sample_300)
    assert all(m.author for m in models)  # derived where the stored author was null
    assert not any(hasattr(m, "_source") for m in models)


# --------------------------------------------------------------------------------------------------
# Search parameters
# --------------------------------------------------------------------------------------------------


def _expected(records: list[dict[str, Any]], **kw: Any) -> list[str]:
    out = []
    for rec in map(to_api_shape, records):
        filters = kw.get("filter", [])
        if not all(
            f in (rec.get("tags") or []) or f in (rec.get("library_name"), rec.get("pipeline_tag")) for f in filters
        ):
            continue
        if "author" in kw and rec.get("author") != kw["author"]:
            continue
        if "search" in kw and kw["search"].lower() not in rec["id"].lower():
            continue
        if "pipeline_tag" in kw and rec.get("pipeline_tag") != kw["pipeline_tag"]:
            continue
        out.append(rec["id"])
    return out


@pytest.mark.parametrize(
    "kw",
    [
        {"filter": ["diffusers"]},
        {"filter": ["diffusers", "text-to-image"]},
        {"filter": ["transformers", "region:us"]},
        {"author": "CharlesLi"},
        {"search": "LLAMA"},
        {"pipeline_tag": "text-generation"},
        {"author": "CharlesLi", "search": "REFLECT"},
        {"filter": ["no-such-tag"]},
    ],
)
def test_search_params(sample_300: list[dict[str, Any]], kw: dict[str, Any]) -> None:
    expected = _expected(sample_300, **kw)
    assert expected or kw == {"filter": ["no-such-tag"]}, "parameter set should match something"
    # A small page size makes filtered results span several pages.
    with HubServer(sample_300, page_size=7) as hub:
        got = [m.id for m in api(hub).list_models(**kw)]
        assert got == expected
        assert len(hub.requests) == max(1, -(-len(expected) // 7))  # no Link on the last page


def test_filter_matches_library_and_pipeline(hub_2022: HubServer, crawl_2022: list[dict[str, Any]]) -> None:
    # In 2022 "adapter-transformers" was only a library_name, never a tag.
    got = [m.id for m in api(hub_2022).list_models(filter="adapter-transformers")]
    assert got == _expected(crawl_2022, filter=["adapter-transformers"]) and got
    got = [m.id for m in api(hub_2022).list_models(filter="fill-mask")]
    assert got == _expected(crawl_2022, filter=["fill-mask"]) and got


# --------------------------------------------------------------------------------------------------
# Links, cursors, errors
# --------------------------------------------------------------------------------------------------


def test_link_header(hub_2022: HubServer) -> None:
    r = get(f"{hub_2022.url}/api/models?limit=1000&search=a&filter=x&filter=y")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == [] and "link" not in r.headers

    r = get(f"{hub_2022.url}/api/models?limit=1000&expand=sha&expand=likes")
    nxt = r.links["next"]["url"]
    assert nxt.startswith(f"{hub_2022.url}/api/models?limit=1000&expand=sha&expand=likes&cursor=")
    r2 = get(nxt)
    assert "link" in r2.headers
    r3 = get(r2.links["next"]["url"])  # 2,500 records: third page holds 500, no more Link
    assert len(r3.json()) == 500 and "link" not in r3.headers
    # A cursor is replaced, not duplicated, when the next Link is built.
    assert r2.links["next"]["url"].count("cursor=") == 1


def test_exactly_full_last_page_has_no_link(crawl_2022: list[dict[str, Any]]) -> None:
    with HubServer(crawl_2022[:2000], page_size=1000) as hub:
        assert len(list(api(hub).list_models())) == 2000
        assert len(hub.requests) == 2
    with HubServer([], page_size=10) as hub:
        assert list(api(hub).list_models()) == []
        assert len(hub.requests) == 1


@pytest.mark.parametrize(
    "query",
    [
        "cursor=notbase64!!",
        "cursor=eyJvIjotMX0",
        "cursor=bm9wZQ",
        "cursor=",
        "limit=abc",
        "limit=0",
        "limit=",
    ],
)
def test_bad_params_give_400(hub_2022: HubServer, query: str) -> None:
    # eyJvIjotMX0 = {"o":-1}; bm9wZQ = "nope"
    r = get(f"{hub_2022.url}/api/models?{query}")
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str)


def test_client_never_sends_bad_limits(hub_2022: HubServer) -> None:
    # The client slices with islice(items, limit) before any request: limit=0 returns nothing without
    # asking the server, a negative limit raises ValueError locally. Bad limits only come from raw HTTP.
    n0 = len(hub_2022.requests)
    assert list(api(hub_2022).list_models(limit=0)) == []
    with pytest.raises(ValueError):
        list(api(hub_2022).list_models(limit=-1))
    assert len(hub_2022.requests) == n0


def test_http_errors_reach_the_client_as_hf_errors(hub_2022: HubServer) -> None:
    hub_2022.hook = lambda info: json_response(400, {"error": "bad"}) if "search" in info.query else None
    try:
        with pytest.raises(HfHubHTTPError) as info:
            list(api(hub_2022).list_models(search="x"))
    finally:
        hub_2022.hook = None
    assert info.value.response.status_code == 400 and info.value.server_message == "bad"


def test_unknown_path_404_and_expand_with_full_400(hub_2022: HubServer) -> None:
    r = get(f"{hub_2022.url}/api/datasets")
    assert r.status_code == 404 and "error" in r.json()
    assert get(f"{hub_2022.url}/api/models?full=true&expand=sha").status_code == 400


# --------------------------------------------------------------------------------------------------
# Hook, request log, lifecycle
# --------------------------------------------------------------------------------------------------


def test_hook_503_then_normal_is_retried_by_client(crawl_2022: list[dict[str, Any]]) -> None:
    hub = HubServer(crawl_2022[:1500], page_size=1000)

    def flaky(info: RequestInfo) -> Response | None:
        # hub.requests already holds this request when the hook runs.
        if len(hub.requests) == 1:
            return json_response(503, {"error": "try later"})
        return None

    hub.hook = flaky
    with hub:
        t0 = time.monotonic()
        models = list(api(hub, token="hf_x").list_models())
        elapsed = time.monotonic() - t0
        assert len(models) == 1500
        assert len(hub.requests) == 3  # 503, retried page 1, page 2
        assert hub.requests[0].query == hub.requests[1].query == {}
        assert hub.requests[1].received_at - hub.requests[0].received_at >= 0.9  # client back-off
        assert all(r.headers["authorization"] == "Bearer hf_x" for r in hub.requests)
    assert elapsed < 5


def test_truncated_body_and_hook_errors(crawl_2022: list[dict[str, Any]]) -> None:
    def truncate(info: RequestInfo) -> Response | None:
        if info.query.get("limit") == ["cut"]:
            return Response(200, {"Content-Type": "application/json"}, b'[{"id": "x"}, {"id"', close_after=8)
        if info.query.get("limit") == ["boom"]:
            raise RuntimeError("hook bug")
        return None

    with HubServer(crawl_2022[:10], hook=truncate) as hub:
        with pytest.raises(httpx2.RemoteProtocolError):
            get(f"{hub.url}/api/models?limit=cut")
        assert get(f"{hub.url}/api/models?limit=boom").status_code == 500
        assert len(get(f"{hub.url}/api/models").json()) == 10  # server still healthy


def test_stop_releases_port_and_is_idempotent(crawl_2022: list[dict[str, Any]]) -> None:
    hub = HubServer(crawl_2022[:10]).start()
    url = hub.url
    assert len(list(api(hub).list_models())) == 10  # leaves a pooled keep-alive connection open
    t0 = time.monotonic()
    hub.stop()
    hub.stop()
    assert time.monotonic() - t0 < 2
    with pytest.raises(httpx2.ConnectError):
        get(f"{url}/api/models")
    with pytest.raises(RuntimeError):
        _ = hub.url
