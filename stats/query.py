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
from the data, so that a key can never reveal that someone exists. An integer attribute is
grouped by public bins: those the protocol declares for it (``--by weeks_supported``), or
lower edges given in the query (``--by 'weeks_supported[0,13,26,39]'``: 0-12, 13-25, 26-38
and 39 to the upper bound).

Conditions: ``COLUMN=V1,V2`` (one of the values), ``COLUMN>=N`` and ``COLUMN<=N`` (integer
attributes), and the shorthands ``member:A,B`` (known to A and to B) and ``nonmember:A``.
The same strings make up the JSON form: ``{"kind": "count", "by": ["region"],
"where": ["member:police,msd"], "cost": {"rho": 0.05}}``.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from linkage.errors import InputError
from linkage.protocol import Protocol, attribute_bins
from stats.budget import Loss

__all__ = [
    "KINDS",
    "MAX_CELLS",
    "Column",
    "Condition",
    "QuerySpec",
    "column_of",
    "load_query_document",
    "parse_query",
    "parse_query_json",
    "query_file",
    "read_query",
    "split_query",
]

KINDS = ("count", "sum", "mean", "quantile", "overlap")
NEEDS_ATTRIBUTE = frozenset({"sum", "mean", "quantile"})
QUERY_FILES = (".json", ".yaml", ".yml")
MAX_CELLS = 5000  # groups of one answer: more is no longer a table anyone reads, and costs memory to plan
_CONDITION = re.compile(r"^(?P<column>[^=<>]+?)\s*(?P<op>>=|<=|=)\s*(?P<values>.*)$")
_BINNED = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<edges>[^\[\]]*)\]$")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def split_query(text: str) -> list[str]:
    """The words of a query written as one line, quoted as a shell would.

    >>> split_query("count --where 'region=Bay of Plenty' --rho 0.05")
    ['count', '--where', 'region=Bay of Plenty', '--rho', '0.05']

    Raises:
        InputError: an unclosed quote or a trailing backslash.
    """
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise InputError(
            f"the query cannot be split into words ({exc}): close every quote and do not end it with a "
            "backslash, e.g. count --where 'region=Bay of Plenty' --rho 0.05"
        ) from None


@dataclass(frozen=True)
class Column:
    """A column of the entity table as the query language sees it.

    ``type`` is ``categorical``, ``boolean``, ``integer`` or ``binned`` (an integer attribute
    grouped by public bins, ``source`` its attribute and ``bins`` the lower edges); ``keys``
    are the public group keys (``None`` is "not recorded", a key of every attribute a party
    may leave blank).
    """

    name: str
    type: str
    keys: tuple[str | bool | None, ...]
    lower: int | None = None
    upper: int | None = None
    source: str | None = None
    bins: tuple[int, ...] = ()

    @property
    def attribute(self) -> str:
        """The column of the entity table this one is computed from (itself unless binned)."""
        return self.source or self.name

    def bin_ranges(self) -> list[tuple[int, int]]:
        """``(first, last)`` value of each bin of a binned column."""
        assert self.upper is not None  # noqa: S101 - a binned column has its attribute's bounds
        return _ranges(self.bins, self.upper)


def _ranges(edges: Sequence[int], upper: int) -> list[tuple[int, int]]:
    ends = [edge - 1 for edge in edges[1:]] + [upper]
    return list(zip(edges, ends, strict=True))


