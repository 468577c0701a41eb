"""Why true pairs are missed: every true cross-party pair of a linkage run, by cause.

    PYTHONPATH=. .venv/bin/python -m bench.recall_causes [--people 20000] [--seed 7] [--febrl]
                                                         [--variant both|plain|hardened] [--show 20]

Links the realistic synth (or FEBRL4 mapped onto the example's columns) under the example
protocol, unhardened and hardened, as `bench/quality.py` does, then puts every true pair
of records of different parties in one of:
  * linked: in one entity;
  * no candidate: the two records share no usable block key;
  * rejected: "different" on every field of `reject_when_different`;
  * below threshold: scored, match probability under the run's threshold;
  * lost in the solver: above the threshold, but a record went to a stronger pair.
Each missed pair is described by its comparison levels and by what differs in its
plaintext (given name, surname, date, address), read from the synth's CSV files.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from linkage.agency.encode import encode_csv
from linkage.evaluation.blocking import _agreement, true_pair_indices
from linkage.evaluation.febrl import febrl_protocol, write_febrl4
from linkage.evaluation.scores import read_truth, record_people
from linkage.evaluation.synth import synthesise_population
from linkage.matching.block import BlockIndex, rule_spans
from linkage.matching.compare import (
    PartyFeatures,
    compare_and_measure,
    comparisons_for,
    feature_levels,
    features_for,
    rejected,
)
from linkage.matching.engine import load_inputs, score_candidates, select_and_solve
from linkage.matching.link_state import LinkState
from linkage.matching.passes import weigh_pairs
from linkage.matching.tasks import frequencies_of
from linkage.protocol import Hardening, Protocol, load_protocol, with_hardening
from linkage.token_files import read_keymap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())


def _date(text: str) -> tuple[int, int, int] | None:
    text = text.strip()
    if not text:
        return None
    if "-" in text:
        y, m, d = text.split("-")
    else:
        d, m, y = text.split("/")
    return int(y), int(m), int(d)


def plaintext_tags(row_a: dict[str, str], row_b: dict[str, str]) -> dict[str, str]:
    """What differs between two records' plaintext, one tag per field."""
    tags = {}
    ga, gb = _norm(row_a["given_name"]), _norm(row_b["given_name"])
    sa, sb = _norm(row_a["surname"]), _norm(row_b["surname"])
    if not ga or not gb:
        tags["given"] = "missing"
    elif ga == gb:
        tags["given"] = "same"
    elif ga == sb or gb == sa:
        tags["given"] = "swapped"
    elif ga.split()[0] == gb.split()[0]:
        tags["given"] = "middle"
    else:
        tags["given"] = "other"
    if not sa or not sb:
        tags["surname"] = "missing"
    elif sa == sb:
        tags["surname"] = "same"
    elif ga == sb or gb == sa:
        tags["surname"] = "swapped"
    elif set(sa.split()) & set(sb.split()):
        tags["surname"] = "part"
    else:
        tags["surname"] = "other"
    da, db = _date(row_a["date_of_birth"]), _date(row_b["date_of_birth"])
    if da is None or db is None:
        tags["dob"] = "missing"
    elif da == db:
        tags["dob"] = "same"
    elif (da[1], da[2]) == (1, 1) or (db[1], db[2]) == (1, 1):
        tags["dob"] = "jan1" + ("" if da[0] == db[0] else f" year{db[0] - da[0]:+d}")
    elif da[0] != db[0] and da[1:] == db[1:]:
        tags["dob"] = "year" + (f"{db[0] - da[0]:+d}" if abs(db[0] - da[0]) == 1 else "")
    elif da[0] == db[0] and da[1] == db[2] and da[2] == db[1]:
        tags["dob"] = "swap"
    elif da[0] == db[0]:
        tags["dob"] = "day/month"
    else:
        tags["dob"] = "other"
    aa, ab = _norm(row_a["address"]), _norm(row_b["address"])
    tags["address"] = "missing" if not aa or not ab else "same" if aa == ab else "other"
    return tags


def primary_reason(tags: dict[str, str]) -> str:
    """One coarse reason per missed pair, the first that applies, from its plaintext tags."""
    dob = tags["dob"]
    if tags["given"] == "swapped":
        return "given name and surname swapped"
    if dob == "missing":
        return "date missing on one side"
    if dob.startswith(("year", "other")) or (dob.startswith("jan1") and "year" in dob):
        return "date: year differs"
    if dob == "jan1":
        return "date: 1 January placeholder, same year"
    if dob in ("swap", "day/month"):
        return "date: day or month differs"
    if tags["given"] in ("other", "middle", "missing"):
        return "given name differs (date equal)"
    if tags["surname"] in ("other", "part", "missing"):
        return "surname differs (date, given equal)"
    return "address only, or nothing in plaintext"


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["client_id"]: row for row in csv.DictReader(handle)}


