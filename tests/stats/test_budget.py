"""Privacy losses, the ledger file, and the rule that the budget is never overspent."""

import copy
import json
import multiprocessing
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkage.errors import BudgetExceeded, InputError, PprlError, ProtocolError
from linkage.protocol import load_protocol, parse_protocol
from stats.budget import Budget, FileLedger, Loss, budget_of, check_affordable
from tests.helpers import EXAMPLE_PROTOCOL


def test_losses_add_exactly_so_a_hundred_hundredths_spend_the_whole_budget():
    total = Loss.of(rho=1)
    spent = Loss.of(rho=0.01)
    for _ in range(99):
        spent = spent + Loss.of(rho=0.01)
    assert spent.amount == Fraction(1)
    assert spent.fits_within(total)
    assert not (spent + Loss.of(rho="1e-12")).fits_within(total)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "exactly one of rho"),
        ({"rho": 0.1, "epsilon": 1}, "exactly one of rho"),
        ({"rho": 0}, "must be above 0"),
        ({"rho": "lots"}, "must be a number"),
        ({"rho": 0.1, "delta": 1e-6}, "delta goes with epsilon"),
        ({"epsilon": 1, "delta": 1}, "delta must be at least 0 and below 1"),
        ({"sigma": 1}, "unknown privacy loss key"),
    ],
)
def test_bad_losses_are_refused_with_the_fix(values, message):
    with pytest.raises(InputError, match=message):
        Loss.from_json(values)


def test_a_cost_in_the_wrong_measure_is_refused(protocol):
    budget = Budget.from_entries(budget_of(protocol), [])
    with pytest.raises(InputError, match="budget is in rho, so give the query's cost as --rho"):
        check_affordable(budget, Loss.of(epsilon=0.1))


def test_the_file_ledger_records_releases_and_refuses_overspending(protocol, tmp_path):
    ledger = FileLedger(tmp_path / "study.ledger", protocol)
    assert ledger.budget().remaining == Loss.of(rho=1)
    with ledger.spend("ana", "count --rho 0.6", Loss.of(rho=0.6)) as receipt:
        receipt.mechanism = "test"
    before = (tmp_path / "study.ledger").read_bytes()
    with pytest.raises(BudgetExceeded, match=r"costs ρ=0.5 but only ρ=0.4 of the project's ρ=1 is left"):
        with ledger.spend("ana", "count --rho 0.5", Loss.of(rho=0.5)):
            pytest.fail("the body must not run when the budget cannot pay")
    with pytest.raises(RuntimeError):
        with ledger.spend("ana", "count --rho 0.1", Loss.of(rho=0.1)):
            raise RuntimeError("the release failed")
    assert (tmp_path / "study.ledger").read_bytes() == before, "refusals and failures leave the ledger unchanged"
    budget = ledger.budget()
    assert [(e.number, e.who, e.query, e.mechanism) for e in budget.entries] == [(1, "ana", "count --rho 0.6", "test")]
    assert budget.remaining == Loss.of(rho=0.4)
    assert Budget.from_json(json.loads(json.dumps(budget.to_json()))) == budget


def test_a_ledger_of_another_protocol_or_a_damaged_one_is_refused(protocol, tmp_path):
    path = tmp_path / "study.ledger"
    path.write_text('{"pprl_ledger": 1, "protocol": "other", "total": {"rho": 1.0}}\n')
    with pytest.raises(InputError, match="is the ledger of protocol 'other'"):
        FileLedger(path, protocol).budget()
    path.write_text('{"pprl_ledger": 1, "protocol": "nz-shared-clients-2026", "total": {"rho": 1.0}}\n{"number": 1,\n')
    with pytest.raises(InputError, match="line 2 is damaged"):
        FileLedger(path, protocol).budget()
    path.write_text("client_id,name\n")
    with pytest.raises(InputError, match="is not a pprl ledger"):
        FileLedger(path, protocol).budget()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(costs=st.lists(st.decimals(min_value="0.001", max_value="0.6", places=3), max_size=25))
def test_no_sequence_of_queries_overspends_and_refusals_change_nothing(protocol, tmp_path_factory, costs):
    ledger = FileLedger(tmp_path_factory.mktemp("ledger") / "l", protocol)
    accepted = Fraction(0)
    for cost in costs:
        before = ledger.budget()
        try:
            with ledger.spend("p", "q", Loss.of(rho=str(cost))):
                pass
            accepted += Fraction(str(cost))
        except BudgetExceeded:
            assert ledger.budget() == before
            assert before.spent.amount + Fraction(str(cost)) > 1
    assert ledger.budget().spent.amount == accepted <= 1


def _spend_many(args):
    path, protocol_path = args
    ledger = FileLedger(path, load_protocol(protocol_path))
    done = 0
    for _ in range(15):
        try:
            with ledger.spend("worker", "count --rho 0.03", Loss.of(rho=0.03)):
                done += 1
        except BudgetExceeded:
            pass
    return done


def test_processes_sharing_a_ledger_file_never_overspend_together(tmp_path):
    path = tmp_path / "shared.ledger"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        done = pool.map(_spend_many, [(path, EXAMPLE_PROTOCOL)] * 4)
    assert sum(done) == 33, "0.03 fits 33 times in 1, whoever asks"
    budget = FileLedger(path, load_protocol(EXAMPLE_PROTOCOL)).budget()
    assert len(budget.entries) == 33 and budget.spent.amount == Fraction(99, 100)
    assert [e.number for e in budget.entries] == list(range(1, 34))


