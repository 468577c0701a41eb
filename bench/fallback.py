"""Would an unsalted fallback filter over names and address pass the risk goal, and would it help?

    .venv/bin/python bench/fallback.py risk [--people 20000] [--seed 7] [--sample 3000] [--secrets 3]
                                            [--variants LABEL,...]
    .venv/bin/python bench/fallback.py separation [--febrl] [--people 20000] [--seed 7] [--variants ...]
    .venv/bin/python bench/fallback.py link [--febrl] [--skip-synth] [--seed 7] [--trial N] [--clk-variant one-d4]
                                            [--names-bar 0.8] [--lacking-bar 0.75] [--weights]
    .venv/bin/python bench/fallback.py speed --people 8000

Issue 17/18 measurement, not a feature: the example's hardening (two date salts, diffusion 4,
CLK fallback) drops true pairs whose two dates share no salt. This bench builds candidate
*fallback filters* (unsalted filters over the names and the address, hardened in several
ways) outside the encoder, and measures them:

* ``risk``: the example's encodings plus the fallback filter, as the service would hold
  them, attacked on the first --sample ``msd`` records of a realistic synth at full
  overlap (the attacker's list is the records' own identifiers): graph matching on the
  fallback filter alone, on the fallback beside the example's CLK, and on the fallback
  beside every salted field filter of the first salt; the frequency attack on identical
  fallback filters; pattern mining (meaningful for one-filter variants only, whose
  tokens it models). The median over --secrets secrets (each with its own attacker key).
* ``separation``: among cross-party candidate pairs (sharing a key of one of the
  example's exact blocking rules, computed on plaintext) whose two records share no salt
  (dates differ in year and in day-and-month, or a date is missing on one side), how many
  true pairs a comparison can win back: gradient boosting fitted on the truth (5-fold,
  out of fold; an upper bound for the engine's EM) over the variant's Dice, whether the
  pair shares the names key and whether a date is lacking, and the most (true - false)
  pairs any threshold on its score keeps. ``plain`` (the
  unhardened per-field filters) is the ceiling, ``clk`` (the example's hardened CLK) and
  ``clk within the bars`` (the same, only for pairs past the engine's names bars) are today.
* ``link``: the example hardened, encoded and linked by the engine in this process on
  the realistic synth (and FEBRL4 with --febrl), with a one-filter variant standing in
  for the CLK (patched into the encoder) and the engine's names bars set as given; F1
  over all records (--weights prints the frozen model's level weights).
* ``speed``: the example's encoder on 20,000 rows in one process against the work one
  more 1,024-bit diffused filter adds (setting its bits, diffusing, packing).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linkage.agency.attacks import frequency_attack, graph_matching_attack, pattern_mining_attack
from linkage.agency.hashing import apply_hardening, filter_hardening, token_positions, tokenize
from linkage.agency.normalise import soundex
from linkage.agency.prepare import Value
from linkage.agency.records import _transform
from linkage.agency.risk import build_reference, encode_values, read_identifiers
from linkage.encodings import copy_column
from linkage.evaluation.febrl import febrl_protocol, write_febrl4
from linkage.evaluation.scores import read_truth
from linkage.evaluation.synth import synthesise_population
from linkage.matching.compare import LACKING_BAR_DICE, NAMES_BAR_DICE, _unmixed_dice
from linkage.protocol import BlockingRule, Hardening, Protocol, load_protocol, with_hardening

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
NAME_FIELDS = ("given_name", "surname")
ADDRESS_FIELDS = ("address", "city", "postcode")


@dataclass(frozen=True)
class Variant:
    """One way to build the fallback filter(s).

    Attributes:
        fields: groups of identifier fields; each group is one filter.
        bits: each filter's length.
        bits_per_token: per field, bits each token sets (``None``: the protocol's CLK's).
        hardening: balance / fold / diffusion of each filter (never salted).
        blip: BLIP (Schnell and Borgs 2016): each bit flipped with this chance, fresh per record.
        keyed_by_names: salt every filter with the record's names key (surname and given
            name Soundex): comparable only within one names key, as the engine's names bar.
    """

    fields: tuple[tuple[str, ...], ...]
    bits: tuple[int, ...]
    hardening: Hardening
    bits_per_token: int | None = None
    blip: float = 0.0
    keyed_by_names: bool = False


NAMES_ADDRESS = (NAME_FIELDS + ADDRESS_FIELDS,)
PER_FIELD = (("given_name",), ("surname",), ("address",), ("city",), ("postcode",))
VARIANTS = {
    "one-d4": Variant(NAMES_ADDRESS, (1024,), Hardening(diffusion=4)),
    "one-d6": Variant(NAMES_ADDRESS, (1024,), Hardening(diffusion=6)),
    "one-b-d3": Variant(NAMES_ADDRESS, (1024,), Hardening(balance=True, diffusion=3)),
    "one-d4-blip10": Variant(NAMES_ADDRESS, (1024,), Hardening(diffusion=4), blip=0.1),
    "two-d4": Variant((NAME_FIELDS, ADDRESS_FIELDS), (512, 512), Hardening(diffusion=4)),
    "two-d6": Variant((NAME_FIELDS, ADDRESS_FIELDS), (512, 512), Hardening(diffusion=6)),
    "two-d4-blip10": Variant((NAME_FIELDS, ADDRESS_FIELDS), (512, 512), Hardening(diffusion=4), blip=0.1),
    "two-d4-blip20": Variant((NAME_FIELDS, ADDRESS_FIELDS), (512, 512), Hardening(diffusion=4), blip=0.2),
    "fields-d4": Variant(PER_FIELD, (256, 256, 512, 256, 128), Hardening(diffusion=4)),
    "fields-d6": Variant(PER_FIELD, (256, 256, 512, 256, 128), Hardening(diffusion=6)),
    "fields-d4-blip20": Variant(PER_FIELD, (256, 256, 512, 256, 128), Hardening(diffusion=4), blip=0.2),
    "fields-d4-names": Variant(PER_FIELD, (256, 256, 512, 256, 128), Hardening(diffusion=4), keyed_by_names=True),
}


def _key(secret: bytes, label: str) -> bytes:
    return hashlib.blake2b(label.encode(), key=secret[:64], digest_size=64).digest()


def names_key(row: Sequence[Value], index: dict[str, int]) -> str:
    """The record's surname and given name Soundex ("" when either is missing)."""
    given, surname = row[index["given_name"]], row[index["surname"]]
    if not isinstance(given, str) or not isinstance(surname, str):
        return ""
    return f"{soundex(surname)}|{soundex(given)}"


