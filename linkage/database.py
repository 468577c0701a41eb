"""What the linkage store and the statistics store share: engines, transactions, projects, credentials.

Each side keeps its own database (or PostgreSQL schema) with its own copy of every
project's protocol and its own hashes of the project's credentials, so neither needs the
other to authenticate a caller. This module holds the code for that, once; the tables
are made per side by :func:`project_tables`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import traceback
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import Connection, Row, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.schema import CreateSchema, DropSchema

from linkage.errors import InputError
from linkage.file_modes import private_file
from linkage.protocol import Protocol

__all__ = ["ANALYST", "Database", "hash_token", "loggable_traceback", "now", "open_engine", "project_tables"]

ANALYST = "analyst"


def now() -> datetime:
    """The current time in UTC (everything stored is UTC)."""
    return datetime.now(UTC)


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a credential is stored.

    >>> hash_token("pprl_x")[:12]
    'b450f1452d5e'
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_DRIVERS = ("sqlalchemy", "psycopg", "sqlite3")


def loggable_traceback(exc: BaseException) -> str:
    """``exc``'s traceback, causes first, with every database error's message withheld.

    ``hide_parameters`` keeps a statement's parameters out of a database error, but not the
    database's own words: PostgreSQL's DETAIL quotes the value of a duplicate key or of a
    violated constraint, which may be a token, a credential hash or an attribute. The
    frames, each exception's class and, for a database error, its SQLSTATE stay, which is
    what finding the fault needs.

    >>> try:
    ...     raise KeyError("x")
    ... except KeyError as error:
    ...     print(loggable_traceback(error).splitlines()[-1])
    KeyError: 'x'
    """
    errors: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and all(error is not seen for seen in errors) and len(errors) < 20:
        errors.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    parts = []
    for error in reversed(errors):
        kind = type(error)
        if kind.__module__.partition(".")[0] in _DRIVERS:
            original = getattr(error, "orig", error)
            state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
            withheld = "message withheld: a database error may quote stored values"
            last = f"{kind.__module__}.{kind.__qualname__}: {withheld}" + (f" (SQLSTATE {state})" if state else "")
        else:
            last = traceback.format_exception_only(error)[-1].rstrip()
        frames = "".join(traceback.format_tb(error.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{last}")
    return "\n\nThe above exception led to the following one:\n\n".join(parts)


def open_engine(url: str, schema: str | None) -> Engine:
    """An engine for SQLite or PostgreSQL, set up for safe concurrent use by one server.

    SQLite gets WAL and ``BEGIN IMMEDIATE`` for write transactions (so two writers queue
    instead of failing on lock upgrade); PostgreSQL gets its own schema. A database error
    never shows its statement's parameters (tokens, credential hashes, attribute values);
    the server logs a 500's traceback through :func:`loggable_traceback`.

    Raises:
        InputError: the URL is not SQLite or ``postgresql+psycopg``, or the database is unreachable.
    """
    try:
        parsed = make_url(url)
    except SQLAlchemyError as exc:
        raise InputError("the database URL cannot be parsed; write postgresql+psycopg://USER@HOST/DB") from exc
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # Created 0600 before SQLite opens it; its -wal and -shm files take the same mode.
            private_file(Path(parsed.database))
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 60}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.drivername != "postgresql+psycopg":
        raise InputError(
            f"unsupported database URL {shown}; use postgresql+psycopg://USER@HOST/DB (psycopg 3), "
            "or leave --database-url out for SQLite files in the data folder"
        )
    engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    if schema:
        try:
            with engine.begin() as conn:
                conn.execute(CreateSchema(schema, if_not_exists=True))
        except SQLAlchemyError as exc:
            raise InputError(
                f"cannot open the database {shown} ({exc.__class__.__name__}); check that PostgreSQL "
                "runs there and the user may create a schema"
            ) from exc
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's own is deferred-only).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Deleted rows are overwritten with zeros, so that an erasure leaves no bytes behind in
    # free pages (the write-ahead log is emptied after an erasure, see Database.compact).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("pprl_write") else "BEGIN")


def project_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The ``projects`` and ``credentials`` tables of one side's database."""
    projects = Table(
        "projects",
        metadata,
        Column("id", String(32), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("protocol", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    credentials = Table(
        "credentials",
        metadata,
        Column("token_sha256", String(64), primary_key=True),
        Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
        Column("role", String(16), nullable=False),
        Column("party", String(32)),
        Column("created_at", DateTime(timezone=True), nullable=False),
        # An analyst's name (``None``: the project's shared analyst credential, named "analyst").
        Column("name", String(32)),
    )
    return projects, credentials


# Sessions of this database (or replication slots) whose snapshot is older than the
# transaction id given: rows deleted before it may still be visible to them.
_OLDER_SNAPSHOTS = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND backend_type NOT LIKE 'autovacuum%%' AND backend_xmin IS NOT NULL
        AND age(backend_xmin) >= age(%(marker)s::text::xid))
     + (SELECT count(*) FROM pg_replication_slots WHERE xmin IS NOT NULL AND age(xmin) >= age(%(marker)s::text::xid))
"""


class Database:
    """One side's database: its engine, transactions, and its copy of projects and credentials.

    Args:
        url: a database URL.
        schema: the PostgreSQL schema (ignored for SQLite).
        metadata: the side's tables, including those of :func:`project_tables`.
    """

    def __init__(self, url: str, schema: str | None, metadata: MetaData) -> None:
        self._schema = schema
        self._metadata = metadata
        self._projects = metadata.tables["projects"]
        self._credentials = metadata.tables["credentials"]
        self._engine = open_engine(url, schema)
        # A store dropped without close() (or used again after it) still releases its pooled
        # connections, rather than leaving them to the garbage collector unclosed.
        weakref.finalize(self, self._engine.dispose)
        metadata.create_all(self._engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Add the columns a newer pprl defines to tables an older one created (new columns are nullable)."""
        schema = self._schema if self._engine.dialect.name == "postgresql" else None
        inspector = inspect(self._engine)
        missing = []
        for table in self._metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name, schema=schema)}
            missing += [(table, column) for column in table.columns if column.name not in present]
        if not missing:
            return
        preparer = self._engine.dialect.identifier_preparer
        with self._engine.begin() as conn:
            for table, column in missing:
                name = preparer.quote(table.name)
                qualified = f"{preparer.quote_schema(schema)}.{name}" if schema else name
                kind = column.type.compile(dialect=self._engine.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {qualified} ADD COLUMN {preparer.quote(column.name)} {kind}")

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(pprl_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    def compact(self) -> bool:
        """Rewrite the database so that deleted rows leave no bytes behind in it.

        SQLite: ``VACUUM`` (a fresh file without free pages), then a checkpoint that empties
        the write-ahead log, whose older frames still hold the rows as they were.
        PostgreSQL keeps a deleted row's bytes in its table, index and TOAST pages (a dead
        tuple, then unzeroed free space) until the space happens to be reused: here every
        table of this side is rewritten from its live rows (``VACUUM (FULL, ANALYZE)``, on an
        autocommit connection, which rebuilds its indexes and TOAST table too and takes the
        planner's statistics again from the rows left), then the statistics catalog
        ``pg_statistic``, whose older rows sampled the erased values (PostgreSQL skips it,
        with a warning in its log, unless the user owns the database). The write-ahead log,
        its archive and backups are the operator's (docs/erasure.md).

        Returns:
            Whether it is complete: ``False`` if a reader held SQLite's write-ahead log, or a
            PostgreSQL table stayed locked for ``lock_timeout_seconds``; compacting again
            later finishes it.
        """
        if self._engine.dialect.name == "postgresql":
            return self._vacuum_full()
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("VACUUM")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            outcome = cursor.fetchone()
            busy = outcome is None or bool(outcome[0])
            cursor.close()
        finally:
            raw.close()
        return not busy

    def _vacuum_full(self, lock_timeout_seconds: int = 60) -> bool:
        preparer = self._engine.dialect.identifier_preparer
        prefix = f"{preparer.quote_schema(self._schema)}." if self._schema else ""
        names = ", ".join(prefix + preparer.quote(table.name) for table in self._metadata.sorted_tables)
        try:
            with self._engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql(f"SET lock_timeout = '{int(lock_timeout_seconds)}s'")
                # VACUUM FULL keeps a deleted row that an older snapshot may still see (another
                # session's open transaction): wait until every snapshot began after the erasure.
                marker = conn.exec_driver_sql("SELECT (txid_current() %% 4294967296)::text").scalar()
                deadline = time.monotonic() + lock_timeout_seconds
                while conn.exec_driver_sql(_OLDER_SNAPSHOTS, {"marker": str(marker)}).scalar():
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.1)  # no event tells when another session's transaction ends
                try:
                    conn.exec_driver_sql(f"VACUUM (FULL, ANALYZE) {names}")
                    conn.exec_driver_sql("VACUUM (FULL) pg_catalog.pg_statistic")
                finally:
                    conn.exec_driver_sql("RESET lock_timeout")  # the pooled connection goes back as it came
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                return False
            raise
        return True

    def close(self) -> None:
        """Release pooled connections (the store stays usable and reconnects on demand)."""
        self._engine.dispose()

    def destroy(self) -> None:
        """Drop every table (and the PostgreSQL schema); for tests and uninstalling."""
        self._metadata.drop_all(self._engine)
        if self._schema and self._engine.dialect.name == "postgresql":
            with self._engine.begin() as conn:
                conn.execute(DropSchema(self._schema, cascade=True, if_exists=True))
        self._engine.dispose()

    def _insert_project(
        self, conn: Connection, project_id: str, protocol: Protocol, credential_hashes: Mapping[str, str]
    ) -> datetime:
        """Store a project and its credential hashes (``{party id or "analyst": sha256}``) in ``conn``."""
        created = now()
        conn.execute(
            insert(self._projects).values(
                id=project_id,
                name=protocol.name,
                fingerprint=protocol.fingerprint,
                protocol=json.dumps(protocol.document, sort_keys=True),
                created_at=created,
            )
        )
        conn.execute(
            insert(self._credentials),
            [
                {
                    "token_sha256": digest,
                    "project_id": project_id,
                    "role": ANALYST if key == ANALYST else "party",
                    "party": None if key == ANALYST else key,
                    "created_at": created,
                }
                for key, digest in credential_hashes.items()
            ],
        )
        return created

    def _insert_credential(self, conn: Connection, project_id: str, role: str, name: str, digest: str) -> None:
        """Store one more credential hash of a project (an analyst's own) in ``conn``."""
        conn.execute(
            insert(self._credentials).values(
                token_sha256=digest, project_id=project_id, role=role, party=None, name=name, created_at=now()
            )
        )

    def _credential(self, token: str) -> Row[Any] | None:
        """The credentials row a token stands for, or ``None``; compared in constant time."""
        digest = hash_token(token)
        with self._read() as conn:
            row = conn.execute(select(self._credentials).where(self._credentials.c.token_sha256 == digest)).first()
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            return None
        return row
