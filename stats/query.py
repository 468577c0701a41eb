"""The query language of the statistics side: parse, check against the protocol, print back.

A query is one statistic over the entity table (one row per person), optionally grouped and
filtered, with the privacy loss it may spend::

    count --by region --where member:police,msd --rho 0.05
    mean housed_within_90_days --where member:haven --by member:police --rho 0.1
    sum weeks_supported --where benefit_type=jobseeker --rho 0.05
    quantile months_in_nz --q 0.5 --where member:haven --rho 0.05
    overlap --rho 0.1

Kinds: ``count``; ``sum`` and ``mean`` of a bounded attribute (an integer attribute, or a
boolean counted as 0/1, so the mean of a boolean is a share); ``quantile`` of an integer
attribute; ``overlap``, the number of people known to each combination of parties.

Columns, for ``--by`` and ``--where``: an outcome attribute of the protocol; ``member:PARTY``
(true when the person is known to that party); ``shared`` (true when known to two or more
parties). Grouping keys always come from the protocol (declared categories, true/false), never
from the data, so that a key can never reveal that someone exists.

Conditions: ``COLUMN=V1,V2`` (one of the values), ``COLUMN>=N`` and ``COLUMN<=N`` (integer
attributes), and the shorthands ``member:A,B`` (known to A and to B) and ``nonmember:A``.
The same strings make up the JSON form: ``{"kind": "count", "by": ["region"],
"where": ["member:police,msd"], "cost": {"rho": 0.05}}``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from linkage.errors import InputError
from linkage.protocol import Protocol
from stats.budget import Loss

__all__ = [
    "KINDS",
    "Column",
    "Condition",
    "QuerySpec",
    "column_of",
    "load_query_document",
    "parse_query",
    "parse_query_json",
    "query_file",
    "read_query",
]

KINDS = ("count", "sum", "mean", "quantile", "overlap")
NEEDS_ATTRIBUTE = frozenset({"sum", "mean", "quantile"})
QUERY_FILES = (".json", ".yaml", ".yml")
_CONDITION = re.compile(r"^(?P<column>[^=<>]+?)\s*(?P<op>>=|<=|=)\s*(?P<values>.*)$")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


@dataclass(frozen=True)
class Column:
    """A column of the entity table as the query language sees it.

    ``type`` is ``categorical``, ``boolean`` or ``integer``; ``keys`` are the public group
    keys (``None`` is "not recorded", a key of every attribute a party may leave blank).
    """

    name: str
    type: str
    keys: tuple[str | bool | None, ...]
    lower: int | None = None
    upper: int | None = None


def column_of(protocol: Protocol, name: str) -> Column:
    """Resolve a column name against the protocol.

    Raises:
        InputError: no such attribute or party; the message lists what exists.
    """
    if name == "shared":
        return Column("shared", "boolean", (True, False))
    if name.startswith("member:"):
        party = name.removeprefix("member:")
        if party not in {p.id for p in protocol.parties}:
            known = ", ".join(f"member:{p.id}" for p in protocol.parties)
            raise InputError(f"{name!r}: {party!r} is not a party of the protocol; use one of {known}")
        return Column(name, "boolean", (True, False))
    try:
        spec = protocol.attribute(name)
    except KeyError:
        known = ", ".join([a.name for a in protocol.attributes] + ["shared", "member:PARTY"])
        raise InputError(f"unknown attribute {name!r}; the protocol declares {known}") from None
    if spec.type == "categorical":
        return Column(name, "categorical", (*spec.categories, None))
    if spec.type == "boolean":
        return Column(name, "boolean", (True, False, None), lower=0, upper=1)
    return Column(name, "integer", (), lower=spec.lower, upper=spec.upper)


@dataclass(frozen=True)
class Condition:
    """A filter on one column: ``op`` is ``in``, ``>=`` or ``<=``."""

    column: Column
    op: str
    values: tuple[str | bool | int, ...]

    def text(self) -> str:
        """The condition as the query language writes it."""
        shown = ",".join(_show(value) for value in self.values)
        return f"{self.column.name}{'=' if self.op == 'in' else self.op}{shown}"


def _show(value: str | bool | int | None) -> str:
    if value is None:
        return "(not recorded)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_value(column: Column, text: str) -> str | bool | int:
    text = text.strip()
    if column.type == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InputError(f"{column.name}: {text!r} is not true or false")
    if column.type == "integer":
        try:
            return int(text)
        except ValueError:
            raise InputError(f"{column.name}: {text!r} is not a whole number") from None
    for key in column.keys:
        if isinstance(key, str) and key.casefold() == text.casefold():
            return key
    declared = ", ".join(str(key) for key in column.keys if key is not None)
    raise InputError(f"{column.name}: category {text!r} is not declared in the protocol (declared: {declared})")


def _conditions(protocol: Protocol, text: str) -> list[Condition]:
    text = text.strip()
    for prefix, wanted in (("member:", True), ("nonmember:", False)):
        if text.startswith(prefix) and not _CONDITION.match(text):
            parties = [p.strip() for p in text.removeprefix(prefix).split(",") if p.strip()]
            if not parties:
                raise InputError(f"--where {text!r}: name at least one party after {prefix}")
            return [Condition(column_of(protocol, f"member:{party}"), "in", (wanted,)) for party in parties]
    if text == "shared":
        return [Condition(column_of(protocol, "shared"), "in", (True,))]
    match = _CONDITION.match(text)
    if match is None:
        raise InputError(
            f"--where {text!r}: write COLUMN=VALUE[,VALUE], COLUMN>=N, COLUMN<=N, member:PARTY[,PARTY] or "
            "nonmember:PARTY"
        )
    column = column_of(protocol, match["column"].strip())
    op = "in" if match["op"] == "=" else match["op"]
    if op != "in" and column.type != "integer":
        raise InputError(f"--where {text!r}: {match['op']} compares numbers, and {column.name} is {column.type}")
    values = [v for v in match["values"].split(",") if v.strip()]
    if not values or (op != "in" and len(values) != 1):
        raise InputError(f"--where {text!r}: give {'one value' if op != 'in' else 'at least one value'}")
    return [Condition(column, op, tuple(_parse_value(column, value) for value in values))]


@dataclass(frozen=True)
class QuerySpec:
    """A checked query: what to compute, over whom, grouped how, at what privacy loss."""

    kind: str
    attribute: Column | None
    by: tuple[Column, ...]
    where: tuple[Condition, ...]
    cost: Loss
    q: float | None = None

    def text(self) -> str:
        """The query in the query language (as the ledger records it)."""
        words = [self.kind]
        if self.attribute is not None:
            words.append(self.attribute.name)
        if self.q is not None:
            words += ["--q", f"{self.q:g}"]
        if self.by:
            words += ["--by", ",".join(column.name for column in self.by)]
        for condition in self.where:
            words += ["--where", condition.text()]
        words += [f"--{self.cost.measure}", f"{float(self.cost.amount):g}"]
        if self.cost.delta:
            words += ["--delta", f"{float(self.cost.delta):g}"]
        return shlex.join(words)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (what the service receives)."""
        document: dict[str, Any] = {"kind": self.kind}
        if self.attribute is not None:
            document["attribute"] = self.attribute.name
        if self.q is not None:
            document["q"] = self.q
        if self.by:
            document["by"] = [column.name for column in self.by]
        if self.where:
            document["where"] = [condition.text() for condition in self.where]
        document["cost"] = self.cost.to_json()
        return document


