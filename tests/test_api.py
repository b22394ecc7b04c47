"""The HTTP API over the bundled real snapshot: numbers, parameters, and the error envelope."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, FRAMEWORKS
from tests.data import expected_share


@pytest.mark.parametrize("method", ["tags", "files", "inferred", "loadable"])
@pytest.mark.parametrize("universe", [["pytorch", "tensorflow"], ["pytorch", "tensorflow", "jax"], list(FRAMEWORKS)])
def test_share_equals_direct_computation(
    client: TestClient, crawl_2022: list[dict[str, Any]], method: str, universe: list[str]
) -> None:
    r = client.get("/v1/frameworks/share", params={"method": method, "frameworks": ",".join(universe)})
    assert r.status_code == 200
    body = r.json()
    expected = expected_share(crawl_2022, method, universe)
    assert len(body["rows"]) == len(expected)
    for row in body["rows"]:
        exp = expected[row["group"]]
        assert row["none"] == exp["none"]
        assert row["shared"] == exp["shared"]
        assert row["exclusive"] == {fw: exp[fw] for fw in universe}
        assert row["models"] == sum(exp.values()) == row["with_framework"] + row["none"]
        assert row["with_framework"] == sum(row["exclusive"].values()) + row["shared"]
        assert row["shared"] == sum(row["combinations"].values())
    assert body["total"]["models"] == 29_432
    models = [row["models"] for row in body["rows"]]
    assert models == sorted(models, reverse=True)


def test_share_response_keys_and_snapshot(client: TestClient, demo_snapshot: SnapshotMeta) -> None:
    body = client.get("/v1/frameworks/share?method=tags&frameworks=pytorch,tensorflow").json()
    assert set(body) >= {"snapshot", "method", "by", "frameworks", "total", "rows"}
    assert body["snapshot"] == {
        "id": demo_snapshot.id,
        "taken_at": "2022-02-21T00:00:00Z",
        "classifier_version": CLASSIFIER_VERSION,
    }
    assert (body["method"], body["by"], body["frameworks"]) == (
        "tags",
        "pipeline_tag",
        ["pytorch", "tensorflow"],
    )
    total = body["total"]
    assert set(total) == {"models", "with_framework", "none", "shared", "exclusive", "combinations", "pct"}
    # Tag counts of the whole crawl: pytorch 20,707 and tf 1,987 of which 1,695 carry both.
    assert total["exclusive"] == {"pytorch": 19_012, "tensorflow": 292}
    assert total["combinations"] == {"pytorch+tensorflow": 1_695}
    assert total["pct"] == {"pytorch_only": 90.54, "tensorflow_only": 1.39, "shared": 8.07}
    assert body["rows"][-1]["group"] is not None or body["rows"][0]["group"] is None


def test_universe_folds_other_frameworks_away(client: TestClient) -> None:
    """With frameworks=pytorch,tensorflow a PyTorch+JAX model counts as PyTorch-only."""
    three = client.get("/v1/frameworks/share?method=tags").json()["total"]
    two = client.get("/v1/frameworks/share?method=tags&frameworks=pytorch,tensorflow").json()["total"]
    combos = three["combinations"]
    assert two["exclusive"]["pytorch"] == three["exclusive"]["pytorch"] + combos["pytorch+jax"]
    assert two["models"] == three["models"]
    # JSON lists the combinations that occur (no TF+JAX-only model in the crawl); the feeds have them all.
    assert three["exclusive"]["jax"] + combos.get("tensorflow+jax", 0) == (two["none"] - three["none"])
    assert combos and all(n > 0 for n in combos.values())


@pytest.mark.parametrize(
    ("params", "filters"),
    [
        ({"pipeline_tag": "fill-mask"}, {"pipeline_tag": "fill-mask"}),
        ({"library_name": "timm"}, {"library_name": "timm"}),
        ({"author": "google"}, {}),
    ],
)
def test_filters(
    client: TestClient, crawl_2022: list[dict[str, Any]], params: dict[str, str], filters: dict[str, str]
) -> None:
    body = client.get("/v1/frameworks/share", params={**params, "method": "tags"}).json()
    records = crawl_2022
    if "author" in params:
        records = [r for r in crawl_2022 if r["modelId"].startswith("google/")]
    expected = expected_share(records, "tags", ["pytorch", "tensorflow", "jax"], **filters)
    assert body["total"]["models"] == sum(sum(c.values()) for c in expected.values()) > 0


def test_group_by_library(client: TestClient, crawl_2022: list[dict[str, Any]]) -> None:
    body = client.get("/v1/frameworks/share?by=library_name&method=inferred").json()
    assert body["by"] == "library_name"
    counts = Counter(r.get("library_name") for r in crawl_2022)
    assert {row["group"]: row["models"] for row in body["rows"]} == dict(counts)


def test_snapshots_routes(client: TestClient, demo_snapshot: SnapshotMeta) -> None:
    listing = client.get("/v1/snapshots").json()
    assert [s["id"] for s in listing["snapshots"]] == [demo_snapshot.id]
    one = client.get(f"/v1/snapshots/{demo_snapshot.id}").json()
    assert one["models"] == 29_432 and one["source"] == "hub-2022-02-21.jsonl.gz"
    assert set(one) >= {
        "id",
        "taken_at",
        "source",
        "models",
        "bad_records",
        "duration_s",
        "classifier_version",
    }
    assert client.get("/v1/snapshots/latest").json()["id"] == demo_snapshot.id
    assert client.get("/v1/frameworks/share", params={"snapshot": demo_snapshot.id}).status_code == 200
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "snapshots": 1, "latest": demo_snapshot.id}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error envelope, with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "status", "details"}
    assert body["error"]["code"] == code and body["error"]["status"] == status and body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("/v1/frameworks/share?method=weights", 422, "invalid_parameter"),
        ("/v1/frameworks/share?by=author", 422, "invalid_parameter"),
        ("/v1/frameworks/share?frameworks=pytorch,mxnet", 422, "invalid_parameter"),
        ("/v1/frameworks/share?frameworks=", 422, "invalid_parameter"),
        ("/v1/frameworks/share?metod=tags", 422, "unknown_parameter"),
        ("/v1/frameworks/share?snapshot=20990101T000000Z-abcdef", 404, "snapshot_not_found"),
        ("/v1/snapshots/nope", 404, "snapshot_not_found"),
        ("/v1/snapshots?x=1", 422, "unknown_parameter"),
        ("/healthz?x=1", 422, "unknown_parameter"),
        ("/v1/nothing-here", 404, "not_found"),
    ],
)
def test_errors_come_in_one_envelope(client: TestClient, url: str, status: int, code: str) -> None:
    assert_error(client.get(url), status, code)


def test_every_route_answers_errors_in_the_envelope(client: TestClient) -> None:
    """Each API route, given an unknown parameter and a wrong HTTP method, answers the envelope."""
    paths = list(client.get("/openapi.json").json()["paths"])
    assert len(paths) >= 4
    for template in paths:
        path = template.replace("{snapshot}", "latest")
        assert_error(client.get(path, params={"no_such_parameter": "1"}), 422, "unknown_parameter")
        assert_error(client.patch(path), 405, "method_not_allowed")


def test_empty_store_answers_503_not_500(tmp_path: Any) -> None:
    from hubcensus.config import Settings
    from hubcensus.service.app import create_app

    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        assert_error(c.get("/v1/frameworks/share"), 503, "no_snapshots")
        assert_error(c.get("/v1/snapshots/latest"), 503, "no_snapshots")
        assert c.get("/v1/snapshots").json() == {"snapshots": []}
        assert c.get("/healthz").json() == {"status": "ok", "snapshots": 0, "latest": None}


def test_openapi_documents_routes_and_error_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    share = spec["paths"]["/v1/frameworks/share"]["get"]
    assert share["description"] or share["summary"]
    assert "422" in share["responses"] and "404" in share["responses"]
    assert "ErrorResponse" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    # The docs page loads its assets from this server, never from a CDN: /docs works offline.
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/") for a in assets)
    assert all(client.get(a).status_code == 200 for a in assets)


def test_the_api_never_imports_ingest() -> None:
    # `service` and `ingest` meet at the files of the data dir only (docs/ARCHITECTURE.md). The app is built
    # from Settings, which also builds ingest's options: it must import ingest only where it builds them.
    code = "import sys, hubcensus.service.app; print(sorted(m for m in sys.modules if 'hubcensus.ingest' in m))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
