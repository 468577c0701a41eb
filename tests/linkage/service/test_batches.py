"""Batches on the service: linked as the local refresh links them, ids kept, changes per party, bad batches refused."""

from __future__ import annotations

import re

import numpy as np
import pytest

from linkage.encodings import read_encodings
from linkage.matching.frozen import FrozenModel
from linkage.matching.link_state import read_state
from linkage.matching.refresh import refresh_state, start_state
from linkage.service.batches import changes_since
from server.app import create_app
from tests.helpers import (
    ADMIN,
    PARTIES,
    TestClient,
    batch_body,
    bearer,
    create_project,
    dump_tables,
    found_in_folder,
    put_attributes,
    put_batch,
    put_encodings,
    record_bytes,
    store_urls,
    upload_all,
    write_attributes,
    write_encodings,
    write_party_lists,
)


def _hex(records: np.ndarray) -> list[str]:
    return [row.tobytes().hex() for row in np.asarray(records["token"])]


def quarters(agencies, seed=7):
    """A first quarter (80% of each agency's records) and two batches of additions, corrections, withdrawals.

    A correction is the record under a new token (another agency's copy of someone, as a
    re-keyed record may look) plus the old token's withdrawal, as `pprl encode` sends it.
    Returns (first lists, batches, secret check, renamed): each batch is {party: (records,
    withdrawn tokens)}; renamed maps each correction's new token to the token it replaced.
    """
    rng = np.random.default_rng(seed)
    full = {party: np.asarray(read_encodings(agencies[party]).records) for party in PARTIES}
    check = read_encodings(agencies["msd"]).header.secret_check
    taken = {party: rng.random(len(full[party])) < 0.8 for party in PARTIES}
    first = {party: full[party][taken[party]] for party in PARTIES}
    pool = {party: full[party][~taken[party]] for party in PARTIES}
    held = dict(first)
    renamed: dict[str, str] = {}
    batches = []
    for parties in (("msd", "haven"), ("msd", "police")):
        quarter = {}
        for party in parties:
            added, pool[party] = pool[party][:8], pool[party][8:]
            chosen = rng.choice(len(held[party]), 6, replace=False)
            others = np.concatenate([full[other] for other in PARTIES if other != party])
            corrections = others[rng.choice(len(others), 3, replace=False)].copy()
            corrections["token"] = rng.integers(0, 256, (3, 16), dtype=np.uint8)
            old = _hex(held[party][chosen[:3]])
            renamed.update(zip(_hex(corrections), (renamed.get(token, token) for token in old), strict=True))
            withdrawn = _hex(held[party][chosen])
            records = np.concatenate([added, corrections])
            keep = np.ones(len(held[party]), dtype=bool)
            keep[chosen] = False
            held[party] = np.concatenate([held[party][keep], records])
            quarter[party] = (records, withdrawn)
        batches.append(quarter)
    return first, batches, check, renamed


def link(client, project_id):
    """Queue a run as the administrator and run it here; its status."""
    run = client.post(f"/projects/{project_id}/runs", headers=ADMIN).json()
    assert client.app.state.worker.run_pending() == 1
    return client.get(f"/projects/{project_id}/runs/{run['run_id']}", headers=ADMIN).json()


def upload_attributes(client, project_id, credentials, agencies, party, tokens, renamed, folder, replace=False):
    path = write_attributes(agencies[party], tokens, renamed, folder / f"{party}-attributes.csv")
    params = {"replace": "true"} if replace else {}
    response = put_attributes(client, project_id, credentials[party], path.read_bytes(), **params)
    assert response.status_code in (200, 201), response.text


def entity_sets(rows):
    groups: dict[int, set[tuple[str, str]]] = {}
    for entity, party, token in rows:
        groups.setdefault(entity, set()).add((party, token))
    return groups


def run_groups(store, project_id, number):
    return entity_sets(row for chunk in store.entity_rows(store.run(project_id, number).id) for row in chunk)