def _bin_label(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def binned_column(protocol: Protocol, name: str) -> Column:
    """An integer attribute grouped by public bins: ``NAME`` (the protocol's bins) or ``NAME[e1,e2,...]``.

    >>> from tests.conftest import EXAMPLE_PROTOCOL
    >>> from linkage.protocol import load_protocol
    >>> binned_column(load_protocol(EXAMPLE_PROTOCOL), "police_contacts[0,1,5]").keys
    ('0', '1-4', '5-30', None)

    Raises:
        InputError: not an integer attribute, no bins declared or given, or bad edges.
    """
    match = _BINNED.match(name)
    attribute = (match["name"] if match else name).strip()
    column = column_of(protocol, attribute)
    if column.type != "integer":
        raise InputError(f"--by {name}: only an integer attribute is grouped by bins; {attribute} is {column.type}")
    lower, upper = column.lower, column.upper
    assert lower is not None and upper is not None  # noqa: S101 - integer attributes have bounds (schema)
    if match is None:
        edges = attribute_bins(protocol, attribute)
        if not edges:
            raise InputError(
                f"--by {attribute}: an integer attribute is grouped by public bins, and the protocol declares none "
                f"for it; give their lower edges, e.g. --by '{attribute}[{lower},{lower + (upper - lower) // 2}]'"
            )
    else:
        texts = [text.strip() for text in match["edges"].split(",") if text.strip()]
        if not texts or len(texts) > 100 or not all(re.fullmatch(r"-?\d{1,18}", text) for text in texts):
            raise InputError(f"--by {name}: write up to 100 whole-number lower edges, e.g. {attribute}[{lower},10,20]")
        edges = tuple(int(text) for text in texts)
        if edges[0] != lower:
            edges = (lower, *edges)
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[0] < lower or edges[-1] > upper:
            raise InputError(
                f"--by {name}: the lower edges must rise within {attribute}'s bounds {lower}..{upper}, "
                f"e.g. {attribute}[{lower},10,20]"
            )
    shown = f"{attribute}[{','.join(str(edge) for edge in edges)}]"
    labels = tuple(_bin_label(first, last) for first, last in _ranges(edges, upper))
    return Column(shown, "binned", (*labels, None), lower, upper, attribute, edges)


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
        if not re.fullmatch(r"[+-]?\d{1,30}", text):
            raise InputError(f"{column.name}: {text[:40]!r} is not a whole number")
        assert column.lower is not None and column.upper is not None  # noqa: S101 - integer attributes have bounds
        # Beyond the public bounds every value compares alike; keeping it there keeps Polars' Int64 safe.
        return min(max(int(text), column.lower - 1), column.upper + 1)
    for key in column.keys:
        if isinstance(key, str) and key.casefold() == text.casefold():
            return key
    declared = ", ".join(str(key) for key in column.keys if key is not None)
    raise InputError(f"{column.name}: category {text[:60]!r} is not declared in the protocol (declared: {declared})")


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
        raise InputError(f"unknown query kind {kind[:40]!r}; use one of {', '.join(KINDS)}")
    if cost is None:
        measure = next(iter(protocol.budget))
        raise InputError(f"say what the query may spend, e.g. --{measure} 0.05 (the protocol's budget is {measure})")
    column = None
    if kind in NEEDS_ATTRIBUTE:
        if attribute is None:
            raise InputError(f"{kind} needs an attribute, e.g. `{kind} weeks_supported`")
        if attribute == "shared" or attribute.startswith("member:"):
            raise InputError(
                f"{kind} {attribute}: {attribute} says who knows a person, it is not an outcome to {kind}; "
                f"count them with `count --by {attribute}` (or `count --where {attribute}`)"
            )
        column = column_of(protocol, attribute)
        if column.type == "categorical":
            raise InputError(
                f"{kind} {attribute}: {attribute} is categorical and has no bounds to {kind} over; "
                f"use `count --by {attribute}`"
            )
        if column.type != "integer" and kind == "quantile":
            raise InputError(f"quantile {attribute}: a quantile needs an integer attribute; use `mean {attribute}`")
    elif attribute is not None:
        raise InputError(f"{kind} takes no attribute (got {attribute[:40]!r}); filter with --where instead")
    if kind == "quantile":
        q = 0.5 if q is None else q
        if not 0 < q < 1:
            raise InputError(f"--q must be between 0 and 1 (0.5 is the median), not {q}")
    elif q is not None:
        raise InputError("--q is only for quantile queries")
    columns = tuple(_group_column(protocol, name) for name in by)
    if len({c.attribute for c in columns}) != len(columns):
        raise InputError("--by names a column twice")
    if kind == "overlap" and any(c.name.startswith("member:") or c.name == "shared" for c in columns):
        raise InputError("overlap already splits by membership; group it by attributes only")
    cells = math.prod(len(c.keys) for c in columns) * (2 ** len(protocol.parties) if kind == "overlap" else 1)
    if cells > MAX_CELLS:
        raise InputError(f"--by makes {cells} groups, more than the {MAX_CELLS} one answer may have; group by fewer")
    conditions = tuple(condition for text in where for condition in _conditions(protocol, text))
    return QuerySpec(kind, column, columns, conditions, cost, q)


def _group_column(protocol: Protocol, name: str) -> Column:
    """A ``--by`` column: an attribute, membership, or an integer attribute in public bins."""
    if "[" in name:
        return binned_column(protocol, name)
    column = column_of(protocol, name)
    return binned_column(protocol, name) if column.type == "integer" else column


def _split_by(value: str) -> list[str]:
    """``--by`` names separated by commas, where ``NAME[e1,e2]`` keeps its commas.

    >>> _split_by("region, weeks_supported[0,13],member:msd")
    ['region', 'weeks_supported[0,13]', 'member:msd']
    """
    names, depth, current = [], 0, ""
    for char in value:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth <= 0:
            names.append(current)
            current = ""
        else:
            current += char
    names.append(current)
    return [name.strip() for name in names if name.strip()]


def parse_query(
    protocol: Protocol, words: Sequence[str], *, files: bool = True, default_cost: Loss | None = None
) -> QuerySpec:
    """Parse the query language, e.g. ``["count", "--by", "region", "--rho", "0.05"]``.

    Args:
        protocol: the project's protocol.
        words: the query's words.
        files: read a single word that names a ``.json`` or ``.yaml`` file as the JSON form
            (the command line's convenience; the service passes ``False``, as it must never
            open a file a caller names).
        default_cost: the cost of a query that names none (otherwise one is required).

    Raises:
        InputError: the query is malformed or does not fit the protocol; the message
            names the problem and shows the fix.
    """
    path = query_file(words) if files else None
    if path is not None:
        return read_query(protocol, path, default_cost=default_cost)
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
                f"unexpected {option[:40]!r} in the query; options are --by, --where, --q, --rho, --epsilon and "
                "--delta (an attribute comes right after the kind, e.g. `mean weeks_supported`)"
            )
        if not rest:
            raise InputError(f"{option} needs a value")
        value = rest.pop(0)
        if option == "--by":
            by += _split_by(value)
        elif option == "--where":
            where.append(value)
        elif option == "--q":
            try:
                q = float(value) if len(value) <= 40 else math.nan
            except ValueError:
                q = math.nan
            if not 0 < q < 1:
                raise InputError(f"--q must be between 0 and 1 (0.5 is the median), not {value[:40]!r}")
        else:
            loss[option.removeprefix("--")] = value
    cost = Loss.from_json(loss) if loss else default_cost
    return _build(protocol, kind, attribute, by, where, cost, q)


