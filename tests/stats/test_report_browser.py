"""The report opened in headless Chromium: the page renders, with its charts."""

import os
import shutil
import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest
from matplotlib import image

from stats.budget import FileLedger
from stats.dp import answer_queries, answer_query
from stats.report import build_report
from tests.helpers import example_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        if os.environ.get("PPRL_REQUIRE_CHROMIUM"):
            pytest.fail("PPRL_REQUIRE_CHROMIUM is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium here; .ci/run installs it (Debian package `chromium`)")
    return CHROMIUM


def test_the_report_renders_with_its_charts_in_chromium(chromium, protocol, table, tmp_path):
    ledger = FileLedger(tmp_path / "ledger", protocol)

    def plan(query):
        return answer_query(table, query, protocol, ledger.spend, "ministry", dry_run=True)

    def release(queries, label):
        return answer_queries(table, queries, protocol, ledger.spend, "ministry", label)

    page = build_report(
        protocol, example_report(protocol), plan=plan, release=release, budget=ledger.budget, now=datetime.now(UTC)
    )
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    completed = subprocess.run(  # noqa: S603 - a fixed browser command on our own file
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--hide-scrollbars", "--window-size=1000,4000",
         f"--screenshot={shot}", report.as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0 and shot.exists(), completed.stderr.decode()[-2000:]
    pixels = image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (4000, 1000)
    ink = np.mean(pixels.sum(axis=2) < 2.4)
    assert ink > 0.03, "the page has text and charts, not a blank screen"
    bars = np.all(np.abs(pixels - np.array([0x1F, 0x5F, 0x8B]) / 255) < 0.04, axis=2)
    assert bars.sum() > 20_000, "the charts' bars are drawn (their colour covers a good part of the page)"
    assert bars[:, 500:].sum() > 1_000, "bars reach across the page, so the charts have their width"
