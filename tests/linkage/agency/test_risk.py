"""Each attack succeeds on a weak encoding (so the check can fail), and the risk check runs end to end."""

import numpy as np
import pytest

from linkage.agency.attacks import frequency_attack, graph_matching_attack, identify
from linkage.agency.risk import attack_encodings, build_reference, encode_values, read_identifiers, recommend
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import Hardening, with_hardening
from tests.helpers import SECRET

SALT = ("date_of_birth", "year")


@pytest.fixture(scope="module")
def population(tmp_path_factory, protocol):
    folder = tmp_path_factory.mktemp("risk") / "synth"
    synthesise_population(protocol, 1200, 5, folder)
    return folder


@pytest.fixture(scope="module")
def attacked(population, protocol, tmp_path_factory):
    _, values = read_identifiers(protocol, "msd", population / "msd.csv", limit=500)
    reference, truth = build_reference(protocol, values, None, None, 1.0, 3, tmp_path_factory.mktemp("ref"))
    return values, reference, truth


def run(protocol, hardening, attacked):
    values, reference, truth = attacked
    variant = with_hardening(protocol, hardening)
    records = encode_values(variant, SECRET, values)
    return attack_encodings(variant, records, values, reference, truth, attacker_secret=bytes(32))


def test_reference_is_shuffled_and_truth_points_at_the_same_person(attacked):
    values, reference, truth = attacked
    assert sorted(map(repr, reference)) == sorted(map(repr, values))
    assert (truth >= 0).all()
    assert all(reference[truth[i]] == values[i] for i in range(len(values)))
    assert (truth != np.arange(len(values))).any()


def test_unhardened_encodings_fall_to_the_attacks(protocol, attacked):
    results = run(protocol, Hardening(), attacked)
    assert results["graph_matching"].reidentified > 0.9
    assert results["frequency_fields"].reidentified > 0.01
    assert results["frequency_fields"].detail["city"] > 0.5  # a common city is its most frequent filter
    # The result is the variant (CLK or field filters) that re-identified most; under the example
    # protocol with similarity rules (another fingerprint, so other keys) the CLK variant
    # re-identifies one record of 500 and is reported with 0.2% of values, while the field filters
    # give up the city of 31% (and the attack recovers 27-39% under six other secrets): count
    # what either variant recovered.
    mining = results["pattern_mining"]
    per_field = [v for k, v in mining.detail.items() if k.startswith("fields ") and not k.endswith(" patterns")]
    assert max(mining.values_recovered, *per_field) > 0.1
    assert results["frequency_clk"].reidentified == 0.0  # every record's CLK is unique


def test_salt_and_diffusion_resist_them(protocol, attacked):
    results = run(protocol, Hardening(salt=SALT, balance=True, diffusion=3), attacked)
    assert results["frequency_fields"].reidentified < 0.01
    assert results["pattern_mining"].values_recovered < 0.05
    assert results["graph_matching"].reidentified < 0.2


def test_frequency_attack_recovers_repeated_values():
    # A weak encoding: an unkeyed, unsalted one-to-one code of each value.
    values = [f"name{i}" for i in range(8) for _ in range(12 - i)]
    filters = np.array([[int(v[4:]) + 1] for v in values], dtype=np.uint8)
    keys = [(v, "") for v in values]
    result = frequency_attack(
        [filters], [keys], [(v,) for v in values], [(v,) for v in values], np.arange(len(values)), names=["name"]
    )
    assert result.detail["name"] == 1.0
    assert result.values_recovered == 1.0
    assert result.reidentified == 0.0  # many people share each name: none is singled out


def test_identify_needs_a_single_matching_person():
    reference = [("ana", "x"), ("ana", "y"), ("bo", "y")]
    assert identify([("ana", None)], reference, np.array([0])) == (0, 0)
    assert identify([("ana", "y")], reference, np.array([1])) == (1, 1)
    assert identify([("bo", None)], reference, np.array([0])) == (1, 0)


def test_graph_matching_on_an_identical_graph():
    # A weak encoding: records share parts (as people share names and towns), and the
    # attacker's re-encoding reproduces every similarity.
    rng = np.random.default_rng(2)
    parts = rng.random((3, 30, 256)) < 0.08
    choice = rng.integers(0, 30, size=(300, 3))
    base = parts[0][choice[:, 0]] | parts[1][choice[:, 1]] | parts[2][choice[:, 2]]
    base |= rng.random((300, 256)) < 0.03  # and details of their own
    order = rng.permutation(300)
    result = graph_matching_attack(np.packbits(base, axis=1), np.packbits(base[order], axis=1), np.argsort(order))
    assert result.reidentified > 0.9


def test_recommend_keeps_quality_within_the_goal():
    from linkage.agency.attacks import AttackResult
    from linkage.agency.risk import OptionRisk

    def option(label, hardening, share, f1):
        return OptionRisk(label, hardening, {"a": AttackResult("a", share, share, share)}, f1)

    none = option("none", Hardening(), 0.5, 0.99)
    costly = option("salt", Hardening(salt=SALT), 0.0, 0.95)
    cheap = option("diffusion3", Hardening(diffusion=3), 0.005, 0.988)
    assert recommend([none, costly, cheap]) == "diffusion3"
    assert recommend([none, costly]) is None
