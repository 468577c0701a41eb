"""The privacy risk check behind ``pprl risk``: attack your own encodings, per hardening.

For each hardening option the agency's own records are encoded as the linkage service
would receive them, then attacked as an honest-but-curious linkage unit with a plaintext
reference list could attack them (:mod:`linkage.agency.attacks`). Next to the share of records
re-identified, the linkage quality the option gives is measured on synthetic data, so
that the choice between privacy and quality is made on numbers.
"""

from __future__ import annotations

import csv
import datetime as dt
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from linkage.agency.attacks import (
    AttackResult,
    frequency_attack,
    graph_matching_attack,
    pattern_mining_attack,
    random_secret,
)
from linkage.agency.encode import encode_csv
from linkage.agency.hashing import derive_keys, salted, tokenize
from linkage.agency.prepare import Value, prepare_rows
from linkage.agency.records import RecordEncoder, salts_for
from linkage.encodings import copy_column
from linkage.errors import InputError
from linkage.evaluation.scores import (
    PairwiseScores,
    client_clusters,
    pairwise_scores,
    read_truth,
    true_pairs,
)
from linkage.evaluation.synth import synthesise_population
from linkage.matching.engine import LinkResult, link, load_inputs
from linkage.protocol import STRING_KINDS, Hardening, Protocol, with_hardening

__all__ = [
    "ATTACKS",
    "OptionRisk",
    "RiskReport",
    "assess_risk",
    "attack_encodings",
    "build_reference",
    "encode_and_link",
    "encode_values",
    "hardening_options",
    "LinkageQuality",
    "linkage_quality",
    "read_identifiers",
    "recommend",
]

ProgressCallback = Callable[[int, int], None]

ATTACKS = ("frequency_clk", "frequency_fields", "pattern_mining", "graph_matching")
_SALT = ("date_of_birth", "year")


def _salt_of(protocol: Protocol) -> tuple[str, str] | None:
    """The salt the options use: the year of the protocol's first date field, if it has one."""
    return next(((f.name, "year") for f in protocol.fields if f.kind == "date"), None)


def hardening_options(protocol: Protocol) -> dict[str, Hardening]:
    """The hardening options the check compares, by label (``none`` first).

    The salt is the year of a date field when the protocol has one.
    """
    salt = _salt_of(protocol)
    options = [
        Hardening(),
        Hardening(xor_fold=True),
        Hardening(balance=True),
        Hardening(diffusion=3),
        Hardening(diffusion=6),
    ]
    if salt:
        # The year, then the day and month: a pair whose year was mistyped still shares one.
        second = ((salt[0], "month_day"),)
        options += [
            Hardening(salt=salt),
            Hardening(salt=salt, diffusion=4),
            Hardening(salt=salt, balance=True, diffusion=3),
            Hardening(salt=salt, diffusion=4, fallback="clk"),
            Hardening(salt=salt, also_salt=second, diffusion=4),
            Hardening(salt=salt, also_salt=second, diffusion=4, fallback="clk"),
            Hardening(salt=salt, also_salt=second, balance=True, diffusion=3, fallback="clk"),
        ]
    if protocol.hardening.active and protocol.hardening not in options:
        options.append(protocol.hardening)
    return {option.label: option for option in options}


@dataclass(frozen=True)
class OptionRisk:
    """What one hardening option gives.

    Attributes:
        label: the option's short name.
        hardening: the option.
        attacks: each attack's result, by attack name.
        f1: pairwise F1 of a synthetic linkage under this option (``None`` if not measured).
        f1_with_salt: the same F1 among the records that have a value in the salt field
            (the date field salts are cut from): salted fields cannot compare a record
            without one to a record with one, and this F1 shows what the option costs
            apart from that.
        by_overlap: the attacks' results for each overlap measured (``attacks`` is the
            first of them, the largest).
    """

    label: str
    hardening: Hardening
    attacks: dict[str, AttackResult]
    f1: float | None
    f1_with_salt: float | None = None
    by_overlap: dict[float, dict[str, AttackResult]] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        """The largest share of records any attack re-identified (at full overlap, the worst case)."""
        return max(result.reidentified for result in self.attacks.values())