def build_fallback(
    protocol: Protocol, variant: Variant, secret: bytes, values: Sequence[Sequence[Value]], seed: int
) -> list[np.ndarray]:
    """The variant's fallback filters of each record, packed, one array per filter."""
    index = {spec.name: i for i, spec in enumerate(protocol.fields)}
    hardening_key = _key(secret, "fallback/hardening")
    rng = np.random.default_rng([seed, *secret[:8]])
    out = []
    for number, (group, bits) in enumerate(zip(variant.fields, variant.bits, strict=True)):
        plan = filter_hardening(hardening_key, variant.hardening, bits, f"fallback/{number}")
        built = np.zeros((len(values), plan.build_bits), dtype=bool)
        cache: dict[tuple[str, str, str], tuple[int, ...]] = {}
        keys = {name: _key(secret, f"fallback/{name}") for name in group}
        for row_number, row in enumerate(values):
            salt = names_key(row, index) if variant.keyed_by_names else ""
            if variant.keyed_by_names and not salt:
                continue
            for name in group:
                spec = protocol.field(name)
                value = row[index[name]]
                if value is None:
                    continue
                k = variant.bits_per_token or spec.clk_bits_per_token
                if len(group) == 1:
                    k = variant.bits_per_token or spec.bits_per_token or k
                for token in tokenize(str(value), spec, protocol.ngram):
                    positions = cache.get((name, token, salt))
                    if positions is None:
                        positions = cache[(name, token, salt)] = token_positions(
                            f"{token}\0{salt}", keys[name], k, plan.build_bits
                        )
                    built[row_number, list(positions)] = True
        empty = ~built.any(axis=1)
        hardened = apply_hardening(built, plan) if plan.taps is not None or plan.build_bits != bits else built
        if variant.blip:
            hardened ^= rng.random(hardened.shape) < variant.blip
        hardened[empty] = False
        out.append(np.packbits(hardened, axis=1))
    return out


# -- risk ---------------------------------------------------------------------------------