def _frequencies(records: list[np.ndarray], comparisons: tuple) -> list[list[np.ndarray]]:
    return frequencies_of({"records": records}, comparisons)


def diagnose(protocol: Protocol, data: Path, work: Path, label: str, show: int) -> None:
    outs = []
    for party in protocol.parties:
        out = work / party.id
        encode_csv(protocol, party.id, SECRET, data / f"{party.id}.csv", out, workers=1)
        outs.append(out)
    encodings = load_inputs(protocol, outs)
    scored = score_candidates(protocol, encodings, workers=1)
    threshold = scored.threshold()
    entities, _ = select_and_solve(scored, threshold)
    keymaps = {p.id: read_keymap(out / "keymap.csv") for p, out in zip(protocol.parties, outs, strict=True)}
    truth = read_truth(data / "truth.csv")
    people = record_people(encodings, keymaps, truth)
    raw = {p.id: _rows(data / f"{p.id}.csv") for p in protocol.parties}
    clients = [
        [keymaps[item.header.party][t.tobytes().hex()] for t in np.ascontiguousarray(item.records["token"])]
        for item in encodings
    ]
    entity_of: dict[tuple[int, int], int] = {}
    for number, entity in enumerate(entities):
        for record in entity.records:
            entity_of[record] = number
    comparisons = comparisons_for(protocol)
    features = features_for(comparisons, protocol.comparison_groups)
    records = [np.asarray(item.records) for item in encodings]
    party_features = [PartyFeatures.from_records(r, comparisons) for r in records]
    frequencies = _frequencies(records, comparisons)
    spans = rule_spans(rule.columns for rule in protocol.blocking)
    causes: Counter[str] = Counter()
    by_tags: Counter[tuple[str, str]] = Counter()
    by_levels: Counter[tuple[str, str]] = Counter()
    by_reason: Counter[tuple[str, str]] = Counter()
    examples: list[str] = []
    level_weights = scored.model.level_weights()
    print(f"\n== {label}: threshold {threshold:.4f}, priors {[f'{p:.2e}' for p in scored.priors.values()]}")
    for feature, weights in zip(features, level_weights, strict=True):
        print(f"  {feature.name:<24} {' '.join(f'{w:6.1f}' for w in weights)}")
    # Kept pairs of the solver: for each record, the strength of its kept pair.
    kept_strength: dict[tuple[int, int], float] = {}
    accepted = scored.probability >= threshold
    for pa, pb, ra, rb, w in zip(
        scored.party_a[accepted].tolist(),
        scored.party_b[accepted].tolist(),
        scored.record_a[accepted].tolist(),
        scored.record_b[accepted].tolist(),
        scored.weight[accepted].tolist(),
        strict=True,
    ):
        if entity_of.get((pa, ra), -1) == entity_of.get((pb, rb), -2):
            for key in ((pa, ra), (pb, rb)):
                kept_strength[key] = max(kept_strength.get(key, -1e9), w)
    all_levels = []
    for a, b in itertools.combinations(range(len(encodings)), 2):
        index_a, index_b = true_pair_indices(people[a], people[b])
        keys_a = np.asarray(encodings[a].records["block"]).reshape(len(records[a]), -1)
        keys_b = np.asarray(encodings[b].records["block"]).reshape(len(records[b]), -1)
        block_index = BlockIndex.build(keys_a, keys_b, protocol.block_limits)
        candidate = _agreement(keys_a[index_a], keys_b[index_b], block_index, spans).any(axis=1)
        levels, similarity = compare_and_measure(party_features[a], party_features[b], index_a, index_b, comparisons)
        pair_frequencies = (
            [f[index_a] for f in frequencies[a]],
            [f[index_b] for f in frequencies[b]],
        )
        _, strength, probability = weigh_pairs(
            levels, comparisons, features, (scored.model, scored.priors, 0.0), (a, b), pair_frequencies, similarity
        )
        reject = rejected(levels, comparisons)
        all_levels.append(feature_levels(levels, features))
        for n, (i, j) in enumerate(zip(index_a.tolist(), index_b.tolist(), strict=True)):
            if entity_of.get((a, i), -1) == entity_of.get((b, j), -2):
                cause = "linked"
            elif not candidate[n]:
                cause = "no candidate"
            elif reject[n]:
                cause = "rejected"
            elif probability[n] < threshold:
                cause = "below threshold"
            else:
                cause = "lost in the solver"
            causes[cause] += 1
            if cause == "linked":
                continue
            row_a = raw[encodings[a].header.party][clients[a][i]]
            row_b = raw[encodings[b].header.party][clients[b][j]]
            tags = plaintext_tags(row_a, row_b)
            tag = " ".join(f"{k}={v}" for k, v in tags.items() if v != "same")
            by_tags[(cause, tag)] += 1
            salted = [k for k, c in enumerate(comparisons) if c.salted]
            unsalted = bool(salted) and all(levels[n, k] == comparisons[k].missing for k in salted)
            by_reason[(cause, primary_reason(tags) + (" [no shared salt]" if unsalted else ""))] += 1
            vector = " ".join(
                f"{c.field.name[:4]}={'-' if levels[n, k] == c.missing else levels[n, k]}"
                for k, c in enumerate(comparisons)
            )
            by_levels[(cause, vector)] += 1
            if len(examples) < show or cause == "lost in the solver":
                rival = max(kept_strength.get((a, i), -1e9), kept_strength.get((b, j), -1e9))
                examples.append(
                    f"  [{cause}] p={probability[n]:.3g} w={strength[n]:.1f} rival={rival:.1f} {vector}\n"
                    f"      {_brief(row_a)}\n      {_brief(row_b)}"
                )
    total = sum(causes.values())
    stacked = np.concatenate(all_levels)
    print("  m fitted vs m among all true pairs (neutral excluded), per feature level:")
    for column, feature in enumerate(features):
        counts = np.bincount(stacked[:, column], minlength=feature.size).astype(float)
        counts[feature.neutral] = 0
        true_m = counts / max(counts.sum(), 1)
        fitted = scored.model.m[column].copy()
        fitted[feature.neutral] = 0
        if feature.size <= 12:
            print(f"    {feature.name:<22} fitted {' '.join(f'{x:.3f}' for x in fitted)}")
            print(f"    {'':<22} true   {' '.join(f'{x:.3f}' for x in true_m)}")
        else:
            worst = np.argsort(-np.abs(np.log2((true_m + 1e-4) / (fitted + 1e-4))) * (true_m + fitted))[:10]
            print(
                f"    {feature.name:<22} (largest gaps) "
                + " ".join(f"[{k}] {fitted[k]:.3f}/{true_m[k]:.3f}" for k in worst)
            )
    print(f"  true pairs {total}")
    for cause, count in causes.most_common():
        print(f"  {cause:<20} {count:6d}  {count / total:.4f}")
    print("  by cause and primary reason:")
    for (cause, reason), count in sorted(by_reason.items(), key=lambda kv: (kv[0][0], -kv[1])):
        print(f"    {count:5d}  {cause:<20} {reason}")
    print("  by cause and plaintext difference (top 40):")
    for (cause, tag), count in by_tags.most_common(40):
        print(f"    {count:5d}  {cause:<20} {tag}")
    print("  by cause and comparison levels (top 30):")
    for (cause, vector), count in by_levels.most_common(30):
        print(f"    {count:5d}  {cause:<20} {vector}")
    print("  examples:")
    print("\n".join(examples[: show + 20]))
    _calibration(scored, threshold, people, party_features, comparisons)
    grid = [threshold * f for f in (0.25, 0.5, 0.75, 1.0)] + [0.2, 0.1, 0.05, 0.02]
    for value in sorted(set(grid)):
        chosen, _ = select_and_solve(scored, value)
        predicted = set()
        for entity in chosen:
            for (pa, ra), (pb, rb) in itertools.combinations(entity.records, 2):
                if people[pa][ra] >= 0 and people[pa][ra] == people[pb][rb]:
                    predicted.add(((pa, ra), (pb, rb)))
        linked = sum(len(list(itertools.combinations(e.records, 2))) for e in chosen)
        tp = len(predicted)
        p, r = tp / max(linked, 1), tp / total
        print(f"  threshold {value:.4f}: P {p:.4f} R {r:.4f} F1 {2 * p * r / (p + r):.4f}")