@dataclass(frozen=True)
class RiskReport:
    """The risk check's findings.

    Attributes:
        records: records attacked.
        reference_records: records in the attacker's plaintext reference.
        overlap: share of the attacked records whose person is in the reference (the
            first, largest, overlap measured).
        overlaps: every overlap measured (the share of the attacked records the
            attacker's list covers), largest first.
        options: one entry per hardening option, ``none`` first.
        current: the label of the protocol's own hardening.
        recommended: the label recommended, or ``None`` if no option meets the goals.
        recommended_with_salt: the option :func:`recommend` picks when F1 is measured
            among the records with a salt value only.
        max_reidentified: the goal for every attack (share of records).
        max_f1_cost: the goal for the F1 lost against no hardening.
    """

    records: int
    reference_records: int
    overlap: float
    options: tuple[OptionRisk, ...]
    current: str
    recommended: str | None
    recommended_with_salt: str | None
    max_reidentified: float
    max_f1_cost: float
    overlaps: tuple[float, ...] = (1.0,)


def read_identifiers(
    protocol: Protocol, party_id: str | None, path: Path, limit: int | None = None
) -> tuple[list[str], list[tuple[Value, ...]]]:
    """Client ids and normalised identifiers of a client CSV (rows with problems are left out).

    Args:
        protocol: the protocol.
        party_id: whose columns to expect; ``None``: only the identifier columns.
        path: the CSV.
        limit: read at most this many rows.

    Raises:
        InputError: the file cannot be read or lacks an identifier column.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [protocol.client_id_column, *(f.name for f in protocol.fields)]
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)}", path=str(path))
            rows: list[tuple[int, list[str]]] = []
            for number, row in enumerate(reader, start=2):
                if limit is not None and len(rows) >= limit:
                    break
                rows.append((number, [row[c] or "" for c in columns] + ["true"]))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: cannot read it ({exc.__class__.__name__}); pass a UTF-8 CSV", path=str(path)
        ) from exc
    party = party_id or protocol.parties[0].id
    attribute_count = len(protocol.party(party).attributes)
    prepared = prepare_rows(protocol, party, [(n, values + [""] * attribute_count) for n, values in rows])
    return prepared.client_ids, [tuple(values) for values in prepared.values]


def encode_values(protocol: Protocol, secret: bytes, values: Sequence[Sequence[Value]]) -> np.ndarray:
    """Encode normalised identifiers in this process (records as the linkage service gets them)."""
    return RecordEncoder(protocol, derive_keys(secret, protocol)).encode(values)


def _text(value: Value) -> str:
    return value.strftime("%Y%m%d") if isinstance(value, dt.date) else str(value)


def attack_encodings(
    protocol: Protocol,
    records: np.ndarray,
    values: Sequence[Sequence[Value]],
    reference: Sequence[Sequence[Value]],
    truth: np.ndarray,
    *,
    attacker_secret: bytes | None = None,
) -> dict[str, AttackResult]:
    """Run every attack on encodings of ``values`` made under ``protocol``.

    Args:
        protocol: the protocol (with the hardening under test); the attacker knows it.
        records: the encodings the linkage service would see, one per value row.
        values: the encoded records' normalised identifiers (for scoring only).
        reference: the attacker's plaintext list, normalised identifiers per person.
        truth: per encoded record, its person's index in ``reference`` (-1: absent).
        attacker_secret: the key the attacker re-encodes the reference with (random if
            ``None``).

    Returns:
        One result per attack in :data:`ATTACKS`; where an attack has a CLK and a
        per-field variant, the stronger one (``detail`` has both).
    """
    hardening = protocol.hardening
    strings = [i for i, spec in enumerate(protocol.fields) if spec.kind in STRING_KINDS]
    salt_index = [spec.name for spec in protocol.fields].index(hardening.salt[0]) if hardening.salt else -1
    # Under several salts every salted filter has a copy per salt: the attacker may go
    # after each copy, each under its own salt, and keeps whichever names more people.
    copies = len(hardening.salts) if hardening.salts_target("fields") and len(hardening.salts) > 1 else 1
    reference_salts = [salts_for(protocol, reference, k) for k in range(max(1, len(hardening.salts)))]

    def salted_in(target: str, index: int) -> bool:
        return hardening.salts_target(target) and index != salt_index

    def columns(copy: int) -> list[str]:
        return [copy_column(protocol.fields[i].name, copy if salted_in("fields", i) else 0) for i in strings]

    names = columns(0)
    whole_reference = [(tuple(row),) for row in reference]
    whole_actual = [(tuple(row),) for row in values]
    field_reference = [tuple(row[i] for i in strings) for row in reference]
    field_actual = [tuple(row[i] for i in strings) for row in values]
    results: dict[str, AttackResult] = {}

    results["frequency_clk"] = frequency_attack(
        [np.asarray(records["clk"])],
        [[(tuple(row), "") for row in reference]],
        whole_reference,
        whole_actual,
        truth,
        attack="frequency_clk",
    )

    def tokens_of(row: Sequence[Value], salt: str, index: int, target: str) -> frozenset[str]:
        value = row[index]
        if value is None:
            return frozenset()
        spec = protocol.fields[index]
        grams = tokenize(_text(value), spec, protocol.ngram)
        use_salt = salt if salted_in(target, index) else ""
        return frozenset(salted(gram, use_salt) for gram in grams)

    frequency_results, mining_results = [], []
    for copy in range(copies):
        salts = reference_salts[copy]
        field_keys = [
            [
                None if row[i] is None else (row[i], salt if salted_in("fields", i) else "")
                for row, salt in zip(reference, salts, strict=True)
            ]
            for i in strings
        ]
        frequency_results.append(
            frequency_attack(
                [np.asarray(records[name]) for name in columns(copy)],
                field_keys,
                field_reference,
                field_actual,
                truth,
                names=names,
                attack="frequency_fields",
            )
        )
        field_tokens = [
            [tokens_of(row, s, i, "fields") for row, s in zip(reference, salts, strict=True)] for i in strings
        ]
        field_widths = [
            {token: protocol.fields[i].bits_per_token or 1 for tokens in column for token in tokens}
            for i, column in zip(strings, field_tokens, strict=True)
        ]
        mining_results.append(
            pattern_mining_attack(
                [np.asarray(records[name]) for name in columns(copy)],
                field_tokens,
                [[row[i] for row in reference] for i in strings],
                field_widths,
                field_reference,
                field_actual,
                truth,
                names=names,
                attack="pattern_mining",
            )
        )
    results["frequency_fields"] = _strongest(frequency_results)
    fields_mined = _strongest(mining_results)
    clk_tokens = [
        frozenset(f"{i}|{token}" for i in range(len(protocol.fields)) for token in tokens_of(row, salt, i, "clk"))
        for row, salt in zip(reference, reference_salts[0], strict=True)
    ]
    clk_widths = {
        token: protocol.fields[int(token.partition("|")[0])].clk_bits_per_token
        for tokens in clk_tokens
        for token in tokens
    }
    clk_mined = pattern_mining_attack(
        [np.asarray(records["clk"])],
        [clk_tokens],
        [[tuple(row) for row in reference]],
        [clk_widths],
        whole_reference,
        whole_actual,
        truth,
        attack="pattern_mining",
    )
    results["pattern_mining"] = _stronger(clk_mined, fields_mined)

    reencoded = encode_values(protocol, attacker_secret or random_secret(), reference)
    clk_graph = graph_matching_attack(np.asarray(records["clk"]), np.asarray(reencoded["clk"]), truth)
    # Each copy's filters side by side, and (under several salts) all copies together.
    column_sets = [columns(copy) for copy in range(copies)]
    if copies > 1:
        column_sets.append(list(dict.fromkeys(name for copy in column_sets for name in copy)))
    fields_graph = _strongest(
        [
            graph_matching_attack(
                np.concatenate([np.asarray(records[name]) for name in chosen], axis=1),
                np.concatenate([np.asarray(reencoded[name]) for name in chosen], axis=1),
                truth,
            )
            for chosen in column_sets
        ]
    )
    results["graph_matching"] = _stronger(clk_graph, fields_graph)
    return results


def _strongest(results: Sequence[AttackResult]) -> AttackResult:
    """What an attacker running every variant achieves: the worst of each measure.

    The attack and the share named are the variant's that re-identified most; the values
    recovered are the most any variant recovered, so one variant's lucky re-identification
    cannot hide another's larger value recovery.

    >>> weak_named = AttackResult("a", 0.02, 0.5, 0.01)
    >>> many_values = AttackResult("a", 0.01, 0.4, 0.30)
    >>> worst = _strongest([weak_named, many_values])
    >>> worst.reidentified, worst.values_recovered
    (0.02, 0.3)
    """
    best = max(results, key=lambda result: (result.reidentified, result.values_recovered))
    recovered = max(result.values_recovered for result in results)
    return AttackResult(best.attack, best.reidentified, best.named, recovered, best.detail)


def _stronger(clk: AttackResult, fields: AttackResult) -> AttackResult:
    """The worst of the attack on the CLK and on the field filters, each measure apart."""
    worst = _strongest([clk, fields])
    detail = {**{f"clk {k}": v for k, v in clk.detail.items()}, **{f"fields {k}": v for k, v in fields.detail.items()}}
    detail["clk"] = clk.reidentified
    detail["fields"] = fields.reidentified
    detail["clk values"] = clk.values_recovered
    detail["fields values"] = fields.values_recovered
    return AttackResult(worst.attack, worst.reidentified, worst.named, worst.values_recovered, detail)


@dataclass(frozen=True)
class LinkageQuality:
    """Pairwise quality of a synthetic linkage.

    Attributes:
        overall: over every record.
        with_salt: over the records with a value in the salt field (the first date
            field), true pairs and linked pairs alike; ``overall`` when there is none.
    """

    overall: PairwiseScores
    with_salt: PairwiseScores


def encode_and_link(
    protocol: Protocol, secret: bytes, data_dir: Path, work_dir: Path, *, workers: int = 1
) -> tuple[LinkResult, list[Path]]:
    """Encode every party's ``data_dir/<party>.csv`` into ``work_dir/<party>``, then link them all.

    The agencies' and the linkage service's steps in one process, for studies on synthetic
    data (benchmarks, ``pprl risk``). Returns the link result and the parties' folders.
    """
    outs = []
    for party in protocol.parties:
        out = work_dir / party.id
        encode_csv(protocol, party.id, secret, data_dir / f"{party.id}.csv", out, workers=workers)
        outs.append(out)
    return link(protocol, load_inputs(protocol, outs), workers=workers), outs


def linkage_quality(
    protocol: Protocol,
    secret: bytes,
    synth_dir: Path,
    work_dir: Path,
    *,
    workers: int = 1,
) -> LinkageQuality:
    """Pairwise precision, recall and F1 of encoding and linking a synthetic population.

    Args:
        protocol: the protocol, with the hardening to measure.
        secret: the shared secret to encode with.
        synth_dir: a folder written by :func:`linkage.evaluation.synth.synthesise_population` for
            this protocol's parties (``<party>.csv`` and ``truth.csv``).
        work_dir: an empty folder for the encodings.
        workers: processes for encoding and linking.
    """
    result, outs = encode_and_link(protocol, secret, synth_dir, work_dir, workers=workers)
    actual, _ = true_pairs(read_truth(synth_dir / "truth.csv"), [p.id for p in protocol.parties])
    clusters = client_clusters(result, outs)
    overall = pairwise_scores(clusters, actual)
    salt = _salt_of(protocol)
    if salt is None:
        return LinkageQuality(overall, overall)
    salted = _records_with_value(protocol, synth_dir, salt[0])
    return LinkageQuality(
        overall,
        pairwise_scores(
            [[record for record in cluster if record in salted] for cluster in clusters],
            {pair for pair in actual if all(record in salted for record in pair)},
        ),
    )


def _records_with_value(protocol: Protocol, folder: Path, field: str) -> set[tuple[str, str]]:
    """The ``(party, client id)`` of every synthetic record with a value in ``field``."""
    out = set()
    for party in protocol.parties:
        with (folder / f"{party.id}.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row[field].strip():
                    out.add((party.id, row[protocol.client_id_column]))
    return out


def _synthetic_identifiers(protocol: Protocol, people: int, seed: int, folder: Path) -> list[tuple[Value, ...]]:
    synthesise_population(protocol, people, seed, folder)
    rows: list[tuple[Value, ...]] = []
    for party in protocol.parties:
        rows += read_identifiers(protocol, party.id, folder / f"{party.id}.csv")[1]
    return rows


def build_reference(
    protocol: Protocol,
    values: Sequence[tuple[Value, ...]],
    reference_values: Sequence[tuple[Value, ...]] | None,
    reference_truth: np.ndarray | None,
    overlap: float,
    seed: int,
    folder: Path,
) -> tuple[list[tuple[Value, ...]], np.ndarray]:
    """The attacker's plaintext list (shuffled) and, per attacked record, its index there."""
    rng = np.random.default_rng(seed)
    if reference_values is None:
        # The worst case the issue asks about: the attacker holds a list that covers
        # `overlap` of the agency's people, filled up with other (synthetic) people.
        count = len(values)
        known = rng.permutation(count)[: round(overlap * count)]
        reference = [values[i] for i in known]
        truth = np.full(count, -1)
        truth[known] = np.arange(len(known))
        if len(reference) < count:
            others = _synthetic_identifiers(protocol, max(count, 10), seed + 1, folder / "reference")
            reference += [others[i] for i in rng.permutation(len(others))[: count - len(reference)]]
    else:
        reference = list(reference_values)
        truth = reference_truth if reference_truth is not None else np.full(len(values), -1)
    order = rng.permutation(len(reference))
    position = np.empty(len(reference), dtype=np.int64)
    position[order] = np.arange(len(reference))
    shuffled = [reference[i] for i in order]
    return shuffled, np.where(truth >= 0, position[np.maximum(truth, 0)], -1)