def parse_query_json(protocol: Protocol, document: Any, *, default_cost: Loss | None = None) -> QuerySpec:
    """Check the JSON form of a query (see the module docstring).

    Args:
        protocol: the project's protocol.
        document: the JSON form, as parsed.
        default_cost: the cost of a query that names none (otherwise one is required).

    Raises:
        InputError: not an object of the documented shape, or it does not fit the protocol.
    """
    if not isinstance(document, Mapping):
        raise InputError('a query is a JSON object, e.g. {"kind": "count", "cost": {"rho": 0.05}}')
    unknown = set(document) - {"kind", "attribute", "by", "where", "q", "cost"}
    if unknown:
        listed = ", ".join(sorted(str(key)[:40] for key in unknown)[:5])
        raise InputError(f"unknown query key(s) {listed}; use kind, attribute, by, where, q, cost")
    by, where = document.get("by", []), document.get("where", [])
    for name, value in (("by", by), ("where", where)):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise InputError(f'"{name}" must be a list of strings')
    kind, attribute, q = document.get("kind"), document.get("attribute"), document.get("q")
    if not isinstance(kind, str) or not (attribute is None or isinstance(attribute, str)):
        raise InputError('"kind" (and "attribute", if given) must be strings')
    if q is not None and (isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q < 1):
        raise InputError('"q" must be a number between 0 and 1 (0.5 is the median)')
    cost = document.get("cost")
    if cost is not None and not isinstance(cost, Mapping):
        raise InputError('"cost" must be an object such as {"rho": 0.05}')
    loss = default_cost if cost is None else Loss.from_json(cost)
    return _build(protocol, kind, attribute, by, where, loss, None if q is None else float(q))


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


def read_query(protocol: Protocol, path: Path, *, default_cost: Loss | None = None) -> QuerySpec:
    """Read a query in its JSON form from a ``.json`` or ``.yaml`` file.

    Raises:
        InputError: the file is missing, not JSON or YAML, or not a valid query.
    """
    document = load_query_document(path)
    try:
        return parse_query_json(protocol, document, default_cost=default_cost)
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from exc
