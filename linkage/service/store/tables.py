"""The linkage side's tables: one schema for SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

from linkage.database import project_tables

ACTIVE_STATUSES = ("queued", "running")
_CHUNK = 5000  # rows per INSERT or fetch
_metadata = MetaData()

projects, credentials = project_tables(_metadata)
uploads = Table(
    "uploads",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("body_sha256", String(64), nullable=False),
    Column("records_sha256", String(64), nullable=False),
    Column("secret_check", String(128), nullable=False),
    Column("record_count", BigInteger, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    # SHA-256 of the upload's set of tokens (token_set_sha256): the statistics side checks
    # attributes against it. Filled in at start-up for uploads stored before it existed.
    Column("tokens_sha256", String(64)),
)
runs = Table(
    "runs",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Float, nullable=False, default=0.0),
    Column("message", Text, nullable=False, default=""),
    Column("inputs", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("entity_count", Integer),
    Column("linked_records", Integer),
    # The run's number within its project (1, 2, ...): what parties see as its id.
    Column("number", Integer),
    # Who queued it (``party:msd``, ``admin``): parties may start only so many.
    Column("started_by", String(80)),
)
# At most one queued or running run per project, enforced by the database itself.
Index(
    "runs_one_active_per_project",
    runs.c.project_id,
    unique=True,
    sqlite_where=runs.c.status.in_(ACTIVE_STATUSES),
    postgresql_where=runs.c.status.in_(ACTIVE_STATUSES),
)
Index("runs_number_per_project", runs.c.project_id, runs.c.number, unique=True)
entities = Table(
    "entities",
    _metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("entity_id", Integer, nullable=False),
)
Index("entities_by_entity", entities.c.run_id, entities.c.entity_id)
# The frozen model of a project (:mod:`linkage.matching.frozen`), as its JSON document; and
# each run's stable mapping, which the statistics side receives instead of the entities.
frozen_models = Table(
    "frozen_models",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("fitted_run", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
stable_entities = Table(
    "stable_entities",
    _metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("entity_id", Integer, nullable=False),
)
audit = Table(
    "audit",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("action", String(64), nullable=False),
    Column("project_id", String(32)),
    Column("outcome", String(64), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    # The hash chain (linkage.chain): the previous line's hash and this line's own.
    Column("prev_sha256", String(64)),
    Column("sha256", String(64)),
    # AUTOINCREMENT: SQLite never hands out the id of a deleted last line again.
    sqlite_autoincrement=True,
)
chain_heads = Table(
    "chain_heads",
    _metadata,
    Column("name", String(32), primary_key=True),
    Column("last_key", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("rows", BigInteger, nullable=False),
)
threat_requests = Table(
    "threat_requests",
    _metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("party", String(32), nullable=False),
    Column("tokens", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(80)),
    Column("note", Text, nullable=False, default=""),
)
# The erasure journal: a withdrawal, a party's removal or a project's deletion is written
# here (pending) before anything is erased, carried out in idempotent steps, and marked
# done with its audit line in one transaction; a start-up finishes what a crash left
# pending (linkage.service.erasure). No foreign key: the line outlives its project.
erasures = Table(
    "erasures",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(32), nullable=False),
    Column("party", String(32)),
    # withdraw, party (one party's data), expire (one party's data; it may upload again)
    # or project (all of it).
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(80), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True)),
    # JSON: the SHA-256 names of the blobs to shred.
    Column("blobs", Text, nullable=False),
    # JSON: the tokens to withdraw, only while pending (emptied when done).
    Column("tokens", Text),
    # JSON: for a withdrawal, the party's upload after it (the new blob's name and counts),
    # and the SHA-256 of each withdrawn token (kept: what was withdrawn, without the tokens).
    Column("plan", Text),
    # What was erased, in counts (and a withdrawal's token-set digest): the audit line's detail.
    Column("summary", Text, nullable=False),
    # pending from the moment the erasure is done until both databases were rewritten
    # (Database.compact) without the deleted rows' bytes, then done; a start or the next
    # erasure compacts while any is pending. None: an older pprl's erasure.
    Column("compaction", String(16)),
    sqlite_autoincrement=True,
)
# A party's batch (``pprl upload --batch``): its new and corrected records and its withdrawals,
# merged into its upload at once (the upload stays the party's whole current list) and kept
# pending until a run links it incrementally (linkage.service.batches).
batches = Table(
    "batches",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("party", String(32), nullable=False),
    # pending (not linked yet) or linked.
    Column("status", String(16), nullable=False),
    # The batch's records as an encodings blob (None: withdrawals only); shredded once linked.
    Column("body_sha256", String(64)),
    # The party's upload before and after the batch: a run links batches incrementally only
    # when they chain from the upload its link state was made from to the current one.
    Column("base_sha256", String(64), nullable=False),
    Column("result_sha256", String(64), nullable=False),
    Column("added", Integer, nullable=False),
    Column("corrected", Integer, nullable=False),
    Column("withdrawn", Integer, nullable=False),
    # JSON: the withdrawn tokens, only while pending.
    Column("tokens", Text),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    Column("run_id", Integer),
    sqlite_autoincrement=True,
)
# The project's linkage state (linkage.matching.link_state) after its latest batch run: a
# file under DATA_DIR/states, as sensitive as the encodings; dropped by any erasure.
link_states = Table(
    "link_states",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("name", String(80), nullable=False),
    Column("next_entity", BigInteger, nullable=False),
)
# The first entity id the project has never given out (its high-water mark): ids only grow,
# so an id retired (merged into another, or its records erased) is never handed to other
# records. It outlives the linkage state, which any erasure drops; it holds no personal data.
entity_marks = Table(
    "entity_marks",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("next_entity", BigInteger, nullable=False),
)
# What each party was given at its last results download: per released token, its entity id
# and the parties it was shared with; the next download lists what changed since.
downloads = Table(
    "downloads",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("entity_id", Integer, nullable=False),
    Column("shared_with", Text, nullable=False),
)
download_runs = Table(
    "download_runs",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("run_number", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