def _calibration(scored, threshold, people, party_features, comparisons) -> None:
    """Kept pairs (one-to-one greedy) below the threshold: by pattern, how many are true."""
    from linkage.matching.threshold import greedy_pairs

    tally: dict[str, list[float]] = {}
    for a, b in itertools.combinations(range(len(people)), 2):
        mine = np.flatnonzero((scored.party_a == a) & (scored.party_b == b) & (scored.probability >= 0.02))
        kept = mine[greedy_pairs(scored.record_a[mine], scored.record_b[mine], scored.weight[mine])]
        low = kept[scored.probability[kept] < threshold]
        ra, rb = scored.record_a[low], scored.record_b[low]
        levels, _ = compare_and_measure(party_features[a], party_features[b], ra, rb, comparisons)
        truth = (people[a][ra] == people[b][rb]) & (people[a][ra] >= 0)
        for n in range(len(low)):
            vector = " ".join(
                f"{c.field.name[:4]}={'-' if levels[n, k] == c.missing else levels[n, k]}"
                for k, c in enumerate(comparisons)
            )
            entry = tally.setdefault(vector, [0, 0, 0.0])
            entry[0] += 1
            entry[1] += int(truth[n])
            entry[2] += float(scored.probability[low[n]])
    total = sum(e[0] for e in tally.values())
    true = sum(e[1] for e in tally.values())
    mean = sum(e[2] for e in tally.values()) / max(total, 1)
    print(f"  kept pairs at 0.02 <= p < threshold: {total}, true {true}, mean p {mean:.3f}")
    for vector, (count, hits, psum) in sorted(tally.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"    {count:4d} true {hits:4d} mean p {psum / count:.3f}  {vector}")