def run_risk(args: argparse.Namespace) -> None:
    protocol = load_protocol(EXAMPLE)
    variants = {label: VARIANTS[label] for label in args.variants.split(",")} if args.variants else VARIANTS
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        synthesise_population(protocol, args.people, args.seed, tmp / "synth", profile="realistic")
        _, values = read_identifiers(protocol, "msd", tmp / "synth" / "msd.csv", limit=args.sample)
        reference, truth = build_reference(protocol, values, None, None, 1.0, args.seed, tmp / "reference")
        print(
            f"realistic synth {args.people:,} people, seed {args.seed}: {len(values):,} msd records, overlap 100%, "
            f"median of {args.secrets} secret(s); share re-identified"
        )
        secrets = [
            SECRET if trial == 0 else np.random.default_rng([args.seed, trial]).bytes(32)
            for trial in range(args.secrets)
        ]
        attackers = [np.random.default_rng([args.seed, trial, 1]).bytes(32) for trial in range(args.secrets)]
        examples = [encode_values(protocol, s, values) for s in secrets]
        reencoded = [encode_values(protocol, a, reference) for a in attackers]
        salted = [
            copy_column(spec.name, 0)
            for spec in protocol.fields
            if spec.num_bits and spec.name != protocol.hardening.salt[0]  # type: ignore[index]
        ]
        header = ("fallback alone", "with CLK", "with salted fields", "frequency", "pattern mining")
        index = {spec.name: i for i, spec in enumerate(protocol.fields)}
        print(f"  {'variant':<20}" + "".join(f"{h:>20}" for h in header) + f"{'s':>6}")
        started = time.perf_counter()
        base: dict[str, list[float]] = defaultdict(list)
        for example, other in zip(examples, reencoded, strict=True):
            base["clk"].append(
                graph_matching_attack(np.asarray(example["clk"]), np.asarray(other["clk"]), truth).reidentified
            )
            base["fields"].append(
                graph_matching_attack(
                    np.concatenate([np.asarray(example[n]) for n in salted], axis=1),
                    np.concatenate([np.asarray(other[n]) for n in salted], axis=1),
                    truth,
                ).reidentified
            )
        row = "".join(
            f"{statistics.median(base[k]):>12.2%} {max(base[k]):>6.1%}" if k in base else f"{'':>20}"
            for k in ("alone", "clk", "fields", "frequency", "pattern")
        )
        print(f"  {'(example alone)':<20}{row}{time.perf_counter() - started:6.0f}", flush=True)
        for label, variant in variants.items():
            started = time.perf_counter()
            cells: dict[str, list[float]] = defaultdict(list)
            for trial, (secret, attacker) in enumerate(zip(secrets, attackers, strict=True)):
                mine = np.concatenate(build_fallback(protocol, variant, secret, values, trial), axis=1)
                theirs = np.concatenate(build_fallback(protocol, variant, attacker, reference, 100 + trial), axis=1)
                cells["alone"].append(graph_matching_attack(mine, theirs, truth).reidentified)
                example, other = examples[trial], reencoded[trial]
                cells["clk"].append(
                    graph_matching_attack(
                        np.concatenate([mine, np.asarray(example["clk"])], axis=1),
                        np.concatenate([theirs, np.asarray(other["clk"])], axis=1),
                        truth,
                    ).reidentified
                )
                cells["fields"].append(
                    graph_matching_attack(
                        np.concatenate([mine, *(np.asarray(example[n]) for n in salted)], axis=1),
                        np.concatenate([theirs, *(np.asarray(other[n]) for n in salted)], axis=1),
                        truth,
                    ).reidentified
                )
                keys = [
                    (tuple(row[protocol.fields.index(protocol.field(n))] for g in variant.fields for n in g), "")
                    for row in reference
                ]
                whole = [(tuple(row),) for row in reference]
                cells["frequency"].append(
                    frequency_attack(
                        [mine], [keys], whole, [(tuple(row),) for row in values], truth, attack="frequency"
                    ).reidentified
                )
                tokens = [
                    frozenset(
                        f"{name}|{token}"
                        for g in variant.fields
                        for name in g
                        if row[index[name]] is not None
                        for token in tokenize(str(row[index[name]]), protocol.field(name), protocol.ngram)
                    )
                    for row in reference
                ]
                widths = {t: protocol.field(t.partition("|")[0]).clk_bits_per_token for ts in tokens for t in ts}
                cells["pattern"].append(
                    pattern_mining_attack(
                        [mine],
                        [tokens],
                        [[tuple(row) for row in reference]],
                        [widths],
                        whole,
                        [(tuple(row),) for row in values],
                        truth,
                    ).reidentified
                )
            row = "".join(
                f"{statistics.median(cells[k]):>12.2%} {max(cells[k]):>6.1%}"
                for k in ("alone", "clk", "fields", "frequency", "pattern")
            )
            print(f"  {label:<20}{row}{time.perf_counter() - started:6.0f}", flush=True)
        print("  (each cell: median over secrets, then the largest)")


