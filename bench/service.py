"""Service load check: concurrent uploads and result downloads on loopback, nothing lost.

    .venv/bin/python bench/service.py [--people 5000] [--projects 4] [--downloads 200] [--threads 8]

It encodes a synthetic population once, starts `pprl serve` on a free 127.0.0.1 port
(SQLite in a temporary folder), creates several projects, and then, from a thread pool:
  1. every party of every project uploads its encodings and attributes at the same time;
  2. one run per project, waited for;
  3. many concurrent result downloads by the permitted parties.
It prints requests/s and latency percentiles per phase, and checks that nothing was lost:
every upload stored with the right record count, every run done, and every download the
same answer as the first. All traffic stays on loopback; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from linkage.agency.encode import encode_csv
from linkage.agency.secret import generate_secret, write_secret
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import load_protocol
from linkage.service.client import ServiceClient

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(calls: list[Callable[[], object]], threads: int) -> tuple[list[object], list[float], float]:
    """Run calls on a thread pool; return results, per-call latencies and wall time."""

    def one(call: Callable[[], object]) -> tuple[object, float]:
        started = time.perf_counter()
        result = call()
        return result, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(one, calls))
    return [r for r, _ in outcomes], [t for _, t in outcomes], time.perf_counter() - started


def report(phase: str, requests: int, latencies: list[float], wall: float) -> None:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    print(
        f"  {phase:<28} {requests:>6} requests {requests / wall:8.1f} req/s   "
        f"median {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--projects", type=int, default=4)
    parser.add_argument("--downloads", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    protocol = load_protocol(PROTOCOL)
    document = json.loads(PROTOCOL.read_text())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        secret = generate_secret()
        synthesise_population(protocol, args.people, 3, tmp / "data")
        outs = {
            p.id: encode_csv(protocol, p.id, secret, tmp / "data" / f"{p.id}.csv", tmp / p.id).records
            for p in protocol.parties
        }
        admin = tmp / "admin.secret"
        write_secret(admin, generate_secret())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(  # noqa: S603 - our own CLI, loopback only
            [sys.executable, "-m", "cli.main", "serve", "--data-dir", str(tmp / "service"),
             "--admin-secret-file", str(admin), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        try:
            for _ in range(150):
                try:
                    with urllib.request.urlopen(f"{url}/openapi.json", timeout=1):  # noqa: S310 - loopback
                        break
                except OSError:
                    time.sleep(0.2)
            admin_client = ServiceClient(url, admin.read_text().strip())
            projects = [admin_client.create_project(document) for _ in range(args.projects)]
            print(
                f"{args.projects} projects, {len(protocol.parties)} parties each, "
                f"{sum(outs.values()):,} records per project"
            )

            def upload(token: str, party: str) -> object:
                return ServiceClient(url, token).upload(tmp / party)

            def results(token: str) -> object:
                return ServiceClient(url, token).results()

            uploads = [partial(upload, project.credentials[party], party) for project in projects for party in outs]
            receipts, latencies, wall = timed(uploads, args.threads)
            report("uploads (2 files each)", 2 * len(uploads), latencies, wall)
            stored = {(r.party, r.kind): r.record_count for batch in receipts for r in batch}  # type: ignore[attr-defined]
            assert all(
                stored[(party, kind)] == count for party, count in outs.items() for kind in ("encodings", "attributes")
            )
            clients = [ServiceClient(url, project.credentials["msd"]) for project in projects]
            started = time.perf_counter()
            runs = [client.start_run() for client in clients]
            finished = [
                client.wait_for_run(run.run_id, poll_seconds=0.5) for client, run in zip(clients, runs, strict=True)
            ]
            assert all(run.status == "done" for run in finished), [run.status for run in finished]
            print(
                f"  {'runs (queued, one at a time)':<28} {len(runs):>6} runs     "
                f"{time.perf_counter() - started:8.1f} s in all"
            )
            downloads = [
                partial(results, projects[i % len(projects)].credentials[("msd", "haven")[i % 2]])
                for i in range(args.downloads)
            ]
            answers, latencies, wall = timed(downloads, args.threads)
            report("result downloads", len(downloads), latencies, wall)
            first: dict[tuple[int, int], object] = {}
            for i, answer in enumerate(answers):
                key = (i % len(projects), i % 2)
                assert first.setdefault(key, answer) == answer, "a download differed from the first of its kind"
            print("nothing lost: every upload stored with its record count, every run done, every download identical")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
