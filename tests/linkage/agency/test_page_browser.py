"""The encoder page in real headless Chromium, through the whole flow, against `pprl encoder` itself.

A spreadsheet with the agency's own column names, spreadsheet dates, multi-line addresses
and a few bad rows is dropped on the page, checked and encoded; the output must be what
`pprl encode` makes of the same file (tokens aside). With PPRL_UPDATE_SCREENSHOTS=1 the
test writes the page's steps to docs/images/ (the pictures in docs/agency-guide.md), so
they show the page as it is.
"""

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from linkage.agency.columns import format_columns
from tests.helpers import (
    EXAMPLE_PROTOCOL,
    EXPORT_COLUMNS,
    ROOT,
    SECRET,
    agency_export,
    canonical,
    invoke,
    write_xlsx,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES = ROOT / "docs" / "images"


@pytest.fixture
def browser():
    """Headless Chromium driven by Playwright (its own browser download is never used)."""
    if CHROMIUM is None:
        if os.environ.get("PPRL_REQUIRE_CHROMIUM"):
            pytest.fail("PPRL_REQUIRE_CHROMIUM is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium here; .ci/run installs it (Debian package `chromium`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def encoder_url(tmp_path):
    """`pprl encoder --no-browser` running in its own process; its link, and its output folder."""
    out = tmp_path / "encoded"
    process = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "cli.main", "encoder", "--no-browser", "--out-dir", str(out), "--workers", "1"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=60)
            url = next(iter(re.findall(r"open (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)), None)
        yield url, out
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()


def shoot(locator, name, tmp_path):
    """A screenshot of one step; into docs/images/ when asked to refresh them."""
    folder = IMAGES if os.environ.get("PPRL_UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    locator.screenshot(path=str(path), animations="disabled")
    assert path.stat().st_size > 5_000, f"{name} is nearly empty"


def drop_file(page, selector, path):
    """Drop a file on an element, as a person dragging it from their desktop does."""
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name));
            return transfer;
        }""",
        [path.name, list(path.read_bytes())],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@pytest.mark.slow
def test_a_spreadsheet_encodes_through_the_page_as_through_the_cli(browser, encoder_url, agencies, runner, tmp_path):
    url, out = encoder_url
    base = url.split("/?")[0]
    header, rows = agency_export(agencies["msd"].parent / "data" / "msd.csv", 300)
    spreadsheet = write_xlsx(tmp_path / "clients.xlsx", {"Clients": [header, *rows], "Notes": [["a", "b"]]})
    secret_file = tmp_path / "secret.key"
    secret_file.write_text(SECRET.hex() + "\n")

    page = browser.new_page(viewport={"width": 1000, "height": 900})
    requests, problems = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    assert page.url == base + "/", "the token leaves the address bar"

    page.set_input_files("#protocol-input", str(EXAMPLE_PROTOCOL))
    page.wait_for_selector("#party-row:not(.hidden)")
    page.select_option("#party-select", "msd")
    page.set_input_files("#secret-input", str(secret_file))
    page.wait_for_selector("#secret-status.ok")
    assert "secret loaded" in page.inner_text("#secret-status")
    shoot(page.locator("#step-files"), "encoder-1-protocol-and-secret.png", tmp_path)

    drop_file(page, "#drop-zone", spreadsheet)
    page.wait_for_selector("#step-columns:not(.hidden)")
    assert page.input_value("select[data-column=date_of_birth]") == "DOB"
    assert page.input_value("select[data-column=given_name]") == "First Name"
    assert page.input_value("select[data-column=region]") == ""
    for column, name in EXPORT_COLUMNS.items():
        page.select_option(f"select[data-column={column}]", name)
    shoot(page.locator("#step-columns"), "encoder-2-columns.png", tmp_path)

    page.click("#check-button")
    page.wait_for_selector("#step-check:not(.hidden)")
    count = len(rows)
    assert page.inner_text("#check-headline") == f"{count} rows: {count - 4} can be encoded, 4 cannot (listed below)."
    assert "01/01/1900 ×1" in page.inner_text("#quality-table")
    assert page.locator("#preview-table tbody tr").count() == 5
    page.click("#problems-box summary")
    shoot(page.locator("#step-check"), "encoder-3-check.png", tmp_path)

    page.check("input[name=on-error][value=skip]")
    page.click("#encode-button")
    page.wait_for_selector("#result:not(.hidden)", timeout=120_000)
    assert page.eval_on_selector("#encode-progress", "bar => bar.value") == 100
    folder = page.inner_text("#result-folder")
    assert page.inner_text("#result-headline") == f"{count - 4} clients encoded; 4 rows left out (see rejected.csv)."
    assert "keymap.csv" in page.inner_text("ul.keep") and "encodings.pprl" in page.inner_text("ul.send")
    shoot(page.locator("#step-encode"), "encoder-4-done.png", tmp_path)

    assert SECRET.hex() not in page.content()
    assert problems == [], "no script error and no blocked resource"
    assert all(request.startswith(base + "/") for request in requests), "nothing fetched from elsewhere"
    page.close()

    cli_out = tmp_path / "cli"
    result = invoke(
        runner,
        "encode",
        "--protocol",
        str(EXAMPLE_PROTOCOL),
        "--party",
        "msd",
        "--secret-file",
        str(secret_file),
        str(spreadsheet),
        "--out",
        str(cli_out),
        "--columns",
        format_columns(EXPORT_COLUMNS),
        "--on-error",
        "skip",
        "--workers",
        "1",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    page_files, cli_files = canonical(Path(folder)), canonical(cli_out)
    assert Path(folder).parent == out.resolve()
    assert page_files.pop(Path(folder).name + "/encodings.pprl") == cli_files.pop("cli/encodings.pprl")
    assert page_files == cli_files
    assert sorted(page_files) == ["attributes.csv", "keymap.csv", "rejected.csv"]