def test_a_protocol_may_fix_epsilon_with_or_without_delta_but_not_with_rho(protocol):
    for budget, expected in (
        ({"epsilon": 3}, Loss.of(epsilon=3)),
        ({"epsilon": 3, "delta": 1e-7}, Loss.of(epsilon=3, delta=1e-7)),
    ):
        document = copy.deepcopy(protocol.document)
        document["releases"]["budget"] = budget
        assert budget_of(parse_protocol(document)) == expected
    document["releases"]["budget"] = {"rho": 1, "epsilon": 1}
    with pytest.raises(ProtocolError, match="budget"):
        parse_protocol(document)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rho": "1e-6000000"}, "rho must be a number such as 0.05"),
        ({"rho": "9" * 5000}, "rho must be a number such as 0.05"),
        ({"rho": 10**5000}, "rho must be at most"),
        ({"rho": float("inf")}, "rho must be a finite number"),
        ({"rho": float("nan")}, "rho must be a finite number"),
        ({"rho": "1e-25"}, "is outside what a release can spend"),
        ({"rho": "1e12"}, "is outside what a release can spend"),
        ({"rho": True}, "rho must be a number"),
        ({"rho": [0.1]}, "rho must be a number"),
        ({"epsilon": 1, "delta": "1e-999"}, "delta must be 0 or at least 1e-30"),
    ],
)
def test_absurd_costs_are_refused_before_any_exact_arithmetic(values, message):
    with pytest.raises(InputError, match=message):
        Loss.from_json(values)


@given(text=st.text(max_size=60))
def test_any_text_as_a_cost_is_a_loss_or_an_input_error(text):
    try:
        loss = Loss.from_json({"rho": text})
    except InputError:
        return
    assert 0 < loss.amount <= 10**9


@pytest.mark.parametrize("rho", [1e-6, 0.001, 0.05, 0.4, 1.0, 10.0])
def test_rho_is_shown_as_epsilon_by_opendps_conversion_within_the_textbook_bound(rho):
    import math

    from stats.budget import epsilon_of_rho

    epsilon = epsilon_of_rho(rho, 1e-6)
    textbook = rho + 2 * math.sqrt(rho * math.log(1e6))  # Bun and Steinke 2016, Proposition 1.3
    assert rho < epsilon <= textbook * 1.001


def test_the_budget_shows_every_rho_spend_as_epsilon_delta_at_the_protocols_delta(protocol, tmp_path):
    from stats.render import format_budget

    document = copy.deepcopy(protocol.document)
    document["releases"]["equivalent_delta"] = 1e-8
    ledger = FileLedger(tmp_path / "l", parse_protocol(document))
    with ledger.spend("ana", "count --rho 0.3", Loss.of(rho=0.3)):
        pass
    budget = ledger.budget()
    assert budget.equivalent_delta == 1e-8
    shown = budget.to_json()
    assert shown["equivalent_delta"] == 1e-8 and shown["releases"][0]["approx_dp"]["delta"] == 1e-8
    assert shown["spent_approx_dp"]["epsilon"] == shown["releases"][0]["approx_dp"]["epsilon"] > 0.3
    assert Budget.from_json(json.loads(json.dumps(shown))) == budget
    text = format_budget(budget)
    assert "as (ε, δ) at δ=1e-08: the total is ε=" in text and "≈ ε alone" in text


def spend_file(ledger, rho):
    with ledger.spend("ana", f"count --rho {rho}", Loss.of(rho=rho)) as receipt:
        receipt.mechanism = "OpenDP discrete Gaussian"


@pytest.mark.parametrize(
    "damage",
    [
        lambda lines: [lines[0], lines[1], lines[2].replace("count", "sum"), lines[3]],
        lambda lines: [lines[0], lines[1], lines[3]],
        lambda lines: lines[:3],
        lambda lines: [lines[0], lines[2], lines[1], lines[3]],
    ],
    ids=["edit", "delete-middle", "delete-last", "reorder"],
)
def test_a_file_ledger_edited_or_cut_releases_nothing_more(protocol, tmp_path, damage):
    path = tmp_path / "study.ledger"
    ledger = FileLedger(path, protocol)
    for _ in range(3):
        spend_file(ledger, 0.3)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(damage(lines)) + "\n")
    with pytest.raises(PprlError, match="restored from a backup") as caught:
        spend_file(ledger, 0.05)
    assert caught.value.code == "tampered"
    with pytest.raises(PprlError, match="study.ledger"):
        ledger.budget()


def test_a_file_ledger_of_an_older_pprl_is_chained_from_its_next_release(protocol, tmp_path):
    path = tmp_path / "old.ledger"
    ledger = FileLedger(path, protocol)
    spend_file(ledger, 0.2)
    spend_file(ledger, 0.2)
    old = [json.loads(line) for line in path.read_text().splitlines()]
    for entry in old[1:]:
        entry.pop("prev_sha256"), entry.pop("sha256")
    path.write_text("\n".join(json.dumps(entry) for entry in old) + "\n")
    ledger.head_path.unlink()
    assert ledger.budget().remaining == Loss.of(rho=0.6), "an unchained ledger still reads"
    spend_file(ledger, 0.2)
    assert ledger.budget().remaining == Loss.of(rho=0.4)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2], lines[3]]) + "\n")
    with pytest.raises(PprlError, match="cannot be trusted"):
        ledger.budget()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
