"""Load, validate and fingerprint an information-sharing protocol.

A protocol file (JSON, validated by ``schemas/protocol.schema.json``) says who takes part,
how identifiers are normalised and encoded, how records are matched, which outcome
attributes each party contributes and what may be released. Its fingerprint is the
SHA-256 of the canonical form of everything that affects encodings, so that encodings
made under different settings can never be mixed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from linkage.errors import InputError, ProtocolError

__all__ = [
    "AttributeSpec",
    "BlockingRule",
    "FieldSpec",
    "Hardening",
    "Party",
    "Salt",
    "Protocol",
    "RecordLevelRelease",
    "RejectField",
    "SimilarityRule",
    "attribute_bins",
    "equivalent_delta",
    "Safeguards",
    "load_protocol",
    "parse_protocol",
    "person_rows",
    "with_hardening",
]

STRING_KINDS = frozenset({"name", "text", "code"})
TRANSFORMS_BY_KIND: Mapping[str, frozenset[str]] = {
    "name": frozenset({"soundex", "initial", "first3"}),
    "text": frozenset({"soundex", "initial", "first3"}),
    "code": frozenset({"initial", "first3"}),
    "date": frozenset({"year", "month_day"}),
    "category": frozenset(),
}


@dataclass(frozen=True)
class FieldSpec:
    """One identifier column and how it is normalised and encoded."""

    name: str
    kind: str
    max_length: int
    clk_bits_per_token: int
    num_bits: int | None = None
    bits_per_token: int | None = None
    categories: tuple[str, ...] = ()
    placeholder_days: tuple[str, ...] = ()

    def on_placeholder_day(self, date: dt.date) -> bool:
        """Whether a date falls on a day that stands for an unknown day and month (then only its year counts).

        >>> FieldSpec("dob", "date", 100, 10, placeholder_days=("01-01",)).on_placeholder_day(dt.date(1982, 1, 1))
        True
        """
        return f"{date.month:02d}-{date.day:02d}" in self.placeholder_days


Salt = tuple[str, str | None]


@dataclass(frozen=True)
class Hardening:
    """How the Bloom filters the linkage service sees are hardened (all off: plain clkhash).

    Attributes:
        salt: ``(field, transform)`` whose value salts the tokens of every other field,
            or ``None``.
        also_salt: further salts: every salted field is encoded once more per salt, and a
            pair is compared under the first salt (``salt``, then these) that both of its
            records share.
        balance: build at half length, append the complement, permute with a key.
        xor_fold: build at twice the length and XOR the halves.
        diffusion: taps of the linear diffusion layer (each output bit the XOR of this
            many keyed input bits), or ``None``.
        apply_to: ``"clk"``, ``"fields"`` or both.
        fallback: ``"clk"``: the record-level CLK is left unsalted (its other steps
            still apply) and compared for pairs that share no salt; ``None``: not compared.
    """

    salt: Salt | None = None
    also_salt: tuple[Salt, ...] = ()
    balance: bool = False
    xor_fold: bool = False
    diffusion: int | None = None
    apply_to: frozenset[str] = frozenset({"clk", "fields"})
    fallback: str | None = None

    @property
    def salts(self) -> tuple[Salt, ...]:
        """Every salt, in the order pairs are compared under them."""
        return ((self.salt,) if self.salt else ()) + self.also_salt

    @property
    def active(self) -> bool:
        """Whether any hardening step is on."""
        return bool(self.salt or self.balance or self.xor_fold or self.diffusion)

    def applies_to(self, target: str) -> bool:
        """Whether the steps apply to ``"clk"`` or ``"fields"``."""
        return self.active and target in self.apply_to

    def salts_target(self, target: str) -> bool:
        """Whether the salt applies to ``"clk"`` or ``"fields"`` (a CLK fallback is unsalted)."""
        if not self.salt or not self.applies_to(target):
            return False
        return not (target == "clk" and self.fallback == "clk")

    def settings(self) -> dict[str, Any]:
        """The hardening as protocol JSON (empty when off).

        >>> Hardening(salt=("date_of_birth", "year"), diffusion=4).settings()["salt"]
        'date_of_birth:year'
        >>> Hardening(salt=("d", "year"), also_salt=(("d", "month_day"),)).settings()["salt"]
        ['d:year', 'd:month_day']
        """
        if not self.active:
            return {}
        out: dict[str, Any] = {}
        if self.salt:
            names = [f"{field}:{transform}" if transform else field for field, transform in self.salts]
            out["salt"] = names[0] if len(names) == 1 else names
        if self.balance:
            out["balance"] = True
        if self.xor_fold:
            out["xor_fold"] = True
        if self.diffusion:
            out["diffusion"] = self.diffusion
        out["apply_to"] = sorted(self.apply_to)
        if self.fallback:
            out["fallback"] = self.fallback
        return out

    @property
    def label(self) -> str:
        """A short name, e.g. ``salt+diffusion4``, ``salt2+diffusion4+clk_fallback`` or ``none``."""
        parts = []
        if self.salt:
            parts.append("salt" if not self.also_salt else f"salt{len(self.salts)}")
        if self.balance:
            parts.append("balance")
        if self.xor_fold:
            parts.append("xor_fold")
        if self.diffusion:
            parts.append(f"diffusion{self.diffusion}")
        if self.fallback:
            parts.append(f"{self.fallback}_fallback")
        if parts and self.apply_to != frozenset({"clk", "fields"}):
            parts.append("(" + "+".join(sorted(self.apply_to)) + " only)")
        return "+".join(parts) or "none"


@dataclass(frozen=True)
class AttributeSpec:
    """An outcome attribute that parties may contribute to the statistics side."""

    name: str
    type: str
    combine: str
    categories: tuple[str, ...] = ()
    lower: int | None = None
    upper: int | None = None


@dataclass(frozen=True)
class Party:
    """A party to the protocol and the attributes it contributes."""

    id: str
    name: str
    mandate: str
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class BlockingRule:
    """A conjunction of (field, transform) parts; records agreeing on all share a block."""

    parts: tuple[tuple[str, str | None], ...]

    @property
    def name(self) -> str:
        """The rule as written in the protocol, e.g. ``surname:soundex+given_name:initial``."""
        return "+".join(f"{f}:{t}" if t else f for f, t in self.parts)

    @property
    def fields(self) -> frozenset[str]:
        """The fields the rule's key is made from."""
        return frozenset(field for field, _ in self.parts)

    @property
    def columns(self) -> int:
        """Block key columns the rule takes in an encodings record: one."""
        return 1