def recommend(
    options: Sequence[OptionRisk],
    *,
    max_reidentified: float = 0.01,
    max_f1_cost: float = 0.005,
    records_with_salt: bool = False,
) -> str | None:
    """The option that meets both goals with the best F1 (then the least risk), or ``None``.

    Args:
        options: the measured options, ``none`` among them for the F1 baseline.
        max_reidentified: the goal for every attack.
        max_f1_cost: the goal for the F1 lost against no hardening.
        records_with_salt: weigh F1 among the records with a salt value only
            (:attr:`OptionRisk.f1_with_salt`), leaving out what salting must lose.

    >>> from linkage.agency.attacks import AttackResult
    >>> none = OptionRisk("none", Hardening(), {"a": AttackResult("a", 0.9, 1, 1)}, 0.99, 0.99)
    >>> salt = OptionRisk("salt", Hardening(salt=("d", "year")), {"a": AttackResult("a", 0.0, 0, 0)}, 0.98, 0.988)
    >>> recommend([none, salt]), recommend([none, salt], records_with_salt=True)
    (None, 'salt')
    """

    def f1_of(option: OptionRisk) -> float | None:
        return option.f1_with_salt if records_with_salt else option.f1

    baseline = next((f1_of(o) for o in options if not o.hardening.active), None)
    fitting = [
        o
        for o in options
        if o.worst < max_reidentified and (baseline is None or f1_of(o) is None or f1_of(o) >= baseline - max_f1_cost)  # type: ignore[operator]
    ]
    if not fitting:
        return None
    return max(fitting, key=lambda o: (f1_of(o) or 0.0, -o.worst)).label


