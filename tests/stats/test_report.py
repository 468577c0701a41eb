"""Reports: the spec is checked whole, the budget is checked before spending, every figure has its interval."""

import re
from datetime import UTC, datetime

import pytest
import yaml

import stats.dp
from linkage.errors import BudgetExceeded, InputError
from stats.budget import FileLedger, Loss
from stats.dp import answer_queries, answer_query
from stats.report import build_report, parse_report_spec, read_report_spec
from tests.helpers import EXAMPLE_REPORT, example_report


def test_the_example_spec_shares_its_spend_between_the_sections(protocol):
    spec = example_report(protocol)
    assert spec.spend == Loss.of(rho=0.4)
    assert spec.cost == spec.spend, "the example's shares add up to 1"
    assert [s.query.kind for s in spec.sections][:2] == ["overlap", "count"]
    assert spec.sections[0].query.cost == Loss.of(rho=0.1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("spend"), "missing 'spend'"),
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (lambda d: d["sections"][0].update(share=0.9), "the shares add up to 1.65; they may add up to at most 1"),
        (lambda d: d["sections"][1].update(query="count --rho 0.1"), "section 2: leave the cost out of the query"),
        (
            lambda d: d["sections"][2].update(query="count --by city"),
            "section 3 ('count --by city'): unknown attribute",
        ),
        (lambda d: d["sections"][0].update(share=0), "section 1: share must be above 0"),
        (lambda d: d.update(sections=[]), "sections must be a non-empty list"),
    ],
)
def test_bad_specs_are_refused_whole(protocol, change, message):
    document = yaml.safe_load(EXAMPLE_REPORT.read_text())
    change(document)
    with pytest.raises(InputError, match=re.escape(message)):
        parse_report_spec(protocol, document)