@dataclass(frozen=True)
class SimilarityRule:
    """Locality-sensitive blocking: records whose tokens are alike share a band key, with a known chance.

    The tokens are the fields' n-grams (as their Bloom filters hash them). A record's
    MinHash signature holds ``bands * hashes_per_band`` keyed minimum hashes of its
    tokens; each band's key is a keyed hash of ``hashes_per_band`` of them. Two records
    whose token sets have Jaccard similarity J (Dice D = 2J / (1 + J)) share a given band
    with chance J ** hashes_per_band, and at least one band with chance
    1 - (1 - J ** hashes_per_band) ** bands (see docs/blocking.md).

    Attributes:
        groups: the fields, in groups; the fields of one group pool their tokens (a given
            name and a surname that get swapped), each group's tokens are its own.
        bands: band keys per record (block key columns).
        hashes_per_band: minimum hashes each band key is made of.
        max_block_pairs: a band block with more pairs than this is skipped. Records that
            are alike share a band in small blocks; a big one comes from tokens most
            records hold (a street type, say) ranking low under every hash function of
            the band, and finds little that other bands do not. Not in the fingerprint.
    """

    groups: tuple[tuple[str, ...], ...]
    bands: int
    hashes_per_band: int
    max_block_pairs: int = 30

    @property
    def name(self) -> str:
        """A canonical name with every parameter, e.g. ``similarity:given_name|surname+address:20x5``."""
        fields = "+".join("|".join(group) for group in self.groups)
        return f"similarity:{fields}:{self.bands}x{self.hashes_per_band}"

    @property
    def fields(self) -> frozenset[str]:
        """Every field whose tokens the signature is made from."""
        return frozenset(field for group in self.groups for field in group)

    @property
    def columns(self) -> int:
        """Block key columns the rule takes in an encodings record: one per band."""
        return self.bands

    def band_chance(self, dice: float) -> float:
        """The chance that two records whose token sets have this Dice share at least one band key.

        >>> round(SimilarityRule((("surname",),), 20, 5).band_chance(0.8), 4)
        0.9406
        """
        jaccard = dice / (2.0 - dice)
        return float(1.0 - (1.0 - jaccard**self.hashes_per_band) ** self.bands)


Rule = BlockingRule | SimilarityRule


@dataclass(frozen=True)
class RecordLevelRelease:
    """What record-level results one party may receive."""

    allowed: bool
    serious_threat: bool