def assess_risk(
    protocol: Protocol,
    secret: bytes,
    input_path: Path,
    *,
    party_id: str | None = None,
    reference_path: Path | None = None,
    options: dict[str, Hardening] | None = None,
    sample: int = 2000,
    overlaps: Sequence[float] = (1.0, 0.5, 0.2),
    quality_people: int | None = 5000,
    seed: int = 1,
    workers: int = 1,
    on_progress: ProgressCallback | None = None,
) -> RiskReport:
    """Attack encodings of an agency's own records under each hardening option.

    Args:
        protocol: the protocol; its own hardening is always among the options.
        secret: the shared secret (the encodings attacked are exactly the agency's).
        input_path: the agency's client CSV.
        party_id: whose columns the CSV has (default: the first party's identifier columns).
        reference_path: the attacker's plaintext list (a CSV with the client id and
            identifier columns; a row whose client id is also in the input is that person).
            Default: the input's own records, ``overlap`` of them, filled up with
            synthetic people.
        options: hardening options by label (default :func:`hardening_options`).
        sample: attack at most this many records (the first of the file).
        overlaps: shares of the attacked records the default reference covers; every
            attack runs at each (graph matching needs a high overlap, Vidanage et al.
            2020, so an agency sees the worst case and the likely one). With
            ``reference_path``, only the given reference's own overlap.
        quality_people: people in the synthetic linkage that measures each option's F1
            (``None``: do not measure).
        seed: for the reference, the synthetic data and the attacker's key.
        workers: processes for the linkage.
        on_progress: called with (steps done, steps).

    Raises:
        InputError: no usable records, or a reference without identifier columns.
    """
    client_ids, values = read_identifiers(protocol, party_id, input_path, limit=sample)
    if len(values) < 10:
        raise InputError(f"{input_path}: only {len(values)} usable records; the check needs at least 10")
    chosen = options or hardening_options(protocol)
    steps = len(chosen) * (2 if quality_people else 1)
    done = 0
    rng = np.random.default_rng(seed)
    attacker_secret = rng.bytes(32)
    with tempfile.TemporaryDirectory(prefix="pprl-risk-") as tmp_name:
        tmp = Path(tmp_name)
        references = []
        if reference_path is not None:
            reference_ids, reference_values = read_identifiers(protocol, party_id, reference_path)
            where = {client: i for i, client in enumerate(reference_ids)}
            given = np.array([where.get(client, -1) for client in client_ids])
            references.append(build_reference(protocol, values, reference_values, given, 1.0, seed, tmp))
        else:
            for number, share in enumerate(sorted(set(overlaps), reverse=True)):
                folder = tmp / f"reference-{number}"
                references.append(build_reference(protocol, values, None, None, share, seed, folder))
        synth_dir = tmp / "synth"
        if quality_people:
            synthesise_population(protocol, quality_people, seed, synth_dir)
        results = []
        for number, (label, hardening) in enumerate(chosen.items()):
            variant = with_hardening(protocol, hardening)
            records = encode_values(variant, secret, values)
            by_overlap = {
                float((truth >= 0).mean()): attack_encodings(
                    variant, records, values, reference, truth, attacker_secret=attacker_secret
                )
                for reference, truth in references
            }
            attacks = next(iter(by_overlap.values()))
            done += 1
            if on_progress:
                on_progress(done, steps)
            quality = None
            if quality_people:
                work = tmp / f"work-{number}"
                work.mkdir()
                quality = linkage_quality(variant, secret, synth_dir, work, workers=workers)
                done += 1
                if on_progress:
                    on_progress(done, steps)
            results.append(
                OptionRisk(
                    label,
                    hardening,
                    attacks,
                    quality.overall.f1 if quality else None,
                    quality.with_salt.f1 if quality else None,
                    by_overlap,
                )
            )
    measured = tuple(float((truth >= 0).mean()) for _, truth in references)
    return RiskReport(
        records=len(values),
        reference_records=len(references[0][0]),
        overlap=measured[0],
        overlaps=measured,
        options=tuple(results),
        current=protocol.hardening.label,
        recommended=recommend(results),
        recommended_with_salt=recommend(results, records_with_salt=True),
        max_reidentified=0.01,
        max_f1_cost=0.005,
    )