def _build(
    protocol: Protocol,
    kind: str,
    attribute: str | None,
    by: Sequence[str],
    where: Sequence[str],
    cost: Loss | None,
    q: float | None,
) -> QuerySpec:
    if kind not in KINDS:
        raise InputError(f"unknown query kind {kind!r}; use one of {', '.join(KINDS)}")
    if cost is None:
        measure = next(iter(protocol.budget))
        raise InputError(f"say what the query may spend, e.g. --{measure} 0.05 (the protocol's budget is {measure})")
    column = None
    if kind in NEEDS_ATTRIBUTE:
        if attribute is None:
            raise InputError(f"{kind} needs an attribute, e.g. `{kind} weeks_supported`")
        column = column_of(protocol, attribute)
        if column.type == "categorical":
            raise InputError(
                f"{kind} {attribute}: {attribute} is categorical and has no bounds to {kind} over; "
                f"use `count --by {attribute}`"
            )
        if column.type != "integer" and kind == "quantile":
            raise InputError(f"quantile {attribute}: a quantile needs an integer attribute; use `mean {attribute}`")
        if not attribute.startswith("member:") and attribute != "shared" and column.lower is None:
            raise InputError(f"{kind} {attribute}: the attribute has no declared bounds, so it cannot be summed")
    elif attribute is not None:
        raise InputError(f"{kind} takes no attribute (got {attribute!r}); filter with --where instead")
    if kind == "quantile":
        q = 0.5 if q is None else q
        if not 0 < q < 1:
            raise InputError(f"--q must be between 0 and 1 (0.5 is the median), not {q}")
    elif q is not None:
        raise InputError("--q is only for quantile queries")
    columns = tuple(column_of(protocol, name) for name in by)
    for grouped in columns:
        if grouped.type == "integer":
            raise InputError(
                f"--by {grouped.name}: an integer attribute has no public categories to group by; "
                f"group by a categorical attribute and filter with --where '{grouped.name}>=N'"
            )
    if len({c.name for c in columns}) != len(columns):
        raise InputError("--by names a column twice")
    if kind == "overlap" and any(c.name.startswith("member:") for c in columns):
        raise InputError("overlap already splits by membership; group it by attributes only")
    conditions = tuple(condition for text in where for condition in _conditions(protocol, text))
    return QuerySpec(kind, column, columns, conditions, cost, q)


