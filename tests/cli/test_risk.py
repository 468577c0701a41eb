"""`pprl risk`: the attacks run end to end from the command line, with JSON and a chart."""

import json

import pytest
from click.testing import CliRunner

from cli.main import main
from linkage.evaluation.synth import synthesise_population
from tests.helpers import EXAMPLE_PROTOCOL, SECRET


@pytest.fixture(scope="module")
def population(tmp_path_factory, protocol):
    folder = tmp_path_factory.mktemp("risk") / "synth"
    synthesise_population(protocol, 1200, 5, folder)
    return folder


def test_risk_command(population, tmp_path, monkeypatch):
    monkeypatch.setenv("PPRL_SECRET", SECRET.hex())
    chart = tmp_path / "risk.png"
    result = CliRunner().invoke(
        main,
        [
            "risk",
            "--protocol",
            str(EXAMPLE_PROTOCOL),
            str(population / "police.csv"),
            "--sample",
            "120",
            "--quality-people",
            "0",
            "--json",
            "--plot",
            str(chart),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    labels = [option["hardening"] for option in report["options"]]
    assert labels[0] == "none" and "salt2+diffusion4+clk_fallback" in labels
    assert report["records"] == 120 and report["overlap"] == 1.0
    # Every attack at the attacker's three overlaps: the worst case and likelier ones.
    assert report["overlaps"] == [1.0, 0.5, 0.2]
    assert all(set(option["attacks_by_overlap"]) == {"1.00", "0.50", "0.20"} for option in report["options"])
    assert set(report["options"][0]["attacks"]) == {
        "frequency_clk",
        "frequency_fields",
        "pattern_mining",
        "graph_matching",
    }
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_risk_command_needs_a_secret(population, monkeypatch):
    monkeypatch.delenv("PPRL_SECRET", raising=False)
    result = CliRunner().invoke(main, ["risk", "--protocol", str(EXAMPLE_PROTOCOL), str(population / "msd.csv")])
    assert result.exit_code != 0
    assert "no secret" in result.output


@pytest.mark.slow
def test_risk_command_measures_quality(population, monkeypatch):
    monkeypatch.setenv("PPRL_SECRET", SECRET.hex())
    result = CliRunner().invoke(
        main,
        [
            "risk",
            "--protocol",
            str(EXAMPLE_PROTOCOL),
            str(population / "msd.csv"),
            "--sample",
            "200",
            "--quality-people",
            "400",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    f1 = {option["hardening"]: option["f1"] for option in report["options"]}
    # The realistic synth holds households (a surname and an address shared): unhardened
    # encodings of 400 people link at about 0.9, not 0.99.
    assert 0.8 < f1["none"] <= 1.0, "unhardened encodings of 400 synthetic people link"
    assert all(0.0 <= value <= 1.0 for value in f1.values())
    assert report["recommended"] is None or report["recommended"] in f1
