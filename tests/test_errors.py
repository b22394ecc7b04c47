"""The error kinds: one class each, with its status and code fixed together, and the only way an error is raised."""

from __future__ import annotations

import re
from typing import get_args

from hubcensus.service.errors import ApiError, ErrorCode
from tests.data import ROOT


def test_every_error_code_is_one_class() -> None:
    # Each code of the envelope has exactly one class, so one kind of error (a snapshot not found, say) is
    # raised the same way everywhere: with one status, one code and one message.
    codes = [kind.code for kind in ApiError.__subclasses__()]
    assert sorted(codes) == sorted(get_args(ErrorCode))


def test_no_route_writes_a_status_and_code_by_hand() -> None:
    # `ApiError(404, "snapshot_not_found", …)` was written in two places with two messages: the classes in
    # service/errors.py are the only place a status goes with a code.
    by_hand = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "service").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bApiError\(\s*\d", line) or re.search(r"\bApiError\(\s*$", line)
    ]
    assert by_hand == []