def parse_query(protocol: Protocol, words: Sequence[str]) -> QuerySpec:
    """Parse the query language, e.g. ``["count", "--by", "region", "--rho", "0.05"]``.

    A single word that names a ``.json`` or ``.yaml`` file is read as the JSON form.

    Raises:
        InputError: the query is malformed or does not fit the protocol; the message
            names the problem and shows the fix.
    """
    path = query_file(words)
    if path is not None:
        return read_query(protocol, path)
    if not words:
        raise InputError(f"no query given; start with one of {', '.join(KINDS)}, e.g. `count --by region --rho 0.05`")
    kind, rest = words[0], list(words[1:])
    attribute = None
    if rest and not rest[0].startswith("--"):
        attribute = rest.pop(0)
    by: list[str] = []
    where: list[str] = []
    loss: dict[str, str] = {}
    q: float | None = None
    while rest:
        option = rest.pop(0)
        if "=" in option and option.startswith("--"):
            option, _, inline = option.partition("=")
            rest.insert(0, inline)
        if option not in ("--by", "--where", "--rho", "--epsilon", "--delta", "--q"):
            raise InputError(
                f"unexpected {option!r} in the query; options are --by, --where, --q, --rho, --epsilon and --delta"
            )
        if not rest:
            raise InputError(f"{option} needs a value")
        value = rest.pop(0)
        if option == "--by":
            by += [name.strip() for name in value.split(",") if name.strip()]
        elif option == "--where":
            where.append(value)
        elif option == "--q":
            try:
                q = float(value)
            except ValueError:
                raise InputError(f"--q {value!r} is not a number") from None
        else:
            loss[option.removeprefix("--")] = value
    cost = Loss.from_json(loss) if loss else None
    return _build(protocol, kind, attribute, by, where, cost, q)


def parse_query_json(protocol: Protocol, document: Any) -> QuerySpec:
    """Check the JSON form of a query (see the module docstring).

    Raises:
        InputError: not an object of the documented shape, or it does not fit the protocol.
    """
    if not isinstance(document, Mapping):
        raise InputError('a query is a JSON object, e.g. {"kind": "count", "cost": {"rho": 0.05}}')
    unknown = set(document) - {"kind", "attribute", "by", "where", "q", "cost"}
    if unknown:
        raise InputError(f"unknown query key(s) {', '.join(sorted(unknown))}; use kind, attribute, by, where, q, cost")
    by, where = document.get("by", []), document.get("where", [])
    for name, value in (("by", by), ("where", where)):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise InputError(f'"{name}" must be a list of strings')
    kind, attribute, q = document.get("kind"), document.get("attribute"), document.get("q")
    if not isinstance(kind, str) or not (attribute is None or isinstance(attribute, str)):
        raise InputError('"kind" (and "attribute", if given) must be strings')
    if q is not None and (isinstance(q, bool) or not isinstance(q, int | float)):
        raise InputError('"q" must be a number between 0 and 1')
    cost = document.get("cost")
    if cost is not None and not isinstance(cost, Mapping):
        raise InputError('"cost" must be an object such as {"rho": 0.05}')
    return _build(protocol, kind, attribute, by, where, None if cost is None else Loss.from_json(cost), q)


def query_file(words: Sequence[str]) -> Path | None:
    """The query file QUERY names, if it is one word ending in ``.json`` or ``.yaml``."""
    return Path(words[0]) if len(words) == 1 and words[0].endswith(QUERY_FILES) else None


def load_query_document(path: Path) -> Any:
    """The JSON form of a query, as read from a ``.json`` or ``.yaml`` file (not yet checked).

    Raises:
        InputError: the file is missing, or not JSON or YAML.
    """
    try:
        return yaml.safe_load(path.read_text("utf-8"))  # JSON is YAML too
    except FileNotFoundError:
        raise InputError(f"{path}: query file not found") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON or YAML query ({exc})") from exc


def read_query(protocol: Protocol, path: Path) -> QuerySpec:
    """Read a query in its JSON form from a ``.json`` or ``.yaml`` file.

    Raises:
        InputError: the file is missing, not JSON or YAML, or not a valid query.
    """
    document = load_query_document(path)
    try:
        return parse_query_json(protocol, document)
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from exc