# -- separation ----------------------------------------------------------------------------


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Dice of two packed filter arrays (0 where both are empty)."""
    shared = np.bitwise_count(a & b).sum(axis=1)
    total = np.bitwise_count(a).sum(axis=1) + np.bitwise_count(b).sum(axis=1)
    return np.where(total > 0, 2 * shared / np.maximum(total, 1), -1.0)


def candidate_pairs(
    protocol: Protocol, left: Sequence[Sequence[Value]], right: Sequence[Sequence[Value]]
) -> np.ndarray:
    """Cross pairs sharing a key of an exact blocking rule (on plaintext), at most ``max_block_pairs`` per block."""
    index = {spec.name: i for i, spec in enumerate(protocol.fields)}
    pairs: set[tuple[int, int]] = set()
    for rule in protocol.blocking:
        if not isinstance(rule, BlockingRule):
            continue
        blocks: dict[tuple[str, ...], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for side, rows in enumerate((left, right)):
            for number, row in enumerate(rows):
                parts = tuple(_transform(row[index[name]], transform) for name, transform in rule.parts)
                if all(p is not None for p in parts):
                    blocks[parts][side].append(number)  # type: ignore[index]
        for a, b in blocks.values():
            if a and b and len(a) * len(b) <= protocol.max_block_pairs:
                pairs.update((i, j) for i in a for j in b)
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _no_shared_salt(protocol: Protocol, left: Sequence[Value], right: Sequence[Value]) -> bool:
    date = [spec.name for spec in protocol.fields].index("date_of_birth")
    a, b = left[date], right[date]
    if a is None or b is None:
        return a is not b
    return all(_transform(a, t) != _transform(b, t) for _, t in protocol.hardening.salts)


def oracle_gain(features: list[np.ndarray], labels: np.ndarray) -> tuple[int, int, int]:
    """What a model could make of these features: gradient boosting, 5-fold cross-validated on the truth.

    An upper bound for what the engine's model (fitted without the truth) can do with the
    same comparisons; the threshold on its out-of-fold score that keeps most true minus
    false pairs.

    Returns:
        (true kept, false kept, true - false) at that threshold.
    """
    # scikit-learn comes with recordlinkage (the bench extra); it ships no type stubs.
    from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]
    from sklearn.model_selection import StratifiedKFold, cross_val_predict  # type: ignore[import-untyped]

    if labels.sum() < 5:
        return 0, 0, 0
    matrix = np.stack(features, axis=1)
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=0)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    score = cross_val_predict(model, matrix, labels, cv=folds, method="predict_proba")[:, 1]
    order = np.argsort(-score, kind="stable")
    true_kept = np.cumsum(labels[order])
    false_kept = np.cumsum(~labels[order])
    best = int(np.argmax(true_kept - false_kept))
    if true_kept[best] - false_kept[best] <= 0:
        return 0, 0, 0
    return int(true_kept[best]), int(false_kept[best]), int(true_kept[best] - false_kept[best])


def run_separation(args: argparse.Namespace) -> None:
    example = load_protocol(EXAMPLE)
    variants = {label: VARIANTS[label] for label in args.variants.split(",")} if args.variants else VARIANTS
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.febrl:
            protocol = febrl_protocol(example, ("msd", "police"))
            write_febrl4(protocol, tmp / "data", ("msd", "police"))
            name = "FEBRL4"
        else:
            protocol = example
            synthesise_population(protocol, args.people, args.seed, tmp / "data", profile="realistic")
            name = f"realistic synth {args.people:,} people, seed {args.seed}"
        truth = read_truth(tmp / "data" / "truth.csv")
        ids_a, left = read_identifiers(protocol, "msd", tmp / "data" / "msd.csv")
        ids_b, right = read_identifiers(protocol, "police", tmp / "data" / "police.csv")
    person_a = np.array([truth[("msd", c)] for c in ids_a])
    person_b = np.array([truth[("police", c)] for c in ids_b])
    total_true = len(set(person_a) & set(person_b))
    pairs = candidate_pairs(protocol, left, right)
    keep = np.array([_no_shared_salt(protocol, left[i], right[j]) for i, j in pairs], dtype=bool)
    pairs = pairs[keep]
    labels = person_a[pairs[:, 0]] == person_b[pairs[:, 1]]
    # True pairs without a shared salt that blocking never offers.
    index = {spec.name: i for i, spec in enumerate(protocol.fields)}
    where_b = {p: j for j, p in enumerate(person_b)}
    stratum = sum(
        1 for i, p in enumerate(person_a) if p in where_b and _no_shared_salt(protocol, left[i], right[where_b[p]])
    )
    print(
        f"{name}: msd x police, {total_true:,} true pairs, {stratum} of them share no salt; candidates sharing "
        f"no salt: {len(pairs):,} ({int(labels.sum())} true)"
    )
    print("  each with the names key shared and the date lacking as features; 'clk' is today's CLK fallback")
    print(f"  {'comparison':<22}{'true kept':>10}{'false kept':>11}{'net':>6}")

    shares_names = np.array(
        [names_key(left[i], index) and names_key(left[i], index) == names_key(right[j], index) for i, j in pairs],
        dtype=bool,
    )
    date = index["date_of_birth"]
    lacking = np.array([left[i][date] is None or right[j][date] is None for i, j in pairs], dtype=bool)
    base: list[np.ndarray] = [shares_names.astype(float), lacking.astype(float)]

    def report(label: str, features: list[np.ndarray], mask: np.ndarray | None = None) -> None:
        chosen = np.ones(len(pairs), dtype=bool) if mask is None else mask
        kept, false, net = oracle_gain([f[chosen] for f in base + features], labels[chosen])
        print(f"  {label:<22}{kept:>10}{false:>11}{net:>6}", flush=True)

    plain = encode_values(with_hardening(protocol, Hardening()), SECRET, left + right)
    a, b = plain[: len(left)][pairs[:, 0]], plain[len(left) :][pairs[:, 1]]
    report("plain", [_dice(np.asarray(a[n]), np.asarray(b[n])) for n in NAME_FIELDS + ADDRESS_FIELDS])
    report("plain names+address", [_dice(np.asarray(a[n]), np.asarray(b[n])) for n in NAME_FIELDS + ("address",)])
    hardened = encode_values(protocol, SECRET, left + right)
    a, b = hardened[: len(left)][pairs[:, 0]], hardened[len(left) :][pairs[:, 1]]
    clk_a, clk_b = np.asarray(a["clk"]), np.asarray(b["clk"])
    raw = _dice(clk_a, clk_b)
    counts_a, counts_b = np.bitwise_count(clk_a).sum(axis=1), np.bitwise_count(clk_b).sum(axis=1)
    taps = protocol.hardening.diffusion or 1
    unmixed = _unmixed_dice(raw, counts_a, counts_b, np.full(len(raw), protocol.clk_bits), taps)
    report("clk", [raw])
    bars = np.where(lacking, shares_names | (unmixed >= LACKING_BAR_DICE), shares_names & (unmixed >= NAMES_BAR_DICE))
    report("clk within the bars", [raw], bars)
    for label, variant in variants.items():
        built = build_fallback(protocol, variant, SECRET, left + right, 0)
        features = [_dice(f[: len(left)][pairs[:, 0]], f[len(left) :][pairs[:, 1]]) for f in built]
        report(label, features)
        report(f"{label} + clk", [raw, *features])


# -- link ---------------------------------------------------------------------------------


def run_link(args: argparse.Namespace) -> None:
    """The example hardened, linked by the engine, with its CLK replaced by a fallback variant and other bars."""
    from linkage.agency import records as records_module
    from linkage.agency.risk import encode_and_link
    from linkage.evaluation.scores import client_clusters, pairwise_scores, true_pairs
    from linkage.matching import compare

    example = load_protocol(EXAMPLE)
    if args.names_bar is not None:
        compare.NAMES_BAR_DICE = args.names_bar
    if args.lacking_bar is not None:
        compare.LACKING_BAR_DICE = args.lacking_bar
    if args.clk_levels:
        compare._DICE_LEVELS["clk"] = tuple(float(x) for x in args.clk_levels.split(","))
    if args.clk_variant:
        variant = VARIANTS[args.clk_variant]
        assert len(variant.bits) == 1 and variant.bits[0] == example.clk_bits
        original = records_module.RecordEncoder._encode

        def encode(self: records_module.RecordEncoder, rows: Sequence[Sequence[Value]]) -> np.ndarray:
            out = original(self, rows)
            out["clk"] = build_fallback(self.protocol, variant, self.keys.hardening, rows, 0)[0]
            return out

        records_module.RecordEncoder._encode = encode  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        datasets = []
        if not args.skip_synth:
            synthesise_population(example, args.people, args.seed, tmp / "synth", profile="realistic")
            datasets.append((f"realistic {args.people} seed {args.seed}", example, tmp / "synth"))
        if args.febrl:
            febrl = febrl_protocol(example, ("msd", "police"))
            write_febrl4(febrl, tmp / "febrl", ("msd", "police"))
            datasets.append(("FEBRL4", febrl, tmp / "febrl"))
        for name, protocol, data in datasets:
            work = tmp / f"work-{len(name)}"
            work.mkdir()
            secret = SECRET if not args.trial else np.random.default_rng([args.seed, args.trial]).bytes(32)
            result, outs = encode_and_link(protocol, secret, data, work, workers=1)
            if args.weights:
                from linkage.matching.engine import link, load_inputs

                frozen = link(protocol, load_inputs(protocol, outs), freeze=True).model
                assert frozen is not None
                weights = frozen.model.level_weights()
                for feature, level in zip(frozen.model.features, weights, strict=True):
                    print(f"  {feature}: {np.round(level, 1).tolist()}")
                print(f"  prior {frozen.model.prior:.2e}, threshold {frozen.threshold:.3f}")
            actual, _ = true_pairs(read_truth(data / "truth.csv"), [p.id for p in protocol.parties])
            scores = pairwise_scores(client_clusters(result, outs), actual)
            print(
                f"{name} (secret {args.trial}): clk {args.clk_variant or 'example'}, "
                f"levels {compare._DICE_LEVELS['clk'][-1]}, names bar {compare.NAMES_BAR_DICE}, lacking bar "
                f"{compare.LACKING_BAR_DICE}: P {scores.precision:.4f} R {scores.recall:.4f} F1 {scores.f1:.4f}",
                flush=True,
            )


# -- speed --------------------------------------------------------------------------------


def run_speed(args: argparse.Namespace) -> None:
    """What one more 1,024-bit diffused filter would add to the encoder's time, in one process."""
    from linkage.agency.hashing import derive_keys
    from linkage.agency.records import RecordEncoder, _set_bits

    protocol = load_protocol(EXAMPLE)
    with tempfile.TemporaryDirectory() as tmp_name:
        synthesise_population(protocol, args.people, args.seed, Path(tmp_name), profile="realistic")
        _, values = read_identifiers(protocol, "msd", Path(tmp_name) / "msd.csv")
    values = (values * (1 + 20_000 // len(values)))[:20_000]
    keys = derive_keys(SECRET, protocol)
    encoder = RecordEncoder(protocol, keys)
    encoder.encode(values[:2000])  # warm the caches, as a long file does
    started = time.perf_counter()
    encoder.encode(values)
    full = time.perf_counter() - started
    # The extra filter as the encoder would build it: about 60 tokens a record (names and
    # address) of 12 bits each gathered into a 1,024-bit matrix, diffused with four taps.
    plan = filter_hardening(keys.hardening, Hardening(diffusion=4), 1024, "fallback")
    rows = np.repeat(np.arange(len(values)), 60)
    positions = np.random.default_rng(0).integers(0, 1024, (len(rows), 12)).astype(np.uint16)
    started = time.perf_counter()
    bits = np.zeros((len(values), 1024), dtype=bool)
    _set_bits(bits, rows, positions)
    np.packbits(encoder._harden(bits, plan), axis=1)
    extra = time.perf_counter() - started
    print(
        f"{len(values):,} records: the example's encoder {full:.2f} s, one more filter {extra:.2f} s: "
        f"throughput x{full / (full + extra):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("risk", "separation", "link", "speed"))
    parser.add_argument("--clk-variant", default="", help="link: a one-filter variant to stand in for the CLK")
    parser.add_argument("--names-bar", type=float, default=None)
    parser.add_argument("--lacking-bar", type=float, default=None)
    parser.add_argument("--clk-levels", default="", help="link: the CLK fallback's Dice levels, highest first")
    parser.add_argument("--skip-synth", action="store_true")
    parser.add_argument("--trial", type=int, default=0, help="link: 0 is the benches' secret, others drawn")
    parser.add_argument("--weights", action="store_true", help="link: print the frozen model's level weights")
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=3000)
    parser.add_argument("--secrets", type=int, default=3)
    parser.add_argument("--febrl", action="store_true")
    parser.add_argument("--variants", default="")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.command == "risk":
        run_risk(args)
    elif args.command == "link":
        run_link(args)
    elif args.command == "speed":
        run_speed(args)
    else:
        run_separation(args)


if __name__ == "__main__":
    main()