def state_groups(state):
    return {
        frozenset((state.parties[p], state.records[p]["token"][r].tobytes().hex()) for p, r in members)
        for members in state.entities().values()
        if len(members) > 1
    }


def service_quarters(client, protocol, agencies, tmp_path):
    """Link the first quarter, download msd's and haven's results, add both batches (a run each)."""
    first, batches, check, renamed = quarters(agencies)
    store = client.app.state.linkage_store
    project_id, credentials = create_project(client)
    held = {party: _hex(first[party]) for party in PARTIES}
    for folder in write_party_lists(protocol, first, check, tmp_path / "q1"):
        party = folder.name
        response = put_encodings(client, project_id, credentials[party], (folder / "encodings.pprl").read_bytes())
        assert response.status_code == 201, response.text
        upload_attributes(client, project_id, credentials, agencies, party, held[party], renamed, folder)
    assert link(client, project_id)["status"] == "done"
    groups = {1: run_groups(store, project_id, 1)}
    baseline = {
        party: client.get(f"/projects/{project_id}/results", headers=bearer(credentials[party])).json()
        for party in ("msd", "haven")
    }
    for number, quarter in enumerate(batches, start=2):
        for party, (records, withdrawn) in quarter.items():
            folder = write_encodings(protocol, party, check, records, tmp_path / f"q{number}" / party)
            body = batch_body(folder / "encodings.pprl", withdrawn)
            response = put_batch(client, project_id, credentials[party], body)
            assert response.status_code == 201, response.text
            assert (response.json()["added"], response.json()["withdrawn"]) == (len(records), len(withdrawn))
            gone = set(withdrawn)
            held[party] = [token for token in held[party] if token not in gone] + _hex(records)
            upload_attributes(
                client, project_id, credentials, agencies, party, held[party], renamed, folder, replace=True
            )
        assert link(client, project_id)["status"] == "done"
        groups[number] = run_groups(store, project_id, number)
    return project_id, credentials, first, batches, check, baseline, held, store, groups


def test_batches_link_as_the_local_refresh_and_keep_untouched_ids(backend_config, protocol, agencies, tmp_path):
    with TestClient(create_app(backend_config(run_worker=False))) as client:
        project_id, _, first, batches, check, _, held, store, groups = service_quarters(
            client, protocol, agencies, tmp_path
        )
        # The same batches added locally to a state of the first quarter, under the project's frozen model.
        model = FrozenModel.from_json(store.frozen_model(project_id), protocol, source="the project's model")
        files = write_party_lists(protocol, first, check, tmp_path / "local")
        state = start_state(protocol, [read_encodings(path) for path in files], model=model)
        for number, quarter in enumerate(batches, start=2):
            folders = [
                write_encodings(protocol, party, check, records, tmp_path / f"local{number}" / party)
                for party, (records, _) in quarter.items()
            ]
            withdrawn = {party: tokens for party, (_, tokens) in quarter.items()}
            state, _ = refresh_state(protocol, state, [read_encodings(path) for path in folders], withdrawn)
            service = {frozenset(members) for members in groups[number].values()}
            assert service == state_groups(state), f"run {number} differs from the local refresh"
        assert {party: sorted(tokens) for party, tokens in held.items()} == {
            party: sorted(_hex(state.records[index])) for index, party in enumerate(state.parties)
        }, "the uploads hold the final lists"

        first_run, last_run = groups[1], groups[3]
        touched = {token for quarter in batches for records, withdrawn in quarter.values() for token in withdrawn}
        kept = {frozenset(members): entity for entity, members in last_run.items()}
        untouched = [
            (entity, members) for entity, members in first_run.items() if not {t for _, t in members} & touched
        ]
        same = [(entity, members) for entity, members in untouched if frozenset(members) in kept]
        # An untouched entity may still change: a batch's new or corrected record can join it (its
        # grouping is checked against the local refresh above). Those whose records stay together
        # must keep their id; enough of them that the check means something.
        assert len(untouched) > 30 and len(same) > 20
        assert all(kept[frozenset(members)] == entity for entity, members in same), "an untouched entity's id moved"

        details = [line.detail for line in store.audit_entries(project_id=project_id) if line.action == "run.done"]
        assert "no usable linkage state" in details[1] and "incrementally" in details[2], details
        # A batch run tells the administrator how far the privacy unit's bound holds, as a full run does.
        assert all("clusters holding two records of one party; one deletion moves at most" in d for d in details)
        # The statistics count the stable mapping of the state's accepted pairs (for three
        # parties, the state's entities).
        stable = entity_sets(
            row for chunk in store.entity_rows(store.run(project_id, 3).id, stable=True) for row in chunk
        )
        assert {frozenset(members) for members in stable.values()} == state_groups(state)
        assert store.link_state(project_id).run_id == store.run(project_id, 3).id
        assert all(batch.status == "linked" and not batch.tokens for batch in store.batches(project_id))