@dataclass(frozen=True)
class Safeguards:
    """Limits on repeated runs and on the serious-threat exception (``releases.safeguards``).

    Attributes:
        max_runs_per_party: runs each party may start in the project (or per period).
        run_period_days: count runs over this many days instead (``None``: the project's life).
        serious_threat_max_tokens: the most tokens one serious-threat request may name.
        serious_threat_approval: every serious-threat request waits for the administrator.
        serious_threat_tokens_per_30_days: how many tokens a party may have released under
            the exception without approval in any 30 days; a request that would pass it
            waits for the administrator, as under ``serious_threat_approval``.
        upload_retention_days: a party's upload not refreshed for this many days expires
            (`pprl project expire` erases it); ``None``: uploads are kept until erased.
    """

    max_runs_per_party: int = 3
    run_period_days: int | None = None
    serious_threat_max_tokens: int = 5
    serious_threat_approval: bool = False
    serious_threat_tokens_per_30_days: int = 10
    upload_retention_days: int | None = None

    @classmethod
    def from_json(cls, settings: Mapping[str, Any]) -> Safeguards:
        """The safeguards a protocol declares, with defaults for what it leaves out.

        >>> Safeguards.from_json({"serious_threat_approval": True}).serious_threat_max_tokens
        5
        """
        return cls(**{key: settings[key] for key in settings})


@dataclass(frozen=True)
class Protocol:
    """A validated protocol. Build it with :func:`load_protocol` or :func:`parse_protocol`."""

    name: str
    purpose: str
    parties: tuple[Party, ...]
    client_id_column: str
    consent_column: str
    fields: tuple[FieldSpec, ...]
    clk_bits: int
    ngram: int
    hardening: Hardening
    blocking: tuple[Rule, ...]
    max_block_pairs: int
    comparison_groups: tuple[tuple[str, ...], ...]
    clk_prefilter: float | None
    reject_when_different: tuple[tuple[RejectField, ...], ...]
    threshold: float | None
    dedupe_threshold: float | None
    attributes: tuple[AttributeSpec, ...]
    budget: Mapping[str, float]
    record_level: Mapping[str, RecordLevelRelease]
    output_rules: Mapping[str, int]
    rows_per_person: int
    safeguards: Safeguards
    document: Mapping[str, Any]
    fingerprint: str
    # Two name fields whose own filters share a key, so that a pair is compared crossed too
    # (``identifiers.swapped_names``); empty when not declared.
    swapped_names: tuple[str, ...] = ()

    @property
    def block_limits(self) -> tuple[int, ...]:
        """Per block key column, the most pairs a block may make before it is skipped.

        ``max_block_pairs`` for an exact rule's column; a similarity rule's own limit for
        each of its bands.
        """
        return tuple(
            limit
            for rule in self.blocking
            for limit in [rule.max_block_pairs if isinstance(rule, SimilarityRule) else self.max_block_pairs]
            * rule.columns
        )

    @property
    def band_columns(self) -> tuple[bool, ...]:
        """Per block key column, whether it is a band of a similarity rule."""
        return tuple(isinstance(rule, SimilarityRule) for rule in self.blocking for _ in range(rule.columns))

    def party(self, party_id: str) -> Party:
        """Return the party with this id.

        Raises:
            InputError: no such party; the message lists the known ones.
        """
        for party in self.parties:
            if party.id == party_id:
                return party
        known = ", ".join(p.id for p in self.parties)
        raise InputError(
            f"unknown party {party_id!r}: protocol {self.name!r} has parties {known}; pass one of them with --party"
        )

    def attribute(self, name: str) -> AttributeSpec:
        """Return the attribute declared under this name."""
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise KeyError(name)

    def field(self, name: str) -> FieldSpec:
        """Return the identifier field declared under this name."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def columns_for(self, party_id: str) -> tuple[str, ...]:
        """The CSV columns a party's client file must have, in protocol order."""
        party = self.party(party_id)
        return (
            self.client_id_column,
            *(f.name for f in self.fields),
            self.consent_column,
            *party.attributes,
        )


