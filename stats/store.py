"""The statistics store: outcome attributes by record token, and the entity mapping.

A database of its own (``DATA_DIR/stats.db``, or the PostgreSQL schema ``pprl_stats``),
separate from the linkage store: it never holds an encoding, and the linkage store never
holds an attribute. It keeps its own copy of each project's protocol and its own hashes of
the project's credentials, so the statistics side authenticates without the linkage side.

All SQL of the statistics side lives in this module.
"""

from __future__ import annotations

import csv
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from linkage.database import Database, now, project_tables
from linkage.errors import Conflict, InputError, NotFound
from linkage.protocol import AttributeSpec, Protocol, parse_protocol
from stats.budget import Budget, LedgerEntry, Loss, Receipt, budget_of, check_affordable

__all__ = [
    "AttributeRow",
    "AttributesOutcome",
    "StatsCredential",
    "StatsStore",
    "read_attributes",
]

MAX_LISTED_PROBLEMS = 50
_CHUNK = 5000
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_metadata = MetaData()

projects, credentials = project_tables(_metadata)
attribute_uploads = Table(
    "attribute_uploads",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("body_sha256", String(64), nullable=False),
    Column("record_count", BigInteger, nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
)
attributes = Table(
    "attributes",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("consent", Boolean, nullable=False),
    Column("attribute_values", Text, nullable=False),
)
entities = Table(
    "entities",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("entity_id", Integer, nullable=False),
)
mappings = Table(
    "mappings",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("copied_at", DateTime(timezone=True), nullable=False),
)
releases = Table(
    "releases",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("who", String(64), nullable=False),
    Column("query", Text, nullable=False),
    Column("loss", Text, nullable=False),
    Column("mechanism", Text, nullable=False),
)


@dataclass(frozen=True)
class StatsCredential:
    """Who a token belongs to on the statistics side."""

    role: str
    project_id: str
    party: str | None


@dataclass(frozen=True)
class AttributeRow:
    """One record's consent flag and outcome attributes (``None`` where missing)."""

    token: str
    consent: bool
    values: Mapping[str, str | int | bool | None]


@dataclass(frozen=True)
class AttributesOutcome:
    """What an attributes upload did: ``created``, ``unchanged`` or ``replaced``."""

    status: str
    record_count: int
    body_sha256: str


def _parse_value(text: str, spec: AttributeSpec) -> str | int | bool | None:
    """One attribute cell as its typed value.

    >>> from linkage.protocol import AttributeSpec
    >>> _parse_value("7", AttributeSpec("weeks", "integer", "max", lower=0, upper=52))
    7
    >>> _parse_value("", AttributeSpec("weeks", "integer", "max", lower=0, upper=52)) is None
    True
    """
    text = text.strip()
    if not text:
        return None
    if spec.type == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("not a boolean; write true or false")
    if spec.type == "integer":
        try:
            number = int(text)
        except ValueError as exc:
            raise ValueError("not a whole number") from exc
        if spec.lower is not None and spec.upper is not None and not spec.lower <= number <= spec.upper:
            raise ValueError(f"outside the protocol's bounds {spec.lower}..{spec.upper}")
        return number
    for category in spec.categories:
        if text.casefold() == category.casefold():
            return category
    raise ValueError(f"not one of the categories {', '.join(spec.categories)}")


def read_attributes(protocol: Protocol, party: str, path: Path, *, shown_as: str | None = None) -> list[AttributeRow]:
    """Read and check an ``attributes.csv`` written by ``pprl encode``.

    The whole file is checked, then one error lists every problem (the first 50).

    Args:
        protocol: the project's protocol.
        party: the party whose file it is; its attributes are the expected columns.
        path: the file.
        shown_as: how to name the file in messages (default: its path).

    Raises:
        InputError: not UTF-8 CSV, wrong header, a bad token, consent flag or value.
    """
    name = shown_as or str(path)
    specs = [protocol.attribute(attribute) for attribute in protocol.party(party).attributes]
    expected = ["token", "consent", *(spec.name for spec in specs)]
    rows: list[AttributeRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header = [cell.strip() for cell in next(reader, [])]
            if header != expected:
                raise InputError(
                    f"{name} line 1: the header is {','.join(header) or '(empty)'}, but party {party!r} must send "
                    f"{','.join(expected)}; upload the attributes.csv that `pprl encode --party {party}` wrote"
                )
            for cells in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(expected):
                    problems.append(f"line {line}: {len(cells)} columns where the header has {len(expected)}")
                    continue
                token = cells[0].strip()
                if not _TOKEN.match(token):
                    problems.append(f"line {line}, column 'token': not a record token (32 lowercase hex digits)")
                    continue
                if token in seen:
                    problems.append(f"line {line}, column 'token': also on line {seen[token]}; each token appears once")
                    continue
                seen[token] = line
                consent = cells[1].strip().lower()
                if consent not in _TRUE | _FALSE:
                    problems.append(f"line {line}, column 'consent': not true or false")
                    continue
                values: dict[str, str | int | bool | None] = {}
                for spec, cell in zip(specs, cells[2:], strict=True):
                    try:
                        values[spec.name] = _parse_value(cell, spec)
                    except ValueError as exc:
                        problems.append(f"line {line}, column {spec.name!r}: {exc}")
                rows.append(AttributeRow(token, consent in _TRUE, values))
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text; send the attributes.csv that `pprl encode` wrote") from exc
    except csv.Error as exc:
        raise InputError(f"{name}: malformed CSV ({exc}); send the attributes.csv that `pprl encode` wrote") from exc
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        if len(problems) > MAX_LISTED_PROBLEMS:
            listed.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more")
        raise InputError(f"{name}: {len(problems)} problem(s); nothing was stored", problems=listed)
    if not rows:
        raise InputError(f"{name} has no records; send the attributes.csv that `pprl encode` wrote")
    return rows


class StatsStore(Database):
    """The statistics side's database.

    Args:
        data_dir: the service's data folder (incoming bodies go in ``data_dir/stats-incoming``).
        url: a database URL; ``None`` means ``sqlite:///data_dir/stats.db``.
        schema: the PostgreSQL schema (ignored for SQLite).
    """

    def __init__(self, data_dir: Path, url: str | None = None, *, schema: str | None = "pprl_stats") -> None:
        self.data_dir = Path(data_dir)
        self.incoming_dir = self.data_dir / "stats-incoming"
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(url or f"sqlite:///{self.data_dir / 'stats.db'}", schema, _metadata)
        self._protocols: dict[str, Protocol] = {}

    def clean_incoming(self) -> int:
        """Remove bodies left half-received by a crash; returns how many went."""
        removed = 0
        for path in self.incoming_dir.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def incoming_path(self) -> Path:
        """A fresh temporary path for an attributes body being received."""
        return self.incoming_dir / f".incoming-{secrets.token_hex(8)}"

    # -- projects and credentials -------------------------------------------------------

    def register_project(self, project_id: str, protocol: Protocol, credential_hashes: Mapping[str, str]) -> None:
        """Record a new project's protocol and credential hashes (``{party or "analyst": sha256}``)."""
        with self._write() as conn:
            self._insert_project(conn, project_id, protocol, credential_hashes)

    def authenticate(self, token: str) -> StatsCredential | None:
        """The credential a token stands for, or ``None``; compared in constant time."""
        row = self._credential(token)
        if row is None:
            return None
        return StatsCredential(role=row.role, project_id=row.project_id, party=row.party)

    def protocol(self, project_id: str) -> Protocol:
        """The project's protocol, parsed once and cached.

        Raises:
            NotFound: no such project on the statistics side.
        """
        if project_id not in self._protocols:
            with self._read() as conn:
                text = conn.execute(select(projects.c.protocol).where(projects.c.id == project_id)).scalar()
            if text is None:
                raise NotFound(f"no project {project_id!r} on the statistics side")
            self._protocols[project_id] = parse_protocol(json.loads(text))
        return self._protocols[project_id]

    # -- attributes ---------------------------------------------------------------------

    def accept_attributes(
        self, project_id: str, party: str, received: Path, body_sha256: str, *, replace: bool
    ) -> AttributesOutcome:
        """Check a received attributes.csv and make it the party's attributes, in one transaction.

        The same content again changes nothing; different content is refused unless
        ``replace``. ``received`` is always deleted.

        Raises:
            InputError: see :func:`read_attributes`.
            Conflict: different content was uploaded before and ``replace`` is false.
        """
        try:
            protocol = self.protocol(project_id)
            with self._read() as conn:
                previous = conn.execute(
                    select(attribute_uploads).where(
                        attribute_uploads.c.project_id == project_id, attribute_uploads.c.party == party
                    )
                ).first()
            if previous is not None and previous.body_sha256 == body_sha256:
                return AttributesOutcome("unchanged", previous.record_count, body_sha256)
            rows = read_attributes(protocol, party, received, shown_as="the uploaded attributes.csv")
            if previous is not None and not replace:
                raise Conflict(
                    f"party {party!r} already uploaded different attributes ({previous.record_count} records); "
                    "pass --replace (?replace=true) to replace them"
                )
            with self._write() as conn:
                conn.execute(
                    delete(attributes).where(attributes.c.project_id == project_id, attributes.c.party == party)
                )
                for start in range(0, len(rows), _CHUNK):
                    conn.execute(
                        insert(attributes),
                        [
                            {
                                "project_id": project_id,
                                "party": party,
                                "token": row.token,
                                "consent": row.consent,
                                "attribute_values": json.dumps(row.values, separators=(",", ":")),
                            }
                            for row in rows[start : start + _CHUNK]
                        ],
                    )
                values = {"body_sha256": body_sha256, "record_count": len(rows), "uploaded_at": now()}
                if previous is None:
                    conn.execute(insert(attribute_uploads).values(project_id=project_id, party=party, **values))
                else:
                    conn.execute(
                        update(attribute_uploads)
                        .where(attribute_uploads.c.project_id == project_id, attribute_uploads.c.party == party)
                        .values(**values)
                    )
            return AttributesOutcome("created" if previous is None else "replaced", len(rows), body_sha256)
        finally:
            received.unlink(missing_ok=True)

    def attribute_counts(self, project_id: str) -> dict[str, int]:
        """How many attribute records each party has uploaded."""
        with self._read() as conn:
            rows = conn.execute(
                select(attribute_uploads.c.party, attribute_uploads.c.record_count).where(
                    attribute_uploads.c.project_id == project_id
                )
            ).all()
        return {row.party: row.record_count for row in rows}

    def consent(self, project_id: str, records: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """The consent flag of each ``(party, token)`` that has attributes; others are absent.

        A record without uploaded attributes has no recorded consent, so callers must
        treat it as not consenting.
        """
        wanted = sorted(set(records))
        found: dict[tuple[str, str], bool] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                query = select(attributes.c.party, attributes.c.token, attributes.c.consent).where(
                    attributes.c.project_id == project_id, attributes.c.token.in_([token for _, token in batch])
                )
                for row in conn.execute(query):
                    found[(row.party, row.token)] = bool(row.consent)
        return {key: found[key] for key in wanted if key in found}

    # -- the entity mapping -------------------------------------------------------------

    def replace_mapping(self, project_id: str, run_id: int, chunks: Iterable[list[tuple[int, str, str]]]) -> int:
        """Make a done run's ``(entity_id, party, token)`` rows the project's mapping, atomically.

        Returns:
            The number of rows stored.
        """
        count = 0
        with self._write() as conn:
            conn.execute(delete(entities).where(entities.c.project_id == project_id))
            for chunk in chunks:
                if chunk:
                    conn.execute(
                        insert(entities),
                        [
                            {"project_id": project_id, "run_id": run_id, "entity_id": e, "party": p, "token": t}
                            for e, p, t in chunk
                        ],
                    )
                    count += len(chunk)
            conn.execute(delete(mappings).where(mappings.c.project_id == project_id))
            conn.execute(insert(mappings).values(project_id=project_id, run_id=run_id, copied_at=now()))
        return count

    def mapping_run(self, project_id: str) -> int | None:
        """The run whose entity mapping the statistics side holds for the project, if any."""
        with self._read() as conn:
            value = conn.execute(select(mappings.c.run_id).where(mappings.c.project_id == project_id)).scalar()
        return None if value is None else int(value)

    def mapping(self, project_id: str) -> list[tuple[int, str, str]]:
        """The project's ``(entity_id, party, token)`` rows, by entity."""
        with self._read() as conn:
            rows = conn.execute(
                select(entities.c.entity_id, entities.c.party, entities.c.token)
                .where(entities.c.project_id == project_id)
                .order_by(entities.c.entity_id, entities.c.party)
            ).all()
        return [(row.entity_id, row.party, row.token) for row in rows]

    def attribute_values(self, project_id: str, party: str) -> dict[str, dict[str, Any]]:
        """A party's attributes by token (for the statistics engine; never released as such)."""
        with self._read() as conn:
            rows = conn.execute(
                select(attributes.c.token, attributes.c.attribute_values).where(
                    attributes.c.project_id == project_id, attributes.c.party == party
                )
            ).all()
        return {row.token: json.loads(row.attribute_values) for row in rows}

    def data_version(self, project_id: str) -> tuple[Any, ...]:
        """What the entity table depends on: the mapping's run and each party's attributes upload."""
        with self._read() as conn:
            run = conn.execute(select(mappings.c.run_id).where(mappings.c.project_id == project_id)).scalar()
            uploads = conn.execute(
                select(attribute_uploads.c.party, attribute_uploads.c.body_sha256)
                .where(attribute_uploads.c.project_id == project_id)
                .order_by(attribute_uploads.c.party)
            ).all()
        return (run, *((row.party, row.body_sha256) for row in uploads))

    # -- the budget ledger --------------------------------------------------------------

    def _entries(self, conn: Connection, project_id: str) -> list[LedgerEntry]:
        rows = conn.execute(
            select(releases).where(releases.c.project_id == project_id).order_by(releases.c.number)
        ).all()
        return [
            LedgerEntry(
                number=row.number,
                at=row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC),
                who=row.who,
                query=row.query,
                loss=Loss.from_json(json.loads(row.loss)),
                mechanism=row.mechanism,
            )
            for row in rows
        ]

    def budget(self, project_id: str) -> Budget:
        """The project's total, what its releases spent, and each release."""
        total = budget_of(self.protocol(project_id))
        with self._read() as conn:
            return Budget.from_entries(total, self._entries(conn, project_id))

    @contextmanager
    def spend(self, project_id: str, who: str, query: str, cost: Loss) -> Iterator[Receipt]:
        """Hold the project's ledger while a release is computed; record it if the body succeeds.

        The body fills in the receipt it is given. The check, the body and the record are
        one transaction that holds the project's row lock (PostgreSQL) or the database's
        write lock (SQLite), so concurrent queries queue and can never overspend together.
        If the body raises, nothing is recorded.

        Raises:
            BudgetExceeded: the cost does not fit in what is left; nothing is recorded.
        """
        total = budget_of(self.protocol(project_id))
        with self._write() as conn:
            conn.execute(select(projects.c.id).where(projects.c.id == project_id).with_for_update()).scalar()
            check_affordable(Budget.from_entries(total, self._entries(conn, project_id)), cost)
            receipt = Receipt()
            yield receipt
            number = conn.execute(
                select(func.coalesce(func.max(releases.c.number), 0)).where(releases.c.project_id == project_id)
            ).scalar_one()
            conn.execute(
                insert(releases).values(
                    project_id=project_id,
                    number=int(number) + 1,
                    at=now(),
                    who=who,
                    query=query,
                    loss=json.dumps(cost.to_json()),
                    mechanism=receipt.mechanism,
                )
            )
