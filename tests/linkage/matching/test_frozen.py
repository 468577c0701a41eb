"""A frozen model: fitted once, written, read back, and deciding each pair from its two records alone."""

import csv
import json

import numpy as np
import pytest

from linkage.agency.encode import encode_csv
from linkage.errors import InputError, MismatchError
from linkage.matching.engine import link, load_inputs, score_candidates
from linkage.matching.frozen import FrozenModel, read_model, write_model
from linkage.protocol import parse_protocol
from linkage.token_files import read_keymap
from tests.helpers import SECRET, encoded_population, example_document


@pytest.fixture(scope="module")
def small_blocks(tmp_path_factory):
    """Three encoded agencies under the example protocol with blocks over 4 pairs skipped."""
    document = example_document()
    document["matching"]["max_block_pairs"] = 4
    protocol = parse_protocol(document)
    root = tmp_path_factory.mktemp("frozen")
    data, outs = encoded_population(protocol, 400, 11, root)
    return protocol, data, outs, root


def test_a_frozen_model_round_trips_and_links_as_the_run_that_froze_it(small_blocks, tmp_path):
    protocol, _, outs, _ = small_blocks
    frozen = link(protocol, load_inputs(protocol, outs), freeze=True)
    assert frozen.model is not None and frozen.stable is not None
    assert any(len(keys) for pair in frozen.model.oversized.values() for keys in pair), "some blocks were skipped"
    assert not frozen.model.model.term_frequencies
    write_model(frozen.model, tmp_path / "model.json")
    model = read_model(tmp_path / "model.json", protocol)
    assert model.to_json() == frozen.model.to_json()
    again = link(protocol, load_inputs(protocol, list(reversed(outs))), model=model)
    assert again.threshold == frozen.threshold and again.pairs_compared == frozen.pairs_compared

    def by_party(result, entities):
        return sorted(tuple(sorted((result.parties[p], r) for p, r in e.records)) for e in entities)

    assert by_party(again, again.entities) == by_party(frozen, frozen.entities)
    assert by_party(again, again.stable.entities) == by_party(frozen, frozen.stable.entities)


def client_pairs(protocol, outs, **options):
    """Every kept candidate's (client a, client b) -> match probability."""
    encodings = load_inputs(protocol, outs)
    scored = score_candidates(protocol, encodings, **options)
    clients = [
        [read_keymap(out / "keymap.csv")[token.tobytes().hex()] for token in item.records["token"]]
        for out, item in zip(outs, encodings, strict=True)
    ]
    return {
        (clients[a][ra], clients[b][rb]): p
        for a, b, ra, rb, p in zip(
            scored.party_a.tolist(),
            scored.party_b.tolist(),
            scored.record_a.tolist(),
            scored.record_b.tolist(),
            scored.probability.tolist(),
            strict=True,
        )
    }


@pytest.mark.slow
def test_under_a_frozen_model_a_pair_is_decided_by_its_two_records_alone(small_blocks, tmp_path):
    protocol, data, outs, _ = small_blocks
    model = link(protocol, load_inputs(protocol, outs), freeze=True).model
    # A fifth of msd's clients leave; msd encodes again.
    with (data / "msd.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    fewer = tmp_path / "msd.csv"
    with fewer.open("w", newline="") as handle:
        csv.writer(handle).writerows([rows[0]] + [row for number, row in enumerate(rows) if number % 5])
    encode_csv(protocol, "msd", SECRET, fewer, tmp_path / "msd", workers=1)
    reduced = [tmp_path / "msd", *outs[1:]]
    left = {row[0] for number, row in enumerate(rows) if number and number % 5}

    def kept(pairs):
        return {pair: p for pair, p in pairs.items() if not pair[0].startswith("MSD") or pair[0] in left}

    everyone = client_pairs(protocol, outs, model=model)
    assert client_pairs(protocol, reduced, model=model) == kept(everyone)
    refitted = client_pairs(protocol, reduced)
    assert refitted != kept(client_pairs(protocol, outs)), "a model fitted per run moves other people's pairs"


def test_a_model_for_another_protocol_or_a_damaged_file_is_refused(small_blocks, tmp_path):
    small, _, outs, _ = small_blocks
    model = link(small, load_inputs(small, outs[:2]), freeze=True).model
    document = model.to_json()
    assert FrozenModel.from_json(document, small).to_json() == document
    other = example_document()
    other["identifiers"]["fields"][0]["clk_bits_per_token"] = 21
    with pytest.raises(MismatchError, match="fitted under protocol fingerprint"):
        FrozenModel.from_json(document, parse_protocol(other))
    grouped = example_document()
    grouped["matching"]["comparison_groups"] = []
    with pytest.raises(MismatchError, match="comparison_groups changed"):
        FrozenModel.from_json(document, parse_protocol(grouped))
    with pytest.raises(InputError, match=r"unknown keys \['extra'\]"):
        FrozenModel.from_json({**document, "extra": 1}, small)
    legacy = {key: value for key, value in document.items() if key != "matching"}
    assert FrozenModel.from_json(legacy, small).to_json() == legacy, "a model written before is read unchecked"
    with pytest.raises(InputError, match="threshold outside"):
        FrozenModel.from_json({**document, "threshold": 1.5}, small)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="is not a JSON model file"):
        read_model(tmp_path / "model.json", small)
    (tmp_path / "model.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="is not a pprl frozen model"):
        read_model(tmp_path / "model.json", small)


def test_a_frozen_model_links_parties_it_was_not_fitted_on_with_the_overall_prior(small_blocks):
    protocol, _, outs, _ = small_blocks
    model = link(protocol, load_inputs(protocol, outs[:2]), freeze=True).model
    assert set(model.priors) == {("msd", "police")}
    result = link(protocol, load_inputs(protocol, outs), model=model)
    assert model.priors_for(result.parties)[(0, 2)] == model.model.prior
    assert any(len({p for p, _ in e.records}) == 3 for e in result.stable.entities)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_on_dask_a_frozen_model_skips_the_same_blocks_as_on_the_pool(small_blocks, dask_cluster):
    protocol, _, outs, _ = small_blocks
    model = link(protocol, load_inputs(protocol, outs), freeze=True).model
    pooled = link(protocol, load_inputs(protocol, outs), workers=2, model=model)
    on_dask = link(protocol, load_inputs(protocol, outs), dask=dask_cluster.scheduler_address, model=model)
    assert on_dask.pairs_compared == pooled.pairs_compared
    assert on_dask.stable.entities == pooled.stable.entities and on_dask.entities == pooled.entities
    assert np.isclose(on_dask.threshold, pooled.threshold)


@pytest.mark.parametrize(
    "change",
    [
        lambda matching: matching.update(reject_when_different=[["given_name", "date_of_birth"]]),
        lambda matching: matching.update(dedupe_threshold=0.5),
        lambda matching: matching.update(threshold=0.9),
    ],
)
def test_a_model_is_not_reused_under_other_matching_settings(small_blocks, change):
    # The settings are not in the fingerprint (they change no encoding), so a state or a model
    # fitted under one set of household rules was reused under another: a batch was then decided
    # by rules the pairs before it were not, and no longer equalled a link from scratch.
    small, _, outs, _ = small_blocks
    document = link(small, load_inputs(small, outs[:2]), freeze=True).model.to_json()
    changed = json.loads(json.dumps(small.document))
    change(changed["matching"])
    other = parse_protocol(changed)
    assert other.fingerprint == small.fingerprint
    with pytest.raises(MismatchError, match="fitted under other matching settings"):
        FrozenModel.from_json(document, other)