def state_causes(
    protocol: Protocol,
    state: LinkState,
    plaintext: Callable[[int, int], dict[str, str]],
    person: Callable[[int, int], str],
    show: int,
) -> None:
    """Every true pair of a linkage state's records, within and across parties, by cause.

    For `bench/refresh.py --causes` (duplicates within parties, `--dedupe`): each missed
    true pair is put in the first that applies of
      * no candidate: no shared block key (within a party, keys skipped there count as none);
      * rejected: "different" on every field of a `reject_when_different` rule;
      * below threshold: match probability under the model's threshold;
      * below dedupe_threshold (within a party): at or above the threshold, under the
        protocol's `dedupe_threshold`;
      * a duplicate not grouped (across parties): one of the pair's records has another
        record of its own party in the other record's entity (the solver's one record per
        party per entity chose that one);
      * lost in the solver: accepted, but not in one entity;
    and described by what differs in its plaintext (`plaintext_tags`).
    """
    comparisons = comparisons_for(protocol)
    features = features_for(comparisons, protocol.comparison_groups)
    model = state.model
    entity = state.entity
    features_of = [PartyFeatures.from_records(records, comparisons) for records in state.records]
    keys = [np.asarray(records["block"]).reshape(len(records), -1) for records in state.records]
    accepted = {
        (int(pa), int(ra), int(pb), int(rb))
        for pa, ra, pb, rb in zip(
            state.pairs.party_a, state.pairs.record_a, state.pairs.party_b, state.pairs.record_b, strict=True
        )
    }
    people: dict[str, list[tuple[int, int]]] = {}
    for p, ids in enumerate(entity):
        for r in range(len(ids)):
            people.setdefault(person(p, r), []).append((p, r))
    members: dict[int, set[tuple[int, int]]] = {}
    for p, ids in enumerate(entity):
        for r, number in enumerate(ids.tolist()):
            members.setdefault(number, set()).add((p, r))
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for records in people.values():
        for (pa, ra), (pb, rb) in itertools.combinations(sorted(records), 2):
            pairs.setdefault((pa, pb), []).append((ra, rb))
    dedupe_threshold = max(model.threshold, protocol.dedupe_threshold or 0.0)
    causes: Counter[tuple[str, str]] = Counter()
    by_reason: Counter[tuple[str, str, str]] = Counter()
    by_levels: Counter[tuple[str, str, str]] = Counter()
    examples: list[str] = []
    for (a, b), found in sorted(pairs.items()):
        kind = "within" if a == b else "across"
        index_a = np.array([i for i, _ in found], dtype=np.int64)
        index_b = np.array([j for _, j in found], dtype=np.int64)
        levels, similarity = compare_and_measure(features_of[a], features_of[b], index_a, index_b, comparisons)
        prior = model.prior_of(state.parties[a], state.parties[b])
        _, strength, probability = weigh_pairs(
            levels, comparisons, features, (model.model, {(a, b): prior}, 0.0), (a, b), ([], []), similarity
        )
        reject = rejected(levels, comparisons)
        if a == b:
            skipped = state.within_oversized.get(state.parties[a], ())
        else:
            skipped = model.oversized_for(list(state.parties), keys[a].shape[1]).get((a, b), ())
        shared = (keys[a][index_a] == keys[b][index_b]) & (keys[a][index_a] != 0)
        for column, oversized in enumerate(skipped):
            if len(oversized):
                shared[:, column] &= ~np.isin(keys[a][index_a, column], oversized)
        candidate = shared.any(axis=1)
        for n, (i, j) in enumerate(found):
            if entity[a][i] == entity[b][j]:
                causes[(kind, "linked")] += 1
                continue
            if not candidate[n]:
                cause = "no candidate"
            elif reject[n]:
                cause = "rejected"
            elif probability[n] < model.threshold:
                cause = "below threshold"
            elif a == b and probability[n] < dedupe_threshold:
                cause = "below dedupe_threshold"
            elif a != b and (
                any(q == a and r != i for q, r in members[int(entity[b][j])])
                or any(q == b and r != j for q, r in members[int(entity[a][i])])
            ):
                cause = "a duplicate not grouped"
            else:
                cause = "lost in the solver" + ("" if (a, i, b, j) in accepted else " (pair not accepted)")
            causes[(kind, cause)] += 1
            row_a, row_b = plaintext(a, i), plaintext(b, j)
            tags = plaintext_tags(row_a, row_b)
            salted = [k for k, c in enumerate(comparisons) if c.salted]
            unsalted = bool(salted) and all(levels[n, k] == comparisons[k].missing for k in salted)
            by_reason[(kind, cause, primary_reason(tags) + (" [no shared salt]" if unsalted else ""))] += 1
            vector = " ".join(
                f"{c.field.name[:4]}={'-' if levels[n, k] == c.missing else levels[n, k]}"
                for k, c in enumerate(comparisons)
            )
            by_levels[(kind, cause, vector)] += 1
            if len(examples) < show:
                examples.append(
                    f"  [{kind}, {cause}] p={probability[n]:.3g} w={strength[n]:.1f} {vector}\n"
                    f"      {_brief(row_a)}\n      {_brief(row_b)}"
                )
    print(
        f"\n== true pairs by cause (threshold {model.threshold:.4f}, dedupe_threshold {dedupe_threshold:.4f}, "
        f"priors {', '.join(f'{a}+{b} {p:.2e}' for (a, b), p in sorted(model.priors.items()))})"
    )
    for kind in ("within", "across"):
        total = sum(count for (k, _), count in causes.items() if k == kind)
        print(f"  {kind} parties: {total:,} true pairs")
        for (k, cause), count in sorted(causes.items(), key=lambda kv: -kv[1]):
            if k == kind:
                print(f"    {count:6d}  {cause}")
    print("  missed, by cause and primary reason:")
    for (kind, cause, reason), count in sorted(by_reason.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1])):
        print(f"    {count:5d}  {kind:<7} {cause:<24} {reason}")
    print("  missed, by cause and comparison levels (top 30):")
    for (kind, cause, vector), count in by_levels.most_common(30):
        print(f"    {count:5d}  {kind:<7} {cause:<24} {vector}")
    print("  examples:")
    print("\n".join(examples))


def _brief(row: dict[str, str]) -> str:
    keys = ("given_name", "surname", "date_of_birth", "sex", "address", "city", "postcode")
    return " | ".join(row.get(k, "") for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--febrl", action="store_true")
    parser.add_argument("--variant", default="both", choices=("both", "plain", "hardened"))
    parser.add_argument("--show", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import os

    import linkage.matching.engine as engine_module

    engine_module.RANDOM_PAIRS = int(os.environ.get("EXP_RANDOM_PAIRS", engine_module.RANDOM_PAIRS))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        protocol = load_protocol(EXAMPLE)
        if args.febrl:
            protocol = febrl_protocol(protocol, ("msd", "police"))
            write_febrl4(protocol, tmp / "data", ("msd", "police"))
        else:
            synthesise_population(protocol, args.people, args.seed, tmp / "data")
        variants = {"plain": with_hardening(protocol, Hardening()), "hardened": protocol}
        for name, variant in variants.items():
            if args.variant not in ("both", name):
                continue
            (tmp / name).mkdir()
            diagnose(variant, tmp / "data", tmp / name, name, args.show)


if __name__ == "__main__":
    main()