def test_a_partys_changes_hold_only_its_own_tokens(backend_config, protocol, agencies, tmp_path):
    with TestClient(create_app(backend_config(run_worker=False))) as client:
        project_id, credentials, first, batches, _, baseline, held, store, _ = service_quarters(
            client, protocol, agencies, tmp_path
        )
        assert baseline["msd"]["changes_since_run"] is None and baseline["msd"]["changes"] == []
        for party in ("msd", "haven"):
            now = client.get(f"/projects/{project_id}/results", headers=bearer(credentials[party])).json()
            assert now["changes_since_run"] == 1
            ever = set(_hex(first[party])) | {
                token for quarter in batches if party in quarter for token in _hex(quarter[party][0])
            }
            changes = now["changes"]
            assert changes and {change["token"] for change in changes} <= ever, "only the party's own tokens"
            before = {r["token"]: set(r["shared_with"]) for r in baseline[party]["records"]}
            after = {r["token"]: set(r["shared_with"]) for r in now["records"]}
            withdrawn = {t for quarter in batches if party in quarter for t in quarter[party][1]}
            assert {c["token"] for c in changes if c["kind"] == "withdrawn"} == set(before) & withdrawn
            linked = {c["token"] for c in changes if c["kind"] == "linked"}
            assert linked == {t for t in after if after[t] - before.get(t, set())}
            # No entity id reaches a party: the same id in two parties' results would join
            # their records, which the protocol releases to neither.
            assert "entity_ids" not in now
            assert all(set(change) == {"token", "kind", "parties"} for change in changes)
            again = client.get(f"/projects/{project_id}/results", headers=bearer(credentials[party])).json()
            assert (again["changes_since_run"], again["changes"]) == (3, []), "counted from the last download"


def test_changes_since_lists_links_and_withdrawals():
    a, b, c, d, e = "a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32
    before = {a: ["police"], b: ["haven"], c: ["police", "haven"], e: ["police"]}
    now = {a: ["police", "haven"], c: ["police"], d: ["police"]}
    changes = [(x.token[0], x.kind, x.parties) for x in changes_since(before, now, [a, c, d, e])]
    assert changes == [
        ("a", "linked", ("haven",)),
        ("b", "withdrawn", ()),
        ("c", "unlinked", ("haven",)),
        ("d", "linked", ("police",)),
        ("e", "unlinked", ("police",)),
    ]


def _intact(store, project_id):
    return store.uploads(project_id), store.batches(project_id), sorted(p.name for p in store.blob_dir.iterdir())


