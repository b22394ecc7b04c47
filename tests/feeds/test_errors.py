"""The feeds' errors: every one in the envelope, cursors bound to their snapshot and query."""

from __future__ import annotations

import httpx
import pytest

from tests.feeds.common import ROUTES, SNAPSHOT_ROUTES, Census, assert_error, forge_cursor

# --- 6. errors -----------------------------------------------------------------------------------

ERROR_CASES: dict[str, tuple[dict[str, str], int, str]] = {
    "bad_format": ({"_format": "xml"}, 422, "invalid_parameter"),
    "size_0": ({"_size": "0"}, 422, "invalid_parameter"),
    "size_10001": ({"_size": "10001"}, 422, "invalid_parameter"),
    "size_not_int": ({"_size": "ten"}, 422, "invalid_parameter"),
    "size_0_csv": ({"_size": "0", "_format": "csv"}, 422, "invalid_parameter"),
    "unknown": ({"bogus": "1"}, 422, "unknown_parameter"),
    "garbage_cursor": ({"_next": "garbage!"}, 422, "invalid_cursor"),
    "negative_cursor": ({"_next": "NEGATIVE"}, 422, "invalid_cursor"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
@pytest.mark.parametrize("route", ROUTES)
def test_errors_use_the_envelope(census: Census, http: httpx.Client, route: str, case: str) -> None:
    extra, status, code = ERROR_CASES[case]
    if extra.get("_next") == "NEGATIVE":
        issued = http.get(census.path(route), params=census.params(route, _size="1")).json()["next"]
        extra = {"_next": forge_cursor(issued, -1)}
    r = http.get(census.path(route), params=census.params(route, **extra))
    error = assert_error(r, status, code)
    if code == "unknown_parameter":
        assert error["details"] == [{"parameter": "bogus", "in": "query", "message": "unknown parameter"}]
    if case == "bad_format":
        assert error["details"][0]["parameter"] == "_format"
    if case.startswith("size"):
        assert error["details"][0]["parameter"] == "_size"


@pytest.mark.parametrize("route", ROUTES)
def test_cursor_is_bound_to_its_snapshot(census: Census, http: httpx.Client, route: str) -> None:
    """A cursor from another snapshot (or snapshot pair, or history range) is refused, not misapplied."""
    path = census.path(route)
    if route in SNAPSHOT_ROUTES:
        other_path, other = path, census.params(route, snapshot=census.mid, _size="1")
    elif route == "history":
        other_path, other = path, census.params(route, **{"from": "2024-01-01", "_size": "1"})
    else:
        other_path, other = census.path(route, a=census.old), census.params(route, _size="1")
    cursor = http.get(other_path, params=other).json()["next"]
    assert cursor is not None
    # The cursor works where it came from…
    assert http.get(other_path, params={**other, "_next": cursor}).status_code == 200
    # …and not on the same route over other snapshots.
    assert_error(http.get(path, params=census.params(route, _next=cursor, _size="1")), 422, "invalid_cursor")


def test_snapshot_and_change_errors(census: Census, http: httpx.Client) -> None:
    assert_error(http.get("/v1/frameworks/share", params={"snapshot": "nope"}), 404, "snapshot_not_found")
    assert_error(http.get(census.path("diff", a="nope")), 404, "snapshot_not_found")
    missing = assert_error(http.get(census.path("diff_models")), 422, "invalid_parameter")
    assert missing["details"][0]["parameter"] == "change"
    assert_error(http.get(census.path("diff_models"), params={"change": "renamed"}), 422, "invalid_parameter")
    assert_error(http.get("/v1/frameworks/history", params={"snapshot": census.latest}), 422, "unknown_parameter")


# --- regressions: bugs found while writing these tests (fixed since, in d9bbd81) ---------------------


@pytest.mark.parametrize(
    ("route", "offset"),
    [("share", "1e999"), ("models", "1e999"), ("models", "1" + "0" * 23), ("tasks", "1" + "0" * 23)],
)
def test_cursor_with_out_of_range_offset_is_invalid(census: Census, process_url: str, route: str, offset: str) -> None:
    """A forged cursor whose offset is infinite or beyond BIGINT is refused (it was a 500)."""
    issued = httpx.get(process_url + census.path(route), params=census.params(route, _size="1"), timeout=60)
    cursor = forge_cursor(issued.json()["next"], offset)
    # Another process (see process_url), and a fresh connection: uvicorn drops the connection after a 500.
    r = httpx.get(process_url + census.path(route), params=census.params(route, _next=cursor), timeout=60)
    assert_error(r, 422, "invalid_cursor")
