"""Suite-wide fixtures, the Hypothesis profile and the POSTERN_REQUIRE_ALL rule.

Tests that need a tool that may be absent (swaks, Postfix, Dovecot, Chromium, dnsmasq) call
``support.require("tool")``: on a developer's laptop that skips with a reason; with
``POSTERN_REQUIRE_ALL=1`` (set by .ci/run) every skip, of any origin, is a failure.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from mta.common.paths import StateDir

REQUIRE_ALL = os.environ.get("POSTERN_REQUIRE_ALL") == "1"

# Property tests assert behaviour, not speed (numbers live in bench/): no per-example
# deadline, which a loaded 2-core CI machine can exceed at random (one did: 311 ms > 200 ms).
settings.register_profile("postern", deadline=None)
settings.load_profile("postern")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under POSTERN_REQUIRE_ALL=1: {reason}"


@pytest.fixture
def state(tmp_path) -> StateDir:  # type: ignore[no-untyped-def]
    """A fresh, empty state directory layout (not initialised)."""
    return StateDir.single(tmp_path / "var")