def test_a_malformed_spec_file_is_named(protocol, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("title: [unclosed\n")
    with pytest.raises(InputError, match="not a YAML report spec"):
        read_report_spec(protocol, path)


def make(protocol, table, ledger, plan=None):
    def plan_here(query):
        return answer_query(table, query, protocol, ledger.spend, "ministry", dry_run=True)

    def release(queries, label):
        return answer_queries(table, queries, protocol, ledger.spend, "ministry", label)

    return build_report(
        protocol,
        example_report(protocol),
        plan=plan or plan_here,
        release=release,
        budget=ledger.budget,
        now=datetime(2026, 10, 1, tzinfo=UTC),
    )


def test_the_report_is_one_page_built_from_dp_answers_with_intervals(protocol, table, tmp_path):
    ledger = FileLedger(tmp_path / "l", protocol)
    page = make(protocol, table, ledger)
    assert page.startswith("<!DOCTYPE html>") and page.count("<section") == 3 + 7
    assert not re.search(r"""(src|href)=["']?https?:""", page), "nothing is fetched when the report is opened"
    assert page.count('src="data:image/png;base64,') == 6, "every section but the quantile has a chart"
    assert "What the ± means" in page and "nz-shared-clients-2026" in page
    assert "can change at most 9 rows of the table these figures count" in page, "the unit and its bound"
    assert "the matching model, fitted once on the agencies' records, is not itself protected" in page
    for row in re.findall(r"<tr>(.*?)</tr>", page):
        cells = re.findall(r'<td class="num">(.*?)</td><td>(.*?)</td>', row)
        for value, interval in cells:
            shown = interval.startswith("±") or re.fullmatch(r"[\d.,%]+ to [\d.,%]+", interval)
            # The noise is unseeded: a small group's noisy count may fall under one person.
            assert shown or value.startswith(("suppressed", "withheld", "no one", "too few people")), row
    budget = ledger.budget()
    assert len(budget.entries) == 1 and budget.spent == Loss.of(rho=0.4)
    assert budget.entries[0].query.startswith("report 'Clients shared by")
    assert budget.entries[0].query.count(";") == 6, "the one release lists all seven queries"
    assert "spent by this report</td><td>ρ=0.4" in page and "left</td><td>ρ=0.6" in page


def test_a_report_the_budget_cannot_pay_for_spends_nothing(protocol, table, tmp_path):
    ledger = FileLedger(tmp_path / "l", protocol)
    with ledger.spend("analyst", "earlier", Loss.of(rho=0.7)):
        pass
    before = (tmp_path / "l").read_text()
    with pytest.raises(BudgetExceeded, match="the report would spend ρ=0.4: .* only ρ=0.3 .* is left"):
        make(protocol, table, ledger)
    assert (tmp_path / "l").read_text() == before


def test_a_release_between_the_check_and_the_report_leaves_the_report_unspent(protocol, table, tmp_path):
    ledger = FileLedger(tmp_path / "l", protocol)

    def plan_while_another_analyst_spends(query):
        if not ledger.budget().entries:
            with ledger.spend("another analyst", "count --rho 0.7", Loss.of(rho=0.7)):
                pass
        return answer_query(table, query, protocol, ledger.spend, "ministry", dry_run=True)

    with pytest.raises(BudgetExceeded, match="the report would spend ρ=0.4: .* only ρ=0.3 .* is left"):
        make(protocol, table, ledger, plan=plan_while_another_analyst_spends)
    assert [entry.who for entry in ledger.budget().entries] == ["another analyst"]


def test_a_section_that_fails_to_release_records_nothing(protocol, table, tmp_path, monkeypatch):
    ledger = FileLedger(tmp_path / "l", protocol)
    prepared = []

    def failing_second(*args):
        prepared.append(args)
        if len(prepared) == 2:
            raise InputError("OpenDP cannot make this query private: (a test)")
        return real_prepare(*args)

    real_prepare = stats.dp.prepare
    monkeypatch.setattr(stats.dp, "prepare", failing_second)
    queries = [section.query for section in example_report(protocol).sections]
    with pytest.raises(InputError, match="a test"):
        answer_queries(table, queries, protocol, ledger.spend, "ministry", "report")
    assert ledger.budget().entries == ()


def test_a_report_under_a_suppression_rule_gives_no_suppressed_cell_away(protocol, table, tmp_path):
    import copy

    from linkage.protocol import parse_protocol

    document = copy.deepcopy(protocol.document)
    document["releases"]["output_rules"] = {"suppress_below": 150}
    # A person is nine rows here (three agencies): a large spend keeps the noise far from the rule,
    # so that which cells fall under it does not depend on the draw.
    document["releases"]["budget"] = {"rho": 100.0}
    strict = parse_protocol(document)
    spec = yaml.safe_load(EXAMPLE_REPORT.read_text())
    spec["spend"] = {"rho": 80}
    generous = parse_report_spec(strict, spec)
    ledger = FileLedger(tmp_path / "l", strict)
    page = build_report(
        strict,
        generous,
        plan=lambda query: answer_query(table, query, strict, ledger.spend, "ministry", dry_run=True),
        release=lambda queries, label: answer_queries(table, queries, strict, ledger.spend, "ministry", label),
        budget=ledger.budget,
        now=datetime(2026, 10, 1, tzinfo=UTC),
    )
    assert "suppressed: below 150" in page, "the smallest overlap cells are under the rule"
    assert "withheld: it would give a suppressed cell away" in page
    assert "known to any agency: <b>withheld" in page, "the total would give the suppressed cell away"
    assert "(≈ ε=" in page, "spends are shown as (epsilon, delta) too"


def test_a_count_whose_interval_is_not_centred_is_printed_as_a_range():
    # A count shown under a suppression rule (or a small one, whose interval starts at 0) has an
    # interval that is not value +- half-width; the report printed "± 20" for 0 to 27.
    from stats.answers import Answer, Cell
    from stats.report import _figure_value

    def figure(cell: Cell) -> tuple[str, str]:
        answer = Answer("count", "count", "count", (), (cell,), "m", Loss.of(rho=0.1), "i")
        return _figure_value(cell, answer, percent=False)

    assert figure(Cell((), 20, 20.0, "", 0.0, 27.0)) == ("20", "0 to 27")
    assert figure(Cell((), 400, 13.0, "", 387.0, 413.0)) == ("400", "± 13")
