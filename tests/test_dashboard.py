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
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.frameworks import FRAMEWORKS
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from hubcensus.service.charts.common import CHART_WIDTH, FRAMEWORK_COLORS, WIDE_CHART_WIDTH, framework_color
from hubcensus.service.charts.timelines import MIN_TREND_SAMPLE
from tests.data import BUNDLED, LIST_2025, ROOT
from tests.helpers import serving

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"

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
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real snapshots of different coverage: the 2022 crawl (29,432 models, no creation dates) and the
    2025-01-14 list (3,180 models)."""
    data_dir = tmp_path_factory.mktemp("dash")
    for path, day in ((BUNDLED, "2022-02-21"), (LIST_2025, "2025-01-14")):
        import_dump(path, data_dir, taken_at=datetime.fromisoformat(day).replace(tzinfo=UTC), max_bad_share=0)
    return data_dir


@pytest.fixture(scope="module")
def site(data_dir: Path) -> Iterator[str]:
    """The app over the two snapshots, under uvicorn."""
    with serving(data_dir) as url:
        yield url


@pytest.fixture(scope="module")
def api(data_dir: Path) -> Iterator[TestClient]:
    """The app over the two snapshots, through the ASGI transport."""
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        yield c


@pytest.fixture(scope="module")
def ids(data_dir: Path) -> dict[str, str]:
    """Snapshot ids by day taken."""
    return {m.taken_at.date().isoformat(): m.id for m in SnapshotStore(data_dir).snapshots()}


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
        assert "method inferred" in subtitle and "models with a framework" in subtitle  # method and denominator
        assert spec.get("data", {}).get("values") or spec["datasets"]  # data inline: a dashboard can embed it as is
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


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, flags=re.S)


def _checked(html: str) -> list[str]:
    return re.findall(r'name="fw" value="(\w+)" checked', html)


@pytest.mark.parametrize("fw", ["pytorch", "tensorflow", "jax"])
def test_dashboard_with_one_framework(api: TestClient, fw: str) -> None:
    """One box ticked is a universe of one framework: every chart answers, and nothing is `shared`."""
    page = api.get("/", params={"fw": fw})
    assert page.status_code == 200 and _checked(page.text) == [fw]
    for view in ("percent", "count"):
        page = api.get("/", params={"fw": fw, "view": view})
        assert page.status_code == 200, page.text[:500]
        assert _checked(page.text) == [fw] and len(_svgs(page.text)) == 3
        assert "shared" not in page.text.split("<table>")[1].split("</table>")[0]  # no always-zero column
    # With one framework the percent view answers "how many ship it at all", in percent of all models.
    spec = api.get("/v1/frameworks/share", params={"frameworks": fw, "_format": "vl"}).json()
    assert spec["encoding"]["x"]["title"] == f"% of all models that ship {fw}"
    body = api.get("/v1/frameworks/share", params={"frameworks": fw}).json()
    first = body["rows"][0]
    assert spec["data"]["values"][0]["pct"] == round(100 * first["with_framework"] / first["models"], 2)


def test_share_chart_percent_and_count(api: TestClient) -> None:
    """The percent view (the default) answers the question; the count view keeps the counts, none included."""
    body = api.get("/v1/frameworks/share").json()
    rows = {r["group"] or "(no task)": r for r in body["rows"]}
    spec = api.get("/v1/frameworks/share", params={"_format": "vl"}).json()
    assert spec == api.get("/v1/frameworks/share", params={"_format": "vl", "scale": "percent"}).json()
    bars, beside = spec["hconcat"]
    assert bars["encoding"]["x"]["title"] == "% of models with a framework"
    assert beside["encoding"]["x"]["title"] == "% with none"
    assert "bars: % of each group's models with a framework" in " ".join(spec["title"]["subtitle"])
    values = spec["data"]["values"]
    for group, row in rows.items():
        segments = [v for v in values if v["part"] == "fw" and v["group"] == group]
        if not segments:
            continue  # beyond the 25 largest groups
        assert {v["bucket"]: v["pct"] for v in segments} == {
            **{f"{fw} only": row["pct"][f"{fw}_only"] for fw in FRAMEWORKS},
            "shared": row["pct"]["shared"],
        }
        assert abs(sum(v["pct"] for v in segments) - 100) < 0.05
        (none,) = [v for v in values if v["part"] == "none" and v["group"] == group]
        assert none["none_pct"] == round(100 * row["none"] / row["models"], 2)
    counts = api.get("/v1/frameworks/share", params={"_format": "vl", "scale": "count"}).json()
    assert counts["encoding"]["x"]["title"] == "models"
    generation = {v["bucket"]: v["value"] for v in counts["data"]["values"] if v["group"] == "text-generation"}
    assert generation["none"] == rows["text-generation"]["none"]
    assert sum(generation.values()) == rows["text-generation"]["models"]
    # `scale` is for charts: the data answers are the same bytes either way.
    for fmt in ("json", "csv"):
        plain = api.get("/v1/frameworks/share", params={"_format": fmt})
        assert api.get("/v1/frameworks/share", params={"_format": fmt, "scale": "count"}).content == plain.content
    assert api.get("/v1/frameworks/share", params={"scale": "pie"}).status_code == 422
    # The dashboard: percent by default, counts on request, and the chart links follow the view.
    page = api.get("/").text
    assert '<option value="percent" selected>' in page and "% of models with a framework" in page
    counted = api.get("/", params={"view": "count"}).text
    assert '<option value="count" selected>' in counted and "scale=count&amp;_format=svg" in counted
    assert "scale=count" not in page


def test_charts_are_readable(api: TestClient) -> None:
    """12 px text at the size the dashboard shows, long names cut with an ellipsis (and whole in the table)."""
    routes = [
        ("/v1/frameworks/share", {}),
        ("/v1/frameworks/share", {"scale": "count"}),
        ("/v1/frameworks/share", {"by": "library_name"}),
        ("/v1/frameworks/share", {"frameworks": "jax"}),
        ("/v1/frameworks/trend", {}),
        ("/v1/frameworks/trend", {"weight": "downloads"}),
        ("/v1/frameworks/history", {}),
    ]
    for route, params in routes:
        svg = api.get(route, params={**params, "_format": "svg"}).text
        sizes = {float(s) for s in re.findall(r'font-size="([\d.]+)px"', svg)}
        assert sizes and min(sizes) >= 12, (route, params, sorted(sizes))
        width = int(re.search(r'<svg[^>]* width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
        assert width <= CHART_WIDTH, (route, params, width)
    page = api.get("/").text
    # The page never scales a chart down (that is what shrank the text to 8 px): a chart keeps its drawn size,
    # and each fits its panel at 1366 px (half: 552 px; a wide one alone in its row: 1158 px).
    assert ".chart svg { display: block; max-width: none;" in page
    widths = [int(re.search(r'width="(\d+)"', svg).group(1)) for svg in _svgs(page)]  # type: ignore[union-attr]
    assert max(widths[:2]) <= CHART_WIDTH < widths[2] <= WIDE_CHART_WIDTH  # share, trend; history alone in its row
    assert "minmax(576px, 1fr)" in page and CHART_WIDTH <= 576 - 2 * 16 - 2  # a half panel holds a chart
    share = _svgs(page)[0]
    assert "automatic-speech-recogn…</text>" in share  # cut in the chart…
    assert "<td>automatic-speech-recognition</td>" in page  # …whole in the table


def test_every_mark_has_a_tooltip(api: TestClient) -> None:
    """The inline SVG has no script: each bar and point carries its numbers as an SVG <title>."""
    page = api.get("/").text
    share, trend, history = _svgs(page)
    body = api.get("/v1/frameworks/share").json()
    generation = next(r for r in body["rows"] if r["group"] == "text-generation")
    expected = (
        f"<title>text-generation · pytorch only: {generation['pct']['pytorch_only']:.1f} % of "
        f"{generation['with_framework']:,} models with a framework ({generation['exclusive']['pytorch']:,})</title>"
    )
    assert expected in share
    none_pct = 100 * generation["none"] / generation["models"]
    assert f"<title>text-generation · no framework: {none_pct:.1f} % of all {generation['models']:,} models" in share
    bars = re.findall(r'<path [^>]*aria-roledescription="bar"[^>]*>(<title>[^<]+</title>)?', share)
    assert bars and all(bars)  # every bar has one
    assert re.search(r"<title>2024-12 · pytorch only: [\d.]+ % of [\d,]+ models with a framework", trend)
    assert re.search(r"<title>2024-12: [\d,]+ of [\d,]+ models with a framework</title>", trend)
    assert "<title>2022-02-21 (29,432 models, hub-2022-02-21.jsonl.gz) · pytorch only:" in history
    assert "hover a bar for its numbers" in share


def test_trend_shows_the_sample_size_and_marks_small_periods(api: TestClient) -> None:
    body = api.get("/v1/frameworks/trend").json()
    periods = {r["period"]: r for r in body["rows"]}
    small = {p for p, r in periods.items() if p != "unknown" and r["with_framework"] < MIN_TREND_SAMPLE}
    assert small and len(small) < len(periods) - 1  # the real list has both
    spec = api.get("/v1/frameworks/trend", params={"_format": "vl"}).json()
    # The sample size of every period, in the chart (bars under the lines) and in its tooltips.
    sizes = {s["period"]: s for s in spec["datasets"]["sizes"]}
    assert set(sizes) == set(periods) - {"unknown"}
    assert all(sizes[p]["n"] == periods[p]["with_framework"] and sizes[p]["ok"] == (p not in small) for p in sizes)
    # Small periods are points, not part of a line; the rule is printed under the title.
    for point in spec["datasets"]["lines"]:
        assert point["ok"] == (point["period"] not in small)
        assert (point["line"] is None) == (point["period"] in small)
    assert (
        f"hollow, not joined: fewer than {MIN_TREND_SAMPLE} models with a framework ({len(small)} of "
        f"{len(sizes)})" in spec["title"]["subtitle"]
    )
    # The data answer keeps every period, with its counts.
    assert small <= set(periods)


def test_history_says_when_snapshots_are_not_comparable(api: TestClient, ids: dict[str, str]) -> None:
    """A full crawl and a 3,180-model list are not one series: the answer, the chart and the page say so."""
    old, new = ids["2022-02-21"], ids["2025-01-14"]
    body = api.get("/v1/frameworks/history").json()
    assert body["not_comparable"] == [
        {"before": old, "after": new, "reasons": ["model counts differ by a factor of 9.3 (29,432 and 3,180)"]}
    ]
    assert [(s["source"], s["kind"], s["models"]) for s in body["snapshots"]] == [
        ("hub-2022-02-21.jsonl.gz", "import", 29_432),
        ("rimel_2025-01-14_list.json.gz", "import", 3_180),
    ]
    spec = api.get("/v1/frameworks/history", params={"_format": "vl"}).json()
    segments = {p["taken_at"][:10]: p["segment"] for p in spec["data"]["values"]}
    assert segments == {"2022-02-21": 0, "2025-01-14": 1}  # the line is broken between them
    line, _points, rule = spec["layer"]
    assert line["encoding"]["detail"]["field"] == "segment" and rule["mark"]["type"] == "rule"
    subtitle = "\n".join(spec["title"]["subtitle"])
    assert "not comparable across the dashed line" in subtitle
    assert "2022-02-21: 29,432 models, import of hub-2022-02-21.jsonl.gz" in subtitle
    assert "2025-01-14: 3,180 models, import of rimel_2025-01-14_list.json.gz" in subtitle
    page = api.get("/").text
    warning = re.search(r'<p class="warning">(.*?)</p>', page, flags=re.S)
    assert warning is not None
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", warning.group(1)))
    assert "29,432 models, import of hub-2022-02-21.jsonl.gz" in text
    assert "3,180 models, import of rimel_2025-01-14_list.json.gz" in text


def _grid(html: str) -> list[str]:
    grid = html.split('<div class="grid">')[1].split('<section class="table">')[0]
    return re.findall(r'<section class="([^"]+)">', grid)


def test_no_half_empty_row(api: TestClient, ids: dict[str, str], tmp_path: Path) -> None:
    """Panels go two to a row; a last one alone spans the row; a snapshot without dates has no empty panel."""
    assert _grid(api.get("/", params={"snapshot": ids["2025-01-14"]}).text) == ["share", "trend", "history wide"]
    no_dates = api.get("/", params={"snapshot": ids["2022-02-21"]}).text
    assert _grid(no_dates) == ["share", "history"] and "has no creation dates" in no_dates
    import_dump(BUNDLED, tmp_path, taken_at=datetime(2022, 2, 21, tzinfo=UTC), max_bad_share=0)
    with TestClient(create_app(Settings(data_dir=tmp_path))) as alone:
        page = alone.get("/").text
    assert _grid(page) == ["share wide"] and "has no creation dates" in page
    width = int(re.search(r'<svg[^>]* width="(\d+)"', page).group(1))  # type: ignore[union-attr]
    assert CHART_WIDTH < width <= WIDE_CHART_WIDTH  # drawn for the whole row


def test_a_browser_gets_errors_as_a_page(api: TestClient, tmp_path: Path) -> None:
    html = {"Accept": BROWSER_ACCEPT}
    cases = [
        ({"snapshot": "nope"}, 404, "No snapshot with id &#39;nope&#39;."),
        ({"method": "weights"}, 422, "method: Input should be"),
        ({"fw": "mxnet"}, 422, "Input should be &#39;pytorch&#39;"),
        ({"view": "pie"}, 422, "view: Input should be"),
        ({"colour": "red"}, 422, "Unknown query parameter &#39;colour&#39;"),
    ]
    for params, status, message in cases:
        page = api.get("/", params=params, headers=html)
        assert page.status_code == status and page.headers["content-type"].startswith("text/html"), params
        assert message in page.text and '<a href="/">Back to the dashboard</a>' in page.text
        # Anything that does not ask for HTML still gets the one JSON envelope.
        for accept in ("*/*", "application/json", "application/json, text/html;q=0.5"):
            api_answer = api.get("/", params=params, headers={"Accept": accept})
            assert api_answer.status_code == status and api_answer.json()["error"]["status"] == status
    with TestClient(create_app(Settings(data_dir=tmp_path))) as empty:
        page = empty.get("/", headers=html)
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert "No snapshot has been published yet" in page.text and 'href="/v1/status"' in page.text
        assert empty.get("/").json()["error"]["code"] == "no_snapshots"


def test_framework_colours_beyond_the_three() -> None:
    """Frameworks without a fixed colour get distinct palette colours: the charts need no change to add one."""
    more = ("pytorch", "tensorflow", "jax", "keras", "mlx", "gguf", "onnx")
    colours = [framework_color(fw, more) for fw in more]
    assert colours[:3] == [FRAMEWORK_COLORS[fw] for fw in more[:3]]
    assert len(set(colours)) == len(more)
