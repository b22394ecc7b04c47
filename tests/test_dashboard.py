"""The dashboard and the charts, checked in a real browser (headless Chromium) and over HTTP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hubcensus.ingest.dumps import import_dump
from tests.conftest import BUNDLED, FIXTURES, ROOT
from tests.helpers import serving

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app over two real snapshots (the 2022 crawl and the 2025-01-14 list), under uvicorn."""
    data_dir = tmp_path_factory.mktemp("dash")
    for path, day in ((BUNDLED, "2022-02-21"), (FIXTURES / "rimel_2025-01-14_list.json.gz", "2025-01-14")):
        import_dump(path, data_dir, taken_at=datetime.fromisoformat(day).replace(tzinfo=UTC), max_bad_share=0)
    with serving(data_dir) as url:
        yield url


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium, as root, with no network beyond loopback and a fresh profile."""
    if CHROMIUM is None:
        if os.environ.get("HUBCENSUS_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dashboard_in_a_real_browser(site: str, tmp_path: Path) -> None:
    started = time.monotonic()
    dom = chromium("--dump-dom", f"{site}/", tmp=tmp_path)
    first_render = time.monotonic() - started
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # no script errors, no failed resource loads
    html = dom.stdout
    # Three charts (share, trend, history: two snapshots), drawn as inline SVG with real marks.
    charts = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(charts) == 3
    assert all(len(re.findall(r"<path", svg)) > 5 for svg in charts)
    assert "Framework share by task" in html and "Framework share across snapshots" in html
    assert "<script" not in html and "http://" not in html.split("<body>")[0]  # no external assets
    # The feed links under each chart answer, in the format they promise.
    links = sorted(set(re.findall(r'href="(/v1/frameworks/[^"]+)"', html)))
    assert len(links) == 18
    with httpx.Client(base_url=site) as client:
        for link in links:
            r = client.get(link.replace("&amp;", "&"))
            fmt = re.search(r"_format=(\w+)", link)
            assert r.status_code == 200, link
            expected = {
                "json": "application/json",
                "csv": "text/csv",
                "parquet": "application/vnd.apache.parquet",
                "svg": "image/svg+xml",
                "png": "image/png",
                "vl": "application/vnd.vegalite.v5+json",
            }
            assert fmt is not None and r.headers["content-type"].startswith(expected[fmt.group(1)])
    ARTIFACTS.mkdir(exist_ok=True)
    shot = chromium("--window-size=1366,1800", f"--screenshot={ARTIFACTS / 'dashboard.png'}", f"{site}/", tmp=tmp_path)
    assert shot.returncode == 0 and (ARTIFACTS / "dashboard.png").stat().st_size > 50_000
    print(f"dashboard: first render in Chromium {first_render:.2f} s, page {len(html.encode()):,} bytes")


def test_dashboard_pickers_and_no_js(site: str) -> None:
    with httpx.Client(base_url=site) as client:
        snapshots = client.get("/v1/snapshots").json()["snapshots"]
        oldest = snapshots[-1]["id"]
        page = client.get("/", params={"snapshot": oldest, "method": "tags", "fw": ["pytorch", "tensorflow"]})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        text = page.text
        assert f'<option value="{oldest}" selected>' in text and '<option value="tags" selected>' in text
        assert 'value="jax">' in text and 'value="jax" checked' not in text
        # 2022 crawl: no createdAt at all, so the trend chart is replaced by an explanation.
        assert "has no creation dates" in text and text.count("<svg") == 2
        assert "90.5" in text  # tags, PyTorch vs TF, all tasks: 90.54 % PyTorch-only
        bad = client.get("/", params={"snapshot": "nope"})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "snapshot_not_found"


@pytest.mark.parametrize("route", ["/v1/frameworks/share", "/v1/frameworks/trend", "/v1/frameworks/history"])
def test_chart_formats(site: str, route: str) -> None:
    with httpx.Client(base_url=site) as client:
        spec = client.get(route, params={"_format": "vl"}).json()
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
        subtitle = " ".join(spec["title"]["subtitle"])
        assert ("method inferred" in subtitle and "denominator" in subtitle) or "pct" in subtitle
        assert spec["data"]["values"]  # data inline: a dashboard can embed it as is
        svg = client.get(route, params={"_format": "svg"})
        assert svg.headers["content-type"] == "image/svg+xml" and svg.text.lstrip().startswith("<svg")
        png = client.get(route, headers={"Accept": "image/png"})
        assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get(route, params={"_format": "svg"}).headers["etag"] == svg.headers["etag"]


def test_tabular_routes_without_a_chart_refuse_chart_formats(site: str) -> None:
    with httpx.Client(base_url=site) as client:
        for route, params in (
            ("/v1/tasks", {}),
            ("/v1/models", {}),
            ("/v1/frameworks/history", {"by": "pipeline_tag"}),
        ):
            r = client.get(route, params={**params, "_format": "svg"})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"