def _body(case, agencies, foreign, tokens):
    """The request body of a bad batch (or of a token withdrawn twice, which counts once)."""
    msd = agencies["msd"] / "encodings.pprl"
    return {
        "not a batch": lambda: b"PK\x03\x04 not a batch",
        "withdraw not a list": lambda: b'PPRLBATCH1\n{"withdraw": 3}\n',
        "withdraw not json": lambda: b"PPRLBATCH1\nnot json\n",
        "another protocol": lambda: batch_body(foreign["fingerprint"] / "encodings.pprl"),
        "another secret": lambda: batch_body(foreign["secret"] / "encodings.pprl"),
        "another party": lambda: batch_body(agencies["haven"] / "encodings.pprl"),
        "unknown token": lambda: batch_body(None, ["f" * 32]),
        "malformed token": lambda: batch_body(None, ["xyz"]),
        "empty": lambda: batch_body(None, []),
        "truncated": lambda: batch_body(msd)[:-700],
        "withdrawn and sent": lambda: batch_body(msd, tokens[:1]),
        "withdrawn twice": lambda: batch_body(None, tokens[:3] + tokens[:1]),
    }[case]()


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("not a batch", 400, "not a pprl batch"),
        ("withdraw not a list", 400, "withdrawal line must be"),
        ("withdraw not json", 400, "not JSON"),
        ("another protocol", 409, "fingerprint"),
        ("another secret", 409, "secret"),
        ("another party", 409, "haven"),
        ("unknown token", 400, "not records of party 'msd'"),
        ("malformed token", 400, "not record tokens"),
        ("empty", 400, "batch is empty"),
        ("truncated", 400, "truncated"),
        ("withdrawn and sent", 400, "both withdrawn and in the batch"),
        ("withdrawn twice", 201, None),
    ],
)
def test_a_bad_batch_is_refused_and_leaves_the_stored_data_intact(
    backend_config, agencies, foreign, case, status, message
):
    with TestClient(create_app(backend_config(run_worker=False))) as client:
        store = client.app.state.linkage_store
        project_id, credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        assert link(client, project_id)["status"] == "done"
        tokens = _hex(read_encodings(agencies["msd"]).records)
        before = _intact(store, project_id)
        response = put_batch(client, project_id, credentials["msd"], _body(case, agencies, foreign, tokens))
        assert response.status_code == status, response.text
        if message is None:
            assert response.json()["withdrawn"] == 3, "a token withdrawn twice counts once"
            return
        assert re.search(message, response.text), response.text
        assert _intact(store, project_id) == before, "a refused batch stores nothing"


def test_a_batch_on_a_project_never_linked_is_refused(client, agencies):
    store = client.app.state.linkage_store
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    before = _intact(store, project_id)
    response = put_batch(client, project_id, credentials["msd"], batch_body(None, ["0" * 32]))
    assert response.status_code == 409, response.text
    assert "has not been linked yet" in response.text and "pprl run" in response.text
    assert _intact(store, project_id) == before


def test_remove_party_after_batches_leaves_no_byte_and_the_next_batch_run_rebuilds(
    backend_config, protocol, agencies, tmp_path
):
    config = backend_config(run_worker=False)
    with TestClient(create_app(config)) as client:
        project_id, credentials, _, batches, *_, store, _ = service_quarters(client, protocol, agencies, tmp_path)
        haven_tokens, haven_bytes = record_bytes(agencies["haven"], [agencies["msd"], agencies["police"]])
        # The corrections copy other agencies' encodings: those bytes are the correcting party's now.
        copied = {clk.tobytes() for quarter in batches for records, _ in quarter.values() for clk in records["clk"]}
        haven_bytes = [piece for piece in haven_bytes if piece not in copied]
        haven_tokens += _hex(batches[0]["haven"][0])
        state_file = store.link_state(project_id).path
        assert state_file.exists()
        assert found_in_folder(config.data_dir / "states", haven_tokens, haven_bytes), "the search finds them"
        response = client.delete(f"/projects/{project_id}/parties/haven", headers=ADMIN)
        assert response.status_code == 200, response.text
        assert store.link_state(project_id) is None and not state_file.exists()
        assert not list(store.state_dir.iterdir())
        assert found_in_folder(config.data_dir, haven_tokens, haven_bytes) == []
        tables = "\n".join(dump_tables(url, schema) for url, schema in store_urls(config))
        assert [token for token in haven_tokens if token in tables] == []
        tokens = [
            r["token"]
            for r in client.get(f"/projects/{project_id}/results", headers=bearer(credentials["msd"])).json()["records"]
        ]
        response = put_batch(client, project_id, credentials["msd"], batch_body(None, tokens[:2]))
        assert response.status_code == 201, response.text
        assert link(client, project_id)["status"] == "done"
        assert store.link_state(project_id) is not None
        details = [line.detail for line in store.audit_entries(project_id=project_id) if line.action == "run.done"]
        assert "no usable linkage state" in details[-1]


