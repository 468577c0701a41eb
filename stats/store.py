"""The statistics store: outcome attributes by record token, the entity mapping, and the ledger.

A database of its own (``DATA_DIR/stats.db``, or the PostgreSQL schema ``pprl_stats``),
separate from the linkage store: it never holds an encoding, and the linkage store never
holds an attribute. It keeps its own copy of each project's protocol and its own hashes of
the project's credentials (analysts' own ones too, with their budgets), so the statistics
side authenticates without the linkage side. It knows each party's encodings only by the
digest of their tokens, against which that party's attributes are checked.

Each project's ledger of releases is a hash chain (:mod:`linkage.chain`), checked before
every release: a ledger edited or cut at rest releases nothing more.

All SQL of the statistics side lives in this module.
"""

from __future__ import annotations

import csv
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
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
from sqlalchemy.engine import Connection, Row

from linkage.chain import GENESIS, ChainCheck, ChainHead, ChainRow, chain_digest, verify_chain
from linkage.database import ANALYST, Database, now, project_tables
from linkage.errors import BudgetExceeded, Conflict, InputError, NotFound, TamperedError
from linkage.file_modes import private_dir, shred_file
from linkage.protocol import AttributeSpec, Protocol, parse_protocol
from linkage.token_files import token_set_sha256
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
    # The token digest (token_set_sha256) of the upload; it matched the party's encodings.
    Column("tokens_sha256", String(64)),
)
encodings_tokens = Table(
    "encodings_tokens",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("tokens_sha256", String(64), nullable=False),
    Column("record_count", BigInteger, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
)
analysts = Table(
    "analysts",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("budget", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
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
    # The ledger's hash chain, per project (linkage.chain).
    Column("prev_sha256", String(64)),
    Column("sha256", String(64)),
)
# Parties removed from a project (`pprl project remove-party`): answers say they are not counted.
erased_parties = Table(
    "erased_parties",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)
ledger_heads = Table(
    "ledger_heads",
    _metadata,
    Column("project_id", String(32), primary_key=True),
    Column("number", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("rows", Integer, nullable=False),
)


@dataclass(frozen=True)
class StatsCredential:
    """Who a token belongs to on the statistics side (an analyst's name too)."""

    role: str
    project_id: str
    party: str | None
    name: str | None = None


@dataclass(frozen=True)
class AttributeRow:
    """One record's consent flag and outcome attributes (``None`` where missing)."""

    token: str
    consent: bool
    values: Mapping[str, str | int | bool | None]


@dataclass(frozen=True)
class AttributesOutcome:
    """What an attributes upload did: ``created``, ``unchanged``, ``replaced`` or (a batch's) ``merged``."""

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
        self.data_dir = private_dir(Path(data_dir))
        self.incoming_dir = private_dir(self.data_dir / "stats-incoming")
        super().__init__(url or f"sqlite:///{self.data_dir / 'stats.db'}", schema, _metadata)
        self._protocols: dict[str, Protocol] = {}
        self._seal_ledgers()

    def clean_incoming(self) -> int:
        """Remove bodies left half-received by a crash; returns how many went."""
        removed = 0
        for path in self.incoming_dir.iterdir():
            shred_file(path)
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
        return StatsCredential(role=row.role, project_id=row.project_id, party=row.party, name=row.name)

    def register_analyst(
        self, project_id: str, name: str, credential_hash: str, budget: Mapping[str, Any] | None
    ) -> None:
        """Store an analyst's own credential (hashed) and optional budget within the project's.

        Raises:
            InputError: the budget is not a privacy loss in the protocol's measure, or exceeds the project's.
            Conflict: the project has an analyst of this name already.
        """
        total = budget_of(self.protocol(project_id))
        if budget is not None:
            own = Loss.from_json(budget)
            if own.measure != total.measure or not own.fits_within(total):
                raise InputError(
                    f"budget: an analyst's budget must be in the project's measure and within its total {total}, "
                    f"not {own}; pass --{total.measure} with a smaller amount"
                )
        with self._write() as conn:
            taken = conn.execute(
                select(analysts.c.name).where(analysts.c.project_id == project_id, analysts.c.name == name)
            ).first()
            if taken is not None or name == ANALYST:
                raise Conflict(f"project {project_id!r} has an analyst named {name!r} already; choose another name")
            conn.execute(
                insert(analysts).values(
                    project_id=project_id,
                    name=name,
                    budget=None if budget is None else json.dumps(Loss.from_json(budget).to_json()),
                    created_at=now(),
                )
            )
            self._insert_credential(conn, project_id, ANALYST, name, credential_hash)

    def analyst_budget(self, project_id: str, who: str) -> Budget | None:
        """An analyst's own budget and what they spent (``who`` as the ledger names them), if they have one."""
        own = self._analyst_loss(project_id, who)
        if own is None:
            return None
        with self._read() as conn:
            entries = [entry for entry in self._entries(conn, project_id) if entry.who == who]
        return Budget.from_entries(own, entries)

    def _analyst_loss(self, project_id: str, who: str) -> Loss | None:
        role, _, name = who.partition(":")
        if role != ANALYST or not name:
            return None
        with self._read() as conn:
            text = conn.execute(
                select(analysts.c.budget).where(analysts.c.project_id == project_id, analysts.c.name == name)
            ).scalar()
        return None if text is None else Loss.from_json(json.loads(text))

    # -- encodings, as the linkage side reports them --------------------------------------

    def register_encodings(self, project_id: str, party: str, tokens_sha256: str, record_count: int) -> None:
        """Record a party's current encodings by the digest of their tokens; its attributes must match it."""
        with self._write() as conn:
            _register_encodings(conn, project_id, party, tokens_sha256, record_count)

    def encodings_tokens(self, project_id: str) -> dict[str, str]:
        """Per party, the token digest of the encodings the statistics side knows of."""
        with self._read() as conn:
            rows = conn.execute(
                select(encodings_tokens.c.party, encodings_tokens.c.tokens_sha256).where(
                    encodings_tokens.c.project_id == project_id
                )
            ).all()
        return {row.party: row.tokens_sha256 for row in rows}

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
            Conflict: different content was uploaded before and ``replace`` is false; or the
                tokens are not those of the party's encodings (uploaded first).
        """
        try:
            protocol = self.protocol(project_id)
            previous = self._attribute_upload(project_id, party)
            if previous is not None and previous.body_sha256 == body_sha256:
                return AttributesOutcome("unchanged", previous.record_count, body_sha256)
            rows = read_attributes(protocol, party, received, shown_as="the uploaded attributes.csv")
            tokens_sha256 = self._check_tokens(project_id, party, rows)
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
                    conn.execute(insert(attributes), _attribute_values(project_id, party, rows[start : start + _CHUNK]))
                values = {
                    "body_sha256": body_sha256,
                    "record_count": len(rows),
                    "uploaded_at": now(),
                    "tokens_sha256": tokens_sha256,
                }
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
            shred_file(received)

    def merge_attributes(self, project_id: str, party: str, received: Path, body_sha256: str) -> AttributesOutcome:
        """Add a batch's attributes.csv to the party's attributes, in one transaction.

        A batch's rows replace those of the same tokens (a correction under a token the party
        holds) and are added otherwise; the withdrawn tokens' rows went when the batch reached
        the linkage side (:meth:`withdraw_tokens`). The merged rows must be exactly the tokens
        of the party's encodings now, or nothing changes. The same batch again changes nothing.
        ``received`` is always deleted.

        Raises:
            InputError: see :func:`read_attributes`.
            Conflict: no attributes were uploaded before, or the merged tokens are not those of
                the party's encodings (the batch's attributes.csv is not the one `pprl encode`
                wrote with the batch's encodings, or the batch has not reached the linkage side).
        """
        try:
            protocol = self.protocol(project_id)
            previous = self._attribute_upload(project_id, party)
            if previous is None:
                raise Conflict(
                    f"party {party!r} has no attributes to add a batch to; "
                    "upload its whole list first (`pprl upload OUTDIR`)"
                )
            if previous.body_sha256 == body_sha256:
                return AttributesOutcome("unchanged", previous.record_count, body_sha256)
            rows = read_attributes(protocol, party, received, shown_as="the batch's attributes.csv")
            with self._write() as conn:
                tokens = [row.token for row in rows]
                for start in range(0, len(tokens), 500):
                    conn.execute(
                        delete(attributes).where(
                            attributes.c.project_id == project_id,
                            attributes.c.party == party,
                            attributes.c.token.in_(tokens[start : start + 500]),
                        )
                    )
                for start in range(0, len(rows), _CHUNK):
                    conn.execute(insert(attributes), _attribute_values(project_id, party, rows[start : start + _CHUNK]))
                held = list(
                    conn.execute(
                        select(attributes.c.token).where(
                            attributes.c.project_id == project_id, attributes.c.party == party
                        )
                    ).scalars()
                )
                digest = token_set_sha256(held)
                known = conn.execute(
                    select(encodings_tokens).where(
                        encodings_tokens.c.project_id == project_id, encodings_tokens.c.party == party
                    )
                ).first()
                if known is None or known.tokens_sha256 != digest:
                    count = 0 if known is None else known.record_count
                    raise Conflict(
                        f"with the batch's {len(rows)} rows, party {party!r}'s attributes would hold {len(held)} "
                        f"tokens that are not the {count} tokens of its encodings now; send the attributes.csv that "
                        "`pprl encode` wrote with the batch, after the batch itself (`pprl upload --batch OUTDIR` "
                        "sends both, in that order)"
                    )
                conn.execute(
                    update(attribute_uploads)
                    .where(attribute_uploads.c.project_id == project_id, attribute_uploads.c.party == party)
                    .values(body_sha256=body_sha256, record_count=len(held), uploaded_at=now(), tokens_sha256=digest)
                )
            return AttributesOutcome("merged", len(held), body_sha256)
        finally:
            shred_file(received)

    def _attribute_upload(self, project_id: str, party: str) -> Row[Any] | None:
        """The party's attributes upload row, if it has uploaded attributes."""
        with self._read() as conn:
            return conn.execute(
                select(attribute_uploads).where(
                    attribute_uploads.c.project_id == project_id, attribute_uploads.c.party == party
                )
            ).first()

    def _check_tokens(self, project_id: str, party: str, rows: list[AttributeRow]) -> str:
        """The digest of the rows' tokens, after checking they are exactly those of the party's encodings."""
        digest = token_set_sha256(row.token for row in rows)
        with self._read() as conn:
            known = conn.execute(
                select(encodings_tokens).where(
                    encodings_tokens.c.project_id == project_id, encodings_tokens.c.party == party
                )
            ).first()
        if known is None:
            raise Conflict(
                f"party {party!r} has no encodings on the linkage side yet, so its attributes cannot be checked; "
                "upload encodings.pprl first (`pprl upload` sends both, encodings first)"
            )
        if known.tokens_sha256 != digest:
            raise Conflict(
                f"the uploaded attributes.csv holds {len(rows)} tokens that are not the {known.record_count} tokens of "
                f"the encodings party {party!r} uploaded; upload the attributes.csv written by the same "
                "`pprl encode` run as those encodings (`pprl upload --replace OUTDIR` sends both)"
            )
        return digest

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
        """The project's ``(entity_id, party, token)`` rows, by entity, checked against the attributes.

        Raises:
            Conflict: a party's attributes are not those of its current encodings, or the
                mapping holds tokens its party's attributes lack (a run on older encodings);
                the message says what to upload or run.
        """
        self._check_consistent(project_id)
        with self._read() as conn:
            rows = conn.execute(
                select(entities.c.entity_id, entities.c.party, entities.c.token)
                .where(entities.c.project_id == project_id)
                .order_by(entities.c.entity_id, entities.c.party)
            ).all()
        return [(row.entity_id, row.party, row.token) for row in rows]

    def _check_consistent(self, project_id: str) -> None:
        known = self.encodings_tokens(project_id)
        with self._read() as conn:
            uploads = conn.execute(
                select(attribute_uploads.c.party, attribute_uploads.c.tokens_sha256).where(
                    attribute_uploads.c.project_id == project_id
                )
            ).all()
            stale = sorted(row.party for row in uploads if row.tokens_sha256 != known.get(row.party))
            if stale:
                raise Conflict(
                    f"the attributes of {', '.join(stale)} are not those of the encodings uploaded since; each must "
                    "upload the attributes.csv written with its current encodings (`pprl upload --replace OUTDIR`)"
                )
            missing = conn.execute(
                select(entities.c.party, func.count())
                .select_from(
                    entities.outerjoin(
                        attributes,
                        (attributes.c.project_id == entities.c.project_id)
                        & (attributes.c.party == entities.c.party)
                        & (attributes.c.token == entities.c.token),
                    )
                )
                .where(
                    entities.c.project_id == project_id,
                    attributes.c.token.is_(None),
                    entities.c.party.in_([row.party for row in uploads]),
                )
                .group_by(entities.c.party)
            ).all()
        if missing:
            parties = ", ".join(sorted(row.party for row in missing))
            raise Conflict(
                f"the latest linkage run used other encodings of {parties} than their attributes belong to; start a "
                "new run (`pprl run`) so that the entities and the attributes describe the same records"
            )

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
        """What the entity table depends on: the mapping (run, last change) and each party's attributes upload.

        The first item is ``None`` before a run's mapping arrived.
        """
        with self._read() as conn:
            found = conn.execute(
                select(mappings.c.run_id, mappings.c.copied_at).where(mappings.c.project_id == project_id)
            ).first()
            run = None if found is None else (found.run_id, found.copied_at)
            uploads = conn.execute(
                select(attribute_uploads.c.party, attribute_uploads.c.body_sha256)
                .where(attribute_uploads.c.project_id == project_id)
                .order_by(attribute_uploads.c.party)
            ).all()
        return (run, *((row.party, row.body_sha256) for row in uploads))

    # -- erasure ------------------------------------------------------------------------
    # Each method is one transaction and idempotent: the linkage side's erasure journal
    # calls it again after a crash. The ledger (releases, ledger_heads) and the project's
    # protocol are never erased: they record what was released, and hold no personal data.

    def withdraw_tokens(
        self, project_id: str, party: str, tokens: Iterable[str], tokens_sha256: str, record_count: int
    ) -> None:
        """Forget withdrawn records: their attributes and mapping rows; register the party's encodings after.

        The party's attributes upload is counted again from the rows left, so that it
        matches its encodings after the withdrawal exactly when it matched them before.
        """
        ordered = sorted(set(tokens))
        with self._write() as conn:
            removed = 0
            for start in range(0, len(ordered), 500):
                batch = ordered[start : start + 500]
                for table in (attributes, entities):
                    removed += conn.execute(
                        delete(table).where(
                            table.c.project_id == project_id, table.c.party == party, table.c.token.in_(batch)
                        )
                    ).rowcount
            self._recount_attributes(conn, project_id, party)
            _register_encodings(conn, project_id, party, tokens_sha256, record_count)
            if removed:
                self._mapping_changed(conn, project_id)

    def erase_party(self, project_id: str, party: str, *, removed: bool = True) -> None:
        """Erase one party's attributes, mapping rows and encodings digest of a project.

        ``removed``: the party leaves the project (its credential goes too, and answers say
        so); otherwise its upload expired, and it may upload again.
        """
        with self._write() as conn:
            for table in (attributes, entities, attribute_uploads, encodings_tokens):
                conn.execute(delete(table).where(table.c.project_id == project_id, table.c.party == party))
            self._mapping_changed(conn, project_id)
            if not removed:
                return
            conn.execute(
                delete(credentials).where(
                    credentials.c.project_id == project_id, credentials.c.role == "party", credentials.c.party == party
                )
            )
            known = conn.execute(
                select(erased_parties.c.party).where(
                    erased_parties.c.project_id == project_id, erased_parties.c.party == party
                )
            ).first()
            if known is None:
                conn.execute(insert(erased_parties).values(project_id=project_id, party=party, erased_at=now()))

    def erase_project(self, project_id: str) -> None:
        """Erase a project's attributes, mapping, digests, analysts and credentials; keep its ledger and protocol."""
        with self._write() as conn:
            for table in (attributes, entities, mappings, attribute_uploads, encodings_tokens, analysts, credentials):
                conn.execute(delete(table).where(table.c.project_id == project_id))

    def removed_parties(self, project_id: str) -> dict[str, datetime]:
        """The parties removed from the project, and when."""
        with self._read() as conn:
            rows = conn.execute(
                select(erased_parties.c.party, erased_parties.c.erased_at).where(
                    erased_parties.c.project_id == project_id
                )
            ).all()
        return {row.party: row.erased_at if row.erased_at.tzinfo else row.erased_at.replace(tzinfo=UTC) for row in rows}

    def _recount_attributes(self, conn: Connection, project_id: str, party: str) -> None:
        """Set a party's attributes upload's count and token digest from the rows it has now."""
        tokens = list(
            conn.execute(
                select(attributes.c.token).where(attributes.c.project_id == project_id, attributes.c.party == party)
            ).scalars()
        )
        conn.execute(
            update(attribute_uploads)
            .where(attribute_uploads.c.project_id == project_id, attribute_uploads.c.party == party)
            .values(record_count=len(tokens), tokens_sha256=token_set_sha256(tokens))
        )

    @staticmethod
    def _mapping_changed(conn: Connection, project_id: str) -> None:
        """Note that the project's mapping rows changed, so that cached entity tables are built again."""
        conn.execute(update(mappings).where(mappings.c.project_id == project_id).values(copied_at=now()))

    # -- the budget ledger --------------------------------------------------------------

    def _seal_ledgers(self) -> None:
        """Bring what an older pprl stored up to date: start the ledgers' chains, digest attributes' tokens.

        A ledger is sealed only if none of its releases has a hash yet and it has no head;
        a missing head next to hashed releases is tampering, which is reported, never sealed.
        """
        with self._write() as conn:
            headed = set(conn.execute(select(ledger_heads.c.project_id)).scalars())
            hashed = set(conn.execute(select(releases.c.project_id).where(releases.c.sha256.is_not(None))).scalars())
            for project_id in sorted(set(conn.execute(select(releases.c.project_id)).scalars()) - headed - hashed):
                previous, count, last = GENESIS, 0, 0
                for row in conn.execute(
                    select(releases).where(releases.c.project_id == project_id).order_by(releases.c.number)
                ).all():
                    digest = chain_digest(previous, _release_values(row))
                    conn.execute(
                        update(releases)
                        .where(releases.c.project_id == project_id, releases.c.number == row.number)
                        .values(prev_sha256=previous, sha256=digest)
                    )
                    previous, count, last = digest, count + 1, row.number
                head = {"project_id": project_id, "number": last, "sha256": previous, "rows": count}
                conn.execute(insert(ledger_heads).values(**head))
            unchecked = conn.execute(
                select(attribute_uploads.c.project_id, attribute_uploads.c.party).where(
                    attribute_uploads.c.tokens_sha256.is_(None)
                )
            ).all()
            for project_id, party in unchecked:
                tokens = conn.execute(
                    select(attributes.c.token).where(attributes.c.project_id == project_id, attributes.c.party == party)
                ).scalars()
                conn.execute(
                    update(attribute_uploads)
                    .where(attribute_uploads.c.project_id == project_id, attribute_uploads.c.party == party)
                    .values(tokens_sha256=token_set_sha256(tokens))
                )

    def _ledger(self, conn: Connection, project_id: str) -> tuple[list[LedgerEntry], ChainCheck]:
        """The project's releases in order, and the check of their hash chain."""
        rows = conn.execute(
            select(releases).where(releases.c.project_id == project_id).order_by(releases.c.number)
        ).all()
        head_row = conn.execute(select(ledger_heads).where(ledger_heads.c.project_id == project_id)).first()
        head = None if head_row is None else ChainHead(head_row.number, head_row.sha256, head_row.rows)
        chain = (ChainRow(row.number, row.prev_sha256, row.sha256, _release_values(row)) for row in rows)
        check = verify_chain(f"the ledger of project {project_id}", chain, head)
        entries = [
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
        return entries, check

    def _entries(self, conn: Connection, project_id: str) -> list[LedgerEntry]:
        """The project's releases, after checking the ledger's chain.

        Raises:
            TamperedError: the ledger was edited or cut at rest.
        """
        entries, check = self._ledger(conn, project_id)
        if not check.ok:
            raise TamperedError(
                f"{check.problem}. Nothing more is released from this project until its ledger is restored from a "
                "backup of the statistics database (`pprl audit --verify` checks every chain)"
            )
        return entries

    def verify_ledgers(self) -> list[ChainCheck]:
        """Check every project's ledger hash chain."""
        with self._read() as conn:
            project_ids = list(conn.execute(select(projects.c.id).order_by(projects.c.created_at)).scalars())
            return [self._ledger(conn, project_id)[1] for project_id in project_ids]

    def budget(self, project_id: str) -> Budget:
        """The project's total, what its releases spent, and each release.

        Raises:
            TamperedError: the ledger was edited or cut at rest.
        """
        total = budget_of(self.protocol(project_id))
        with self._read() as conn:
            return Budget.from_entries(total, self._entries(conn, project_id))

    @contextmanager
    def spend(self, project_id: str, who: str, query: str, cost: Loss) -> Iterator[Receipt]:
        """Hold the project's ledger while a release is computed; record it if the body succeeds.

        The body fills in the receipt it is given. The check, the body and the record are
        one transaction that holds the project's row lock (PostgreSQL) or the database's
        write lock (SQLite), so concurrent queries queue and can never overspend together.
        If the body raises, nothing is recorded. An analyst with a budget of their own
        (``who`` = ``analyst:NAME``) spends from it too.

        Raises:
            BudgetExceeded: the cost does not fit in what is left of the project's budget or
                of the analyst's own; nothing is recorded.
            TamperedError: the ledger's hash chain is broken; nothing is released.
        """
        total = budget_of(self.protocol(project_id))
        own = self._analyst_loss(project_id, who)
        with self._write() as conn:
            conn.execute(select(projects.c.id).where(projects.c.id == project_id).with_for_update()).scalar()
            entries = self._entries(conn, project_id)
            check_affordable(Budget.from_entries(total, entries), cost)
            if own is not None:
                _check_own(Budget.from_entries(own, [entry for entry in entries if entry.who == who]), cost, who)
            receipt = Receipt()
            yield receipt
            head = conn.execute(select(ledger_heads).where(ledger_heads.c.project_id == project_id)).first()
            previous = GENESIS if head is None else head.sha256
            row = {
                "project_id": project_id,
                "number": len(entries) + 1,
                "at": now(),
                "who": who,
                "query": query,
                "loss": json.dumps(cost.to_json()),
                "mechanism": receipt.mechanism,
            }
            digest = chain_digest(previous, _release_values(row))
            conn.execute(insert(releases).values(**row, prev_sha256=previous, sha256=digest))
            moved = {"number": row["number"], "sha256": digest, "rows": len(entries) + 1}
            if head is None:
                conn.execute(insert(ledger_heads).values(project_id=project_id, **moved))
            else:
                conn.execute(update(ledger_heads).where(ledger_heads.c.project_id == project_id).values(**moved))


def _check_own(budget: Budget, cost: Loss, who: str) -> None:
    """Refuse a release an analyst's own budget cannot pay for."""
    if not (budget.spent + cost).fits_within(budget.total):
        raise BudgetExceeded(
            f"this query costs {cost} but only {budget.remaining} of {who}'s own budget {budget.total} is left "
            f"({len(budget.entries)} release(s) so far); ask for a smaller cost, or ask the administrator. "
            "Nothing was spent."
        )


def _release_values(row: Any) -> list[object]:
    """What a release's hash covers, in a fixed order (the time as UTC ISO with microseconds)."""
    mapping = row._mapping if hasattr(row, "_mapping") else row
    at: datetime = mapping["at"] if mapping["at"].tzinfo else mapping["at"].replace(tzinfo=UTC)
    return [
        mapping["project_id"],
        mapping["number"],
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        mapping["who"],
        mapping["query"],
        mapping["loss"],
        mapping["mechanism"],
    ]


def _register_encodings(conn: Connection, project_id: str, party: str, tokens_sha256: str, record_count: int) -> None:
    """Replace a party's registered encodings (its tokens' digest and count) in ``conn``'s transaction."""
    conn.execute(
        delete(encodings_tokens).where(encodings_tokens.c.project_id == project_id, encodings_tokens.c.party == party)
    )
    conn.execute(
        insert(encodings_tokens).values(
            project_id=project_id,
            party=party,
            tokens_sha256=tokens_sha256,
            record_count=record_count,
            registered_at=now(),
        )
    )


def _attribute_values(project_id: str, party: str, rows: Sequence[AttributeRow]) -> list[dict[str, Any]]:
    """The ``attributes`` table's rows for some of a party's attribute rows."""
    return [
        {
            "project_id": project_id,
            "party": party,
            "token": row.token,
            "consent": row.consent,
            "attribute_values": json.dumps(row.values, separators=(",", ":")),
        }
        for row in rows
    ]
