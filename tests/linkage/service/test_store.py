"""The linkage store on SQLite and (with PPRL_TEST_DATABASE_URL) PostgreSQL: the same tests."""

import gc
import hashlib
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import delete, update

from linkage.errors import Conflict, InputError, MismatchError, NotFound
from linkage.matching.engine import LinkResult
from linkage.matching.solve import Entity
from linkage.service.store import (
    LinkageStore,
    audit,
    hash_token,
    issue_credentials,
    new_project_id,
    open_engine,
    uploads,
)
from tests.helpers import schema_suffix


@pytest.fixture
def store(database_url, tmp_path):
    created = LinkageStore(tmp_path / "data", database_url, schema=f"pprl_linkage_t{schema_suffix()}")
    yield created
    created.destroy()


def new_project(store, protocol):
    project_id = new_project_id()
    tokens = issue_credentials(protocol)
    store.create_project(project_id, protocol, {key: hash_token(token) for key, token in tokens.items()})
    return project_id, tokens


def fake_result(parties, tokens, groups):
    """A LinkResult with the given entities: groups of (party index, record index)."""
    arrays = tuple(np.frombuffer(bytes.fromhex("".join(t)), dtype=np.uint8).reshape(-1, 16) for t in tokens)
    return LinkResult(tuple(parties), arrays, [Entity(tuple(g)) for g in groups], 0.9, 10, 5, 3, 0.1)


def test_credentials_are_scoped_and_stored_only_hashed(store, protocol):
    project_id, tokens = new_project(store, protocol)
    assert set(tokens) == {"msd", "police", "haven", "analyst"}
    assert all(len(token) > 40 and token.startswith("pprl_") for token in tokens.values())
    police = store.authenticate(tokens["police"])
    assert (police.role, police.project_id, police.party) == ("party", project_id, "police")
    analyst = store.authenticate(tokens["analyst"])
    assert (analyst.role, analyst.party) == ("analyst", None)
    assert store.authenticate(tokens["police"] + "x") is None
    assert store.authenticate("") is None
    if store._engine.dialect.name == "sqlite":
        raw = b"".join(path.read_bytes() for path in store.data_dir.glob("linkage.db*"))
        assert not any(token.encode() in raw for token in tokens.values())
        assert hash_token(tokens["police"]).encode() in raw


def test_unknown_project_is_not_found(store):
    with pytest.raises(NotFound, match="no project 'nope'"):
        store.project("nope")


def test_encodings_are_checked_before_anything_is_stored(store, protocol):
    project_id, _ = new_project(store, protocol)
    received = store.incoming_path()
    received.write_bytes(b"PPRLENC1garbage")
    with pytest.raises(InputError, match="the uploaded encodings file: the encodings header is damaged"):
        store.accept_encodings(project_id, "msd", received, "0" * 64, replace=False)
    assert not received.exists()
    assert list(store.blob_dir.iterdir()) == []
    assert store.uploads(project_id) == {}


def test_encodings_round_trip_and_conflicts(store, protocol, agencies, foreign):
    project_id, _ = new_project(store, protocol)

    def receive(path):
        received = store.incoming_path()
        received.write_bytes(path.read_bytes())
        return received, hashlib.sha256(path.read_bytes()).hexdigest()

    received, sha = receive(agencies["msd"] / "encodings.pprl")
    assert store.accept_encodings(project_id, "msd", received, sha, replace=False).status == "created"
    assert store.blob_path(sha).read_bytes() == (agencies["msd"] / "encodings.pprl").read_bytes()
    received, same = receive(agencies["msd"] / "encodings.pprl")
    assert store.accept_encodings(project_id, "msd", received, same, replace=False).status == "unchanged"
    received, other = receive(foreign["again"] / "encodings.pprl")
    with pytest.raises(Conflict, match="pass --replace"):
        store.accept_encodings(project_id, "msd", received, other, replace=False)
    assert not store.blob_path(other).exists()
    received, _ = receive(agencies["msd"] / "encodings.pprl")
    with pytest.raises(MismatchError, match="encoded for party 'msd', but your token is for party 'haven'"):
        store.accept_encodings(project_id, "haven", received, "1" * 64, replace=False)
    assert set(store.uploads(project_id)) == {"msd"}


def test_clean_blobs_keeps_only_what_uploads_refer_to(store, protocol, agencies):
    project_id, _ = new_project(store, protocol)
    body = (agencies["haven"] / "encodings.pprl").read_bytes()
    received = store.incoming_path()
    received.write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()
    store.accept_encodings(project_id, "haven", received, sha, replace=False)
    (store.blob_dir / ".incoming-dead").write_bytes(b"half")
    (store.blob_dir / ("f" * 64)).write_bytes(b"orphan")
    assert store.clean_blobs() == 2
    assert [path.name for path in store.blob_dir.iterdir()] == [sha]


