"""`make demo`'s script at a small size: every step runs and the tour ends with the report."""

import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_demo_tells_the_whole_story(tmp_path):
    out = tmp_path / "demo"
    completed = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "cli.demo", "--people", "400", "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for step in ("Encode haven's client list", "Link the three agencies' encodings", "Download msd's results",
                 "How many clients do the agencies share?", "Write the quarterly report for the ministry",
                 "Ask for more than the budget has left", "Show the privacy budget ledger",
                 "One of Haven's clients withdraws", "Read the audit log",
                 "Score the linkage against the synthetic truth", "Next quarter: 20 new people arrive",
                 "Send msd's new clients to the service as a batch", "Link the batches",
                 "Download what changed for msd's clients since its last download",
                 "Add the quarter to the linkage: only the new records are compared"):  # fmt: skip
        assert f"== {step}" in completed.stdout
    assert "answered 409 (budget_exceeded)" in completed.stderr
    assert "withdrew 1 record(s) of party haven" in completed.stdout
    assert "erasure.withdraw" in completed.stdout, "the audit log says what was withdrawn"
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 5
    assert (out / "msd-shared.csv").exists() and (out / "haven-shared.csv").exists()
    assert not (out / "police-shared.csv").exists(), "police were refused record-level results"
    assert "haven: " in completed.stdout and " added, 0 corrected, 2 withdrawn" in completed.stdout
    assert (out / "entities-q2.csv").exists() and (out / "entities-q2.retired.csv").exists()
    # The service's quarter: msd's changes since its first download, in one line.
    assert re.search(r"change\(s\) since your download of run 1", completed.stdout)
    assert re.search(r"what changed for msd's clients: \d+ linked", completed.stdout), completed.stdout[-3000:]
    assert (out / "msd-changes.csv").read_text().startswith("client_id,change,parties\n")