def _schema() -> dict[str, Any]:
    text = resources.files("schemas").joinpath("protocol.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file.

    Args:
        path: the protocol JSON file.

    Returns:
        The validated protocol with its fingerprint.

    Raises:
        ProtocolError: the file is not JSON or breaks the schema; every problem is listed
            with its JSON path.
    """
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise ProtocolError(f"{path}: protocol file not found", path=str(path)) from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise ProtocolError(f"{path}: cannot read the protocol ({exc}); save it as UTF-8 JSON", path=str(path)) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"{path} line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})",
            path=str(path),
            line=exc.lineno,
        ) from exc
    try:
        return parse_protocol(document)
    except ProtocolError as exc:
        raise ProtocolError(f"{path}: {exc.message}", path=str(path), problems=exc.problems) from exc


def parse_protocol(document: Any) -> Protocol:
    """Validate a parsed protocol document and build a :class:`Protocol`.

    Args:
        document: the JSON document, as parsed.

    Returns:
        The validated protocol.

    Raises:
        ProtocolError: listing every schema or consistency problem with its JSON path.

    >>> import json
    >>> from importlib import resources
    >>> text = resources.files("schemas").joinpath("examples/social_services.json").read_text()
    >>> protocol = parse_protocol(json.loads(text))
    >>> [p.id for p in protocol.parties]
    ['msd', 'police', 'haven']
    """
    import jsonschema  # a tenth of a second: `pprl encode` reads its input meanwhile (see cli.main)

    validator = jsonschema.Draft202012Validator(_schema())
    problems = [
        f"{error.json_path}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: e.json_path)
    ]
    if problems:
        raise ProtocolError("the protocol breaks its schema", problems=problems)
    problems = _consistency_problems(document)
    if problems:
        raise ProtocolError("the protocol is inconsistent", problems=problems)
    return _build(document)


def _swapped_names_problems(identifiers: Mapping[str, Any]) -> list[str]:
    """Swapped names must be two name fields whose own filters have the same length and bits per token."""
    names = identifiers.get("swapped_names", ())
    specs = {f["name"]: f for f in identifiers["fields"]}
    problems = [
        f"$.identifiers.swapped_names: {name!r} is not a name field"
        for name in names
        if name not in specs or specs[name]["kind"] != "name"
    ]
    if not problems and names:
        shapes = {(specs[name].get("num_bits"), specs[name].get("bits_per_token")) for name in names}
        if len(shapes) > 1:
            problems.append(
                f"$.identifiers.swapped_names: {' and '.join(names)} need the same num_bits and bits_per_token"
                " (their filters are compared with each other)"
            )
    return problems


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]


def _consistency_problems(doc: Mapping[str, Any]) -> list[str]:
    """Checks a JSON Schema cannot express: references between sections."""
    problems: list[str] = []
    party_ids = [p["id"] for p in doc["parties"]]
    field_kinds = {f["name"]: f["kind"] for f in doc["identifiers"]["fields"]}
    attribute_names = [a["name"] for a in doc["attributes"]]
    problems += [f"$.parties: party id {d!r} is used twice" for d in _duplicates(party_ids)]
    for i, spec in enumerate(doc["identifiers"]["fields"]):
        for k, day in enumerate(spec.get("placeholder_days", ())):
            where = f"$.identifiers.fields[{i}].placeholder_days"
            if spec["kind"] != "date":
                problems.append(f"{where}: only a date field has placeholder days ({spec['name']} is a {spec['kind']})")
                break
            try:
                dt.date(2000, int(day[:2]), int(day[3:]))  # a leap year: 02-29 is a day
            except ValueError:
                problems.append(f"{where}[{k}]: {day} is no day of the year; write MM-DD, e.g. 01-01")
    problems += _swapped_names_problems(doc["identifiers"])
    problems += [
        f"$.identifiers.fields: field {d!r} is declared twice"
        for d in _duplicates([f["name"] for f in doc["identifiers"]["fields"]])
    ]
    problems += [f"$.attributes: attribute {d!r} is declared twice" for d in _duplicates(attribute_names)]
    reserved = {doc["identifiers"]["client_id_column"], doc["identifiers"]["consent_column"]}
    for name in sorted((set(field_kinds) | set(attribute_names)) & reserved):
        problems.append(f"$: {name!r} is the client id or consent column and cannot be a field or attribute")
    for name in sorted(set(field_kinds) & set(attribute_names)):
        problems.append(f"$: {name!r} is both an identifier field and an outcome attribute")
    for i, party in enumerate(doc["parties"]):
        for j, name in enumerate(party["attributes"]):
            if name not in attribute_names:
                problems.append(f"$.parties[{i}].attributes[{j}]: attribute {name!r} is not declared in $.attributes")
    for i, attribute in enumerate(doc["attributes"]):
        if attribute["type"] == "integer" and attribute["lower"] >= attribute["upper"]:
            problems.append(f"$.attributes[{i}]: lower must be below upper")
        if attribute["type"] != "categorical" and "categories" in attribute:
            problems.append(f"$.attributes[{i}]: categories are only for type categorical")
        if attribute["type"] == "boolean" and attribute["combine"] not in ("any", "first"):
            problems.append(f"$.attributes[{i}]: a boolean combines with 'any' or 'first'")
        if attribute["type"] == "categorical" and attribute["combine"] != "first":
            problems.append(f"$.attributes[{i}]: a categorical attribute combines with 'first'")
    for i, rule in enumerate(doc["matching"]["blocking"]):
        if isinstance(rule, dict):
            problems += _similarity_problems(rule["similarity"], f"$.matching.blocking[{i}].similarity", field_kinds)
            continue
        for j, part in enumerate(rule):
            field, _, transform = part.partition(":")
            where = f"$.matching.blocking[{i}][{j}]"
            if field not in field_kinds:
                problems.append(f"{where}: field {field!r} is not an identifier field")
            elif transform and transform not in TRANSFORMS_BY_KIND[field_kinds[field]]:
                allowed = ", ".join(sorted(TRANSFORMS_BY_KIND[field_kinds[field]])) or "none"
                problems.append(
                    f"{where}: transform {transform!r} does not apply to a {field_kinds[field]} "
                    f"field (allowed: {allowed})"
                )
    hardening = doc["encoding"].get("hardening", {})
    for where, salt in _salt_entries(hardening.get("salt")):
        field, _, transform = salt.partition(":")
        if field not in field_kinds:
            problems.append(
                f"{where}: field {field!r} is not an identifier field; salt with a stable field such as "
                "date_of_birth:year"
            )
        elif transform and transform not in TRANSFORMS_BY_KIND[field_kinds[field]]:
            allowed = ", ".join(sorted(TRANSFORMS_BY_KIND[field_kinds[field]])) or "none"
            problems.append(
                f"{where}: transform {transform!r} does not apply to a {field_kinds[field]} field (allowed: {allowed})"
            )
        # The service must tell which pairs share a salt, from the keyed hashes it sees; and
        # within a whole date of birth, random pairs are mostly the same person.
        elif field_kinds[field] not in ("date", "category") or (field_kinds[field] == "date" and not transform):
            problems.append(
                f"{where}: salt with a part of a date (e.g. date_of_birth:year or :month_day) or a "
                f"category field, not {salt!r}"
            )
    salt_fields = {salt.partition(":")[0] for _, salt in _salt_entries(hardening.get("salt"))}
    if len(salt_fields) > 1:
        problems.append(
            "$.encoding.hardening.salt: every salt must be a part of the same field (e.g. date_of_birth:year "
            "and date_of_birth:month_day), so that one field stays unsalted as the one the others are cut from"
        )
    if hardening.get("fallback") and not hardening.get("salt"):
        problems.append("$.encoding.hardening.fallback: a fallback is for pairs that share no salt; set a salt too")
    if hardening.get("fallback") == "clk" and "clk" not in hardening.get("apply_to", ("clk", "fields")):
        problems.append(
            "$.encoding.hardening.fallback: a CLK fallback must be hardened; add 'clk' to apply_to, or it "
            "would be a plain CLK every pair can be attacked through"
        )
    problems += _salted_groups(doc, field_kinds)
    grouped: list[str] = []
    for i, group in enumerate(doc["matching"].get("comparison_groups", ())):
        for j, name in enumerate(group):
            if name not in field_kinds:
                problems.append(f"$.matching.comparison_groups[{i}][{j}]: {name!r} is not an identifier field")
            elif name in grouped:
                problems.append(f"$.matching.comparison_groups[{i}][{j}]: {name!r} is already in another group")
            grouped.append(name)
    problems += _reject_problems(doc["matching"].get("reject_when_different", ()), field_kinds)
    problems += _privacy_unit_problems(doc)
    record_level = doc["releases"]["record_level"]
    mandates = {p["id"]: p["mandate"] for p in doc["parties"]}
    for party_id in sorted(set(record_level) - set(party_ids)):
        problems.append(f"$.releases.record_level: {party_id!r} is not a party")
    for party_id in party_ids:
        if party_id not in record_level:
            problems.append(
                f"$.releases.record_level: party {party_id!r} is missing; say whether it may "
                "receive record-level results"
            )
        elif record_level[party_id]["serious_threat"] and mandates[party_id] != "public_safety":
            problems.append(
                f"$.releases.record_level.{party_id}.serious_threat: only a public_safety "
                "mandate may invoke the serious-threat exception"
            )
    problems += _statistics_problems(doc)
    return problems


def _similarity_problems(rule: Mapping[str, Any], where: str, field_kinds: Mapping[str, str]) -> list[str]:
    """A similarity rule's fields must be identifier fields, each named once."""
    problems: list[str] = []
    seen: list[str] = []
    for i, group in enumerate(rule["fields"]):
        for j, name in enumerate([group] if isinstance(group, str) else group):
            at = f"{where}.fields[{i}]" + ("" if isinstance(group, str) else f"[{j}]")
            if name not in field_kinds:
                problems.append(f"{at}: field {name!r} is not an identifier field")
            elif name in seen:
                problems.append(f"{at}: field {name!r} is named twice; name each field once")
            seen.append(name)
    return problems


def _blocking_rule(rule: Any) -> Rule:
    """A rule as the protocol writes it: a list of FIELD[:TRANSFORM] parts, or ``{"similarity": {...}}``."""
    if isinstance(rule, dict):
        settings = rule["similarity"]
        return SimilarityRule(
            groups=tuple((group,) if isinstance(group, str) else tuple(group) for group in settings["fields"]),
            bands=settings["bands"],
            hashes_per_band=settings["hashes_per_band"],
            max_block_pairs=settings.get("max_block_pairs", SimilarityRule.max_block_pairs),
        )
    return BlockingRule(tuple((p.partition(":")[0], p.partition(":")[2] or None) for p in rule))


def _salt_entries(salt: str | list[str] | None) -> list[tuple[str, str]]:
    """``(JSON path, salt)`` of each salt written in the protocol (one string or a list)."""
    if salt is None:
        return []
    if isinstance(salt, str):
        return [("$.encoding.hardening.salt", salt)]
    return [(f"$.encoding.hardening.salt[{i}]", item) for i, item in enumerate(salt)]


# -- the privacy unit (issue 16): how many rows of the statistics table one person can move ----------


def person_rows(parties: int) -> int:
    """The most rows of the statistics table one person can move: the square of the parties.

    The statistics side's entities come from a frozen model and the stable mapping
    (:mod:`linkage.matching.stable`): a person with at most one record per party has
    records in at most P clusters, and taking them away moves at most P rows of each (when
    no cluster holds two records of one party). ``releases.rows_per_person`` defaults to
    this, and every release is calibrated at that many rows (``docs/privacy-unit.md``).

    >>> person_rows(3)
    9
    """
    return parties * parties


def _privacy_unit_problems(doc: Mapping[str, Any]) -> list[str]:
    """A ``rows_per_person`` below what the linkage lets one person move would make every release's claim false."""
    declared = doc["releases"].get("rows_per_person")
    least = person_rows(len(doc["parties"]))
    if declared is None or declared >= least:
        return []
    return [
        f"$.releases.rows_per_person: {declared} is below the {least} rows one person can move in the statistics "
        f"table of {len(doc['parties'])} parties (docs/privacy-unit.md); omit it (the default is {least}) or raise it"
    ]


# -----------------------------------------------------------------------------------------------------


def _salted_groups(doc: Mapping[str, Any], field_kinds: Mapping[str, str]) -> list[str]:
    """Comparison groups that would mix salted fields with unsalted ones (one joint level can't)."""
    hardening = doc["encoding"].get("hardening", {})
    entries = _salt_entries(hardening.get("salt"))
    salt_field = entries[0][1].partition(":")[0] if entries else ""
    if not salt_field or "fields" not in hardening.get("apply_to", ("fields",)):
        return []
    problems = []
    for i, group in enumerate(doc["matching"].get("comparison_groups", ())):
        salted = {field_kinds.get(name) in STRING_KINDS and name != salt_field for name in group}
        if len(salted) > 1:
            problems.append(
                f"$.matching.comparison_groups[{i}]: mixes fields salted with {salt_field!r} (names, texts, "
                "codes) and unsalted ones (dates, categories, the salt field); group only one sort"
            )
    return problems


PARTLY = "partly"


@dataclass(frozen=True)
class RejectField:
    """One field of a ``matching.reject_when_different`` rule.

    Attributes:
        name: the identifier field.
        partly: written ``name:partly``: the field also counts as different where it
            agrees only in part (its first level above "different").
    """

    name: str
    partly: bool = False

    @classmethod
    def parse(cls, entry: str) -> RejectField:
        """An entry as the protocol writes it, ``"name"`` or ``"name:partly"`` (checked by :func:`_reject_problems`).

        >>> RejectField.parse("date_of_birth:partly")
        RejectField(name='date_of_birth', partly=True)
        """
        name, _, part = entry.partition(":")
        return cls(name, part == PARTLY)


def reject_rules(value: Sequence[Any]) -> tuple[tuple[str, ...], ...]:
    """``matching.reject_when_different`` as rules of entries: one list of fields is one rule, a list of lists several.

    >>> reject_rules(["given_name", "date_of_birth"])
    (('given_name', 'date_of_birth'),)
    >>> reject_rules([["given_name", "date_of_birth:partly"], ["given_name", "sex"]])
    (('given_name', 'date_of_birth:partly'), ('given_name', 'sex'))
    """
    if not value:
        return ()
    if all(isinstance(entry, str) for entry in value):
        return (tuple(value),)
    return tuple(tuple(rule) for rule in value)


def _reject_problems(value: Sequence[Any], field_kinds: Mapping[str, str]) -> list[str]:
    """Rules of ``reject_when_different`` that name no identifier field, or a field ``:partly`` cannot apply to."""
    flat = all(isinstance(entry, str) for entry in value)
    if not flat and any(isinstance(entry, str) for entry in value):
        return [
            "$.matching.reject_when_different: mixes field names and lists of them; write one rule as a list "
            'of fields, or several as a list of lists: [["given_name", "date_of_birth"], ["given_name", "sex"]]'
        ]
    problems = []
    for i, rule in enumerate(reject_rules(value)):
        for j, entry in enumerate(rule):
            where = f"$.matching.reject_when_different[{j}]" if flat else f"$.matching.reject_when_different[{i}][{j}]"
            name, _, part = entry.partition(":")
            if name not in field_kinds:
                problems.append(f"{where}: {name!r} is not an identifier field")
            elif part and part != PARTLY:
                problems.append(f"{where}: {entry!r}: write the field alone, or {name + ':' + PARTLY!r}")
            elif part and field_kinds[name] == "category":
                problems.append(f"{where}: a category is equal or not; {name!r} cannot be partly the same")
        if len(rule) < 2:
            where = "$.matching.reject_when_different" + ("" if flat else f"[{i}]")
            problems.append(f"{where}: a rule needs two fields or more (one field different alone rejects no pair)")
    return problems


def _hardening(settings: Mapping[str, Any]) -> Hardening:
    salts: list[Salt] = [
        (salt.partition(":")[0], salt.partition(":")[2] or None) for _, salt in _salt_entries(settings.get("salt"))
    ]
    return Hardening(
        salt=salts[0] if salts else None,
        also_salt=tuple(salts[1:]),
        balance=settings.get("balance", False),
        xor_fold=settings.get("xor_fold", False),
        diffusion=settings.get("diffusion"),
        apply_to=frozenset(settings.get("apply_to", ("clk", "fields"))),
        fallback=settings.get("fallback"),
    )


def _build(doc: Mapping[str, Any]) -> Protocol:
    fields = tuple(
        FieldSpec(
            name=f["name"],
            kind=f["kind"],
            max_length=f.get("max_length", 100),
            clk_bits_per_token=f["clk_bits_per_token"],
            num_bits=f.get("num_bits") if f["kind"] in STRING_KINDS else None,
            bits_per_token=f.get("bits_per_token") if f["kind"] in STRING_KINDS else None,
            categories=tuple(f.get("categories", ())),
            placeholder_days=tuple(f.get("placeholder_days", ())),
        )
        for f in doc["identifiers"]["fields"]
    )
    blocking = tuple(_blocking_rule(rule) for rule in doc["matching"]["blocking"])
    threshold = doc["matching"]["threshold"]
    protocol = Protocol(
        name=doc["name"],
        purpose=doc["purpose"],
        parties=tuple(Party(p["id"], p["name"], p["mandate"], tuple(p["attributes"])) for p in doc["parties"]),
        client_id_column=doc["identifiers"]["client_id_column"],
        consent_column=doc["identifiers"]["consent_column"],
        fields=fields,
        clk_bits=doc["encoding"]["clk_bits"],
        ngram=doc["encoding"].get("ngram", 2),
        hardening=_hardening(doc["encoding"].get("hardening", {})),
        blocking=blocking,
        max_block_pairs=doc["matching"].get("max_block_pairs", 1_000_000),
        clk_prefilter=doc["matching"].get("clk_prefilter"),
        comparison_groups=tuple(tuple(group) for group in doc["matching"].get("comparison_groups", ())),
        reject_when_different=tuple(
            tuple(RejectField.parse(entry) for entry in rule)
            for rule in reject_rules(doc["matching"].get("reject_when_different", ()))
        ),
        threshold=None if threshold == "auto" else float(threshold),
        dedupe_threshold=doc["matching"].get("dedupe_threshold"),
        attributes=tuple(
            AttributeSpec(
                name=a["name"],
                type=a["type"],
                combine=a["combine"],
                categories=tuple(a.get("categories", ())),
                lower=a.get("lower"),
                upper=a.get("upper"),
            )
            for a in doc["attributes"]
        ),
        budget=dict(doc["releases"]["budget"]),
        record_level={
            k: RecordLevelRelease(v["allowed"], v["serious_threat"]) for k, v in doc["releases"]["record_level"].items()
        },
        output_rules=dict(doc["releases"].get("output_rules", {})),
        rows_per_person=int(doc["releases"].get("rows_per_person", person_rows(len(doc["parties"])))),
        safeguards=Safeguards.from_json(doc["releases"].get("safeguards", {})),
        document=doc,
        fingerprint="",
        swapped_names=tuple(doc["identifiers"].get("swapped_names", ())),
    )
    return _with_fingerprint(protocol)


def encoding_settings(protocol: Protocol) -> dict[str, Any]:
    """Everything that affects encodings, with defaults filled in, as plain JSON values."""
    settings: dict[str, Any] = {
        "protocol_version": 1,
        "client_id_column": protocol.client_id_column,
        "fields": [
            {
                "name": f.name,
                "kind": f.kind,
                "max_length": f.max_length,
                "clk_bits_per_token": f.clk_bits_per_token,
                "num_bits": f.num_bits,
                "bits_per_token": f.bits_per_token,
                "categories": list(f.categories),
                # Only when declared, so that other protocols keep the fingerprints they always had.
                **({"placeholder_days": sorted(f.placeholder_days)} if f.placeholder_days else {}),
            }
            for f in protocol.fields
        ],
        "clk_bits": protocol.clk_bits,
        "ngram": protocol.ngram,
        "blocking": [rule.name for rule in protocol.blocking],
    }
    if protocol.swapped_names:
        # Only when declared, so that other protocols keep the fingerprints they always had.
        settings["swapped_names"] = list(protocol.swapped_names)
    if protocol.hardening.active:
        # Only when on, so that unhardened protocols keep the fingerprints they always had.
        settings["hardening"] = protocol.hardening.settings()
        if protocol.hardening.salt:
            # Salted tokens are hashed with keyed 64-bit mixing since version 2 (before: one
            # BLAKE2 per token and salt): encodings of either kind must never be mixed.
            settings["hardening"]["salted_hashing"] = 2
    return settings


def matching_digest(protocol: Protocol) -> str:
    """The SHA-256 of the protocol's ``matching`` section as written (keys sorted).

    Not part of the fingerprint (matching settings do not change encodings), but a frozen
    model keeps it: its m, u and threshold were fitted under these settings, and a pair is
    decided by them too (which fields may not all differ, the stricter threshold within a
    party), so a model is not reused under other ones (:mod:`linkage.matching.frozen`).
    """
    return _digest(protocol.document.get("matching", {}))


def with_hardening(protocol: Protocol, hardening: Hardening) -> Protocol:
    """The same protocol under another hardening (validated, with its own fingerprint).

    Raises:
        ProtocolError: the hardening does not fit the protocol (e.g. an unknown salt field).
    """
    document = json.loads(json.dumps(protocol.document))
    encoding = document["encoding"]
    encoding.pop("hardening", None)
    if hardening.active:
        encoding["hardening"] = hardening.settings()
    return parse_protocol(document)


def _with_fingerprint(protocol: Protocol) -> Protocol:
    object.__setattr__(protocol, "fingerprint", _digest(encoding_settings(protocol)))
    return protocol


def _digest(value: Any) -> str:
    """The SHA-256 of ``value``'s canonical JSON (keys sorted, no spaces, UTF-8)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- statistics releases: declared bins of integer attributes, and the δ shown next to a ρ --
# (issue 16; read by the statistics side, which keeps everything else about releases)

DEFAULT_EQUIVALENT_DELTA = 1e-6


def _statistics_problems(doc: Mapping[str, Any]) -> list[str]:
    """Declared bins must be whole numbers that start at the attribute's lower bound and rise within its bounds."""
    problems = []
    for i, attribute in enumerate(doc["attributes"]):
        bins = attribute.get("bins")
        if bins is None:
            continue
        where = f"$.attributes[{i}].bins"
        if attribute["type"] != "integer":
            problems.append(f"{where}: only an integer attribute has bins")
            continue
        lower, upper = attribute["lower"], attribute["upper"]
        if bins[0] != lower:
            problems.append(f"{where}: bins are lower edges and start at the lower bound {lower}, not {bins[0]}")
        if any(later <= earlier for earlier, later in zip(bins, bins[1:], strict=False)):
            problems.append(f"{where}: the lower edges must rise, e.g. [{lower}, {lower + 10}, {lower + 20}]")
        if bins[-1] > upper:
            problems.append(f"{where}: edge {bins[-1]} is above the upper bound {upper}")
    return problems


def attribute_bins(protocol: Protocol, name: str) -> tuple[int, ...]:
    """The lower edges of the bins the protocol declares for an integer attribute (empty if none).

    >>> import json
    >>> from importlib import resources
    >>> text = resources.files("schemas").joinpath("examples/social_services.json").read_text()
    >>> attribute_bins(parse_protocol(json.loads(text)), "weeks_supported")
    (0, 13, 26, 39)
    """
    for attribute in protocol.document["attributes"]:
        if attribute["name"] == name:
            return tuple(attribute.get("bins", ()))
    return ()


def equivalent_delta(protocol: Protocol) -> float:
    """The δ at which the statistics side also shows a ρ spend as (ε, δ) (default 1e-6)."""
    return float(protocol.document["releases"].get("equivalent_delta", DEFAULT_EQUIVALENT_DELTA))