def upload_rows(store, project_id, parties):
    """Pretend uploads (rows only) so that runs can start."""
    check = "s"
    with store._write() as conn:
        for party in parties:
            conn.execute(
                uploads.insert().values(
                    project_id=project_id,
                    party=party,
                    body_sha256=party * 4,
                    records_sha256="r",
                    secret_check=check,
                    record_count=1,
                    size_bytes=1,
                    uploaded_at=datetime.now(UTC),
                )
            )


def test_at_most_one_active_run_even_under_concurrent_starts(store, protocol):
    project_id, _ = new_project(store, protocol)
    with pytest.raises(Conflict, match="waiting for encodings from msd, police, haven"):
        store.start_run(project_id)
    upload_rows(store, project_id, ["msd", "police", "haven"])
    outcomes = []
    barrier = threading.Barrier(6)

    def start():
        barrier.wait()
        outcomes.append(store.start_run(project_id))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({started.run.id for started in outcomes}) == 1
    assert sum(started.created for started in outcomes) == 1
    claimed = store.claim_next_run()
    assert claimed.status == "running"
    assert store.claim_next_run() is None
    assert store.start_run(project_id).run.id == claimed.id
    again, failed = store.requeue_interrupted()
    assert ([run.id for run in again], failed) == ([claimed.id], [])
    assert store.run(project_id, claimed.number).status == "queued"


def test_entities_of_the_latest_done_run_only_and_shared_records(store, protocol):
    project_id, _ = new_project(store, protocol)
    upload_rows(store, project_id, ["msd", "police", "haven"])
    a, b, c, d = ("a" * 32, "b" * 32), ("c" * 32, "d" * 32), ("e" * 32,), ("f" * 32, "0" * 32)
    first = store.start_run(project_id).run
    store.claim_next_run()
    store.store_entities(first.id, fake_result(["msd", "police", "haven"], [a, b, c], [[(0, 0), (1, 0)]]))
    store.finish_run(first.id)
    started = store.start_run(project_id)
    second = started.run
    assert started.created
    assert (first.number, second.number) == (1, 2)
    store.claim_next_run()
    result = fake_result(["msd", "police", "haven"], [a, b, c], [[(0, 0), (1, 1), (2, 0)], [(0, 1), (1, 0)]])
    assert store.store_entities(second.id, result) == (2, 5)
    assert store.store_entities(second.id, result) == (2, 5), "a second attempt replaces the first"
    assert store.latest_done_run(project_id).id == first.id
    assert len(list(store.entity_rows(first.id))[0]) == 2, "earlier results stand until the new run is done"
    done = store.finish_run(second.id)
    assert (done.status, done.entity_count, done.linked_records) == ("done", 2, 5)
    assert store.latest_done_run(project_id).id == second.id
    assert list(store.entity_rows(first.id)) == []
    rows = [row for chunk in store.entity_rows(second.id) for row in chunk]
    assert rows == [
        (1, "haven", "e" * 32),
        (1, "msd", "a" * 32),
        (1, "police", "d" * 32),
        (2, "msd", "b" * 32),
        (2, "police", "c" * 32),
    ]
    shared = store.shared_records(second.id, "msd")
    assert [(s.token, s.others) for s in shared] == [
        ("a" * 32, (("haven", "e" * 32), ("police", "d" * 32))),
        ("b" * 32, (("police", "c" * 32),)),
    ]
    assert [s.token for s in store.shared_records(second.id, "msd", ["b" * 32, d[0]])] == ["b" * 32]
    assert store.shared_records(second.id, "haven", ["a" * 32]) == []


def test_the_audit_log_appends_and_filters(store):
    store.append_audit("admin", "project.create", "p1", "ok", "one")
    store.append_audit("party:msd", "encodings.upload", "p2", "created")
    store.append_audit("party:msd", "results.download", "p1", "forbidden")
    entries = store.audit_entries()
    assert [e.action for e in entries] == ["project.create", "encodings.upload", "results.download"]
    assert [e.id for e in store.audit_entries(project_id="p1")] == [entries[0].id, entries[2].id]
    assert [e.id for e in store.audit_entries(after=entries[0].id, limit=1)] == [entries[1].id]
    assert entries[0].at.tzinfo is not None