def test_a_damaged_state_is_rebuilt_from_the_uploads(client, protocol, agencies, tmp_path):
    project_id, credentials, _, _, _, _, held, store, _ = service_quarters(client, protocol, agencies, tmp_path)
    store.link_state(project_id).path.write_bytes(b"not a state")
    response = put_batch(client, project_id, credentials["police"], batch_body(None, held["police"][:2]))
    assert response.status_code == 201, response.text
    assert link(client, project_id)["status"] == "done"
    details = [line.detail for line in store.audit_entries(project_id=project_id) if line.action == "run.done"]
    assert "no usable linkage state" in details[-1]
    linked = {token for chunk in store.entity_rows(store.latest_done_run(project_id).id) for _, _, token in chunk}
    assert linked.isdisjoint(held["police"][:2]), "the withdrawn records are gone all the same"


def test_an_id_retired_by_an_erasure_is_never_given_out_again(backend_config, protocol, agencies):
    with TestClient(create_app(backend_config(run_worker=False))) as client:
        store = client.app.state.linkage_store
        project_id, credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        assert link(client, project_id)["status"] == "done"
        groups = run_groups(store, project_id, 1)
        highest = max(groups)
        # Every record of the entity with the highest id leaves: the id is retired with it.
        for party in sorted({party for party, _ in groups[highest]}):
            tokens = [token for p, token in groups[highest] if p == party]
            response = client.post(
                f"/projects/{project_id}/withdrawals", json={"tokens": tokens}, headers=bearer(credentials[party])
            )
            assert response.status_code == 200, response.text
        assert store.link_state(project_id) is None
        # A batch run then numbers every record afresh from the project's next id.
        left = [
            token for token in _hex(read_encodings(agencies["msd"]).records) if ("msd", token) not in groups[highest]
        ]
        response = put_batch(client, project_id, credentials["msd"], batch_body(None, left[:1]))
        assert response.status_code == 201, response.text
        assert link(client, project_id)["status"] == "done"
        state = read_state(store.link_state(project_id).path, protocol)
        given = {int(entity) for ids in state.entity for entity in ids}
        assert highest not in given, "a retired id was given to other records"
        kept = {entity for entity, members in groups.items() if entity != highest}
        assert min(given - kept) > highest
        assert state.next_entity > max(given)


def test_a_batch_token_already_in_use_is_refused_without_saying_whose(client, protocol, agencies, tmp_path):
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    assert link(client, project_id)["status"] == "done"
    store = client.app.state.linkage_store
    before = _intact(store, project_id)
    police = np.asarray(read_encodings(agencies["police"]).records)[:2]
    check = read_encodings(agencies["msd"]).header.secret_check
    folder = write_encodings(protocol, "msd", check, police, tmp_path / "copied")
    response = put_batch(client, project_id, credentials["msd"], batch_body(folder / "encodings.pprl"))
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith("2 token(s) of the batch are already in use in this project")
    assert "encode the batch again" in message and "nothing was stored" in message
    assert not re.search(r"another party|police|haven|belong", response.text), "whose tokens they are is not said"
    assert _intact(store, project_id) == before
