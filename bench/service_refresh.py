"""Batches on the service: a batch run against a run that links the same lists once with the frozen model.

    PYTHONPATH=. .venv/bin/python -m bench.service_refresh [--people 5000] [--seed 11]

The example protocol's three agencies (`pprl synth` data), encoded once. The first quarter
is 90% of each agency's records; each of two batches per agency then brings records of the
rest (--new of its list), --corrected of its records corrected (another agency's copy of
someone under a new token, plus the old token withdrawn, as `pprl encode` sends a
correction) and --withdrawn withdrawn. An in-process service (SQLite, one worker process)
links the first quarter (fitting the model), then each batch in a run: the first batch run
links the current lists once with the frozen model (it has no linkage state yet), the second
adds its batch incrementally. Printed: each run's wall-clock time (storage and HTTP
included; a shared machine: only the ratio of the two batch runs means anything), and
whether the last run's entities equal a local link of the final lists with the same model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from linkage.agency.encode import encode_csv
from linkage.encodings import EncodingsWriter, read_encodings
from linkage.evaluation.synth import synthesise_population
from linkage.matching.frozen import FrozenModel
from linkage.matching.refresh import start_state
from linkage.protocol import load_protocol
from server.app import ServiceConfig, create_app, hash_admin_secret

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
ADMIN_SECRET = "bench-admin-secret-" + "0" * 40


def _hex(records: np.ndarray) -> list[str]:
    return [row.tobytes().hex() for row in np.asarray(records["token"])]


def _file(protocol, party, check, records, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with EncodingsWriter(path, protocol=protocol, party=party, secret_check=check) as writer:
        writer.write(np.ascontiguousarray(records))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--new", type=float, default=0.05)
    parser.add_argument("--corrected", type=float, default=0.02)
    parser.add_argument("--withdrawn", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    protocol = load_protocol(EXAMPLE)
    parties = [party.id for party in protocol.parties]
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        synthesise_population(protocol, args.people, args.seed, work / "data")
        full = {}
        for party in parties:
            encode_csv(protocol, party, SECRET, work / "data" / f"{party}.csv", work / "enc" / party, workers=1)
            full[party] = np.asarray(read_encodings(work / "enc" / party).records)
        check = read_encodings(work / "enc" / parties[0]).header.secret_check
        taken = {p: rng.random(len(full[p])) < 0.9 for p in parties}
        held = {p: full[p][taken[p]] for p in parties}
        pool = {p: full[p][~taken[p]] for p in parties}
        (work / "admin").write_text(ADMIN_SECRET)
        config = ServiceConfig(
            data_dir=work / "service",
            admin_secret_sha256=hash_admin_secret(ADMIN_SECRET, "bench"),
            run_worker=False,
            rate_limit=None,
        )
        admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
        with TestClient(create_app(config)) as client:
            created = client.post("/projects", json={"protocol": json.loads(EXAMPLE.read_text())}, headers=admin)
            project_id, credentials = created.json()["project_id"], created.json()["credentials"]
            for party in parties:
                body = _file(protocol, party, check, held[party], work / "q1" / f"{party}.pprl").read_bytes()
                headers = {"Authorization": f"Bearer {credentials[party]}", "Content-Type": "application/octet-stream"}
                assert client.put(f"/projects/{project_id}/encodings", content=body, headers=headers).status_code == 201

            def timed_run() -> float:
                client.post(f"/projects/{project_id}/runs", headers=admin)
                started = time.perf_counter()
                assert client.app.state.worker.run_pending() == 1
                return time.perf_counter() - started

            print(f"{args.people:,} people; first quarter {', '.join(f'{p} {len(held[p]):,}' for p in parties)}")
            print(f"run 1 (full, fits the model): {timed_run():.2f} s")
            times = []
            for number in (2, 3):
                for party in parties:
                    size = len(held[party])
                    added, pool[party] = pool[party][: round(args.new * size)], pool[party][round(args.new * size) :]
                    chosen = rng.choice(size, round((args.corrected + args.withdrawn) * size), replace=False)
                    corrected = chosen[: round(args.corrected * size)]
                    others = np.concatenate([full[o] for o in parties if o != party])
                    fixes = others[rng.choice(len(others), len(corrected), replace=False)].copy()
                    fixes["token"] = rng.integers(0, 256, (len(fixes), 16), dtype=np.uint8)
                    records = np.concatenate([added, fixes])
                    withdrawn = _hex(held[party][chosen])
                    path = _file(protocol, party, check, records, work / f"q{number}" / f"{party}.pprl")
                    head = b"PPRLBATCH1\n" + json.dumps({"withdraw": withdrawn}).encode() + b"\n"
                    headers = {
                        "Authorization": f"Bearer {credentials[party]}",
                        "Content-Type": "application/vnd.pprl.batch",
                    }
                    response = client.put(
                        f"/projects/{project_id}/batches", content=head + path.read_bytes(), headers=headers
                    )
                    assert response.status_code == 201, response.text
                    keep = np.ones(size, dtype=bool)
                    keep[chosen] = False
                    held[party] = np.concatenate([held[party][keep], records])
                times.append(timed_run())
                print(
                    f"run {number} (batch: {'from the lists, no state yet' if number == 2 else 'incremental'}): "
                    f"{times[-1]:.2f} s"
                )
            print(f"incremental batch run / batch run linking the lists once: {times[1] / times[0]:.3f}")
            store = client.app.state.linkage_store
            model = FrozenModel.from_json(store.frozen_model(project_id), protocol, source="model")
            files = [read_encodings(_file(protocol, p, check, held[p], work / "final" / f"{p}.pprl")) for p in parties]
            started = time.perf_counter()
            state = start_state(protocol, files, model=model)
            local = time.perf_counter() - started
            expected = {
                frozenset((state.parties[p], state.records[p]["token"][r].tobytes().hex()) for p, r in members)
                for members in state.entities().values()
                if len(members) > 1
            }
            groups: dict[int, set[tuple[str, str]]] = {}
            for chunk in store.entity_rows(store.latest_done_run(project_id).id):
                for entity, party, token in chunk:
                    groups.setdefault(entity, set()).add((party, token))
            same = {frozenset(members) for members in groups.values()} == expected
            print(f"local link of the final lists with the frozen model: {local:.2f} s; same entities: {same}")


if __name__ == "__main__":
    main()