def test_unsupported_database_urls_are_refused_without_the_password():
    with pytest.raises(InputError, match=r"unsupported database URL mysql://me:\*\*\*@db/x") as caught:
        open_engine("mysql://me:hunter2@db/x", None)
    assert "hunter2" not in str(caught.value)


def tamper(store, statement):
    """Change the database behind the store's back, as someone with the files would (server stopped)."""
    with store._engine.begin() as conn:
        conn.execute(statement)


def test_the_audit_log_is_a_hash_chain_that_shows_edits_and_deletions(database_url, tmp_path):
    schema = f"pprl_linkage_t{schema_suffix()}"
    store = LinkageStore(tmp_path / "data", database_url, schema=schema)
    for number in range(5):
        store.append_audit("party:police", "results.serious_threat", "p1", "ok", f"reason {number}")
    check = store.verify_audit()
    assert (check.ok, check.rows) == (True, 5)
    ids = [entry.id for entry in store.audit_entries()]

    tamper(store, update(audit).where(audit.c.id == ids[2]).values(detail="reason edited"))
    edited = store.verify_audit()
    assert not edited.ok and edited.first_bad == ids[2]
    assert f"row {ids[2]} does not match its hash: it was edited" in edited.problem
    tamper(store, update(audit).where(audit.c.id == ids[2]).values(detail="reason 2"))
    assert store.verify_audit().ok

    tamper(store, delete(audit).where(audit.c.id == ids[-1]))
    cut = store.verify_audit()
    assert not cut.ok and "rows were deleted from the end" in cut.problem
    store.close()
    # A restart neither hides the cut nor hands out the deleted id again.
    reopened = LinkageStore(tmp_path / "data", database_url, schema=schema)
    assert not reopened.verify_audit().ok
    reopened.append_audit("admin", "audit.read", None, "ok")
    assert reopened.audit_entries()[-1].id > ids[-1]

    tamper(reopened, delete(audit).where(audit.c.id == ids[1]))
    middle = reopened.verify_audit()
    assert not middle.ok and f"row {ids[2]} does not follow the row before it" in middle.problem
    reopened.destroy()


def test_audit_lines_are_bounded_whatever_the_caller_sends(store):
    store.append_audit("anonymous" * 50, "GET /" + "x" * 15_000, "p" * 15_000, "unauthorized", "d" * 15_000)
    line = store.audit_entries()[-1]
    assert (len(line.actor), len(line.action), len(line.project_id), len(line.outcome)) == (80, 64, 32, 12)
    assert len(line.detail) < 2100
    assert store.verify_audit().ok


def test_a_store_an_older_pprl_made_is_upgraded_and_its_audit_log_sealed(database_url, tmp_path, protocol):
    schema = f"pprl_linkage_t{schema_suffix()}"
    store = LinkageStore(tmp_path / "data", database_url, schema=schema)
    project_id, tokens = new_project(store, protocol)
    upload_rows(store, project_id, ["msd", "police", "haven"])
    run = store.start_run(project_id).run
    for number in range(3):
        store.append_audit("admin", "audit.read", None, "ok", f"line {number}")
    # What an older pprl left: no run numbers, no credential names, no chain, no token digests.
    prefix = f'"{schema}".' if database_url else ""
    with store._engine.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}runs_number_per_project")
        for table, column in [("runs", "number"), ("runs", "started_by"), ("audit", "prev_sha256"),
                              ("audit", "sha256"), ("uploads", "tokens_sha256"), ("credentials", "name")]:  # fmt: skip
            conn.exec_driver_sql(f"ALTER TABLE {prefix}{table} DROP COLUMN {column}")
        conn.exec_driver_sql(f"DROP TABLE {prefix}chain_heads")
    store.close()
    upgraded = LinkageStore(tmp_path / "data", database_url, schema=schema)
    check = upgraded.verify_audit()
    assert (check.ok, check.rows) == (True, 3)
    assert upgraded.run(project_id, run.id).number == run.id, "an older run keeps its id as its number"
    assert upgraded.authenticate(tokens["analyst"]).role == "analyst"
    upgraded.append_audit("admin", "audit.read", None, "ok", "after the upgrade")
    assert upgraded.verify_audit().rows == 4
    upgraded.destroy()


def test_a_store_used_after_close_and_dropped_leaves_no_connection_open(tmp_path):
    """CI on Python 3.13 failed: a store read after the app's shutdown reopened a SQLite
    connection that only the garbage collector closed (an unraisable ResourceWarning)."""
    dropped = LinkageStore(tmp_path / "data", f"sqlite:///{tmp_path / 'linkage.db'}")
    dropped.close()
    assert dropped.audit_entries(limit=1) == []
    del dropped
    gc.collect()
