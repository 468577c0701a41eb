"""Service load check: concurrent uploads and downloads, an audit flood and a tiny-rho query, nothing lost.

    .venv/bin/python bench/service.py [--people 5000] [--projects 4] [--downloads 200] [--threads 8]

It encodes a synthetic population once, starts `pprl serve` on a free 127.0.0.1 port
(SQLite in a temporary folder, the default rate limit), creates several projects, and then:
  1. every party of every project uploads its encodings and attributes at the same time;
  2. one run per project, waited for;
  3. many concurrent result downloads by the permitted parties;
  4. the other projects' everyday requests (run status, results, budget, a dry-run query),
     timed three times: quietly; while anonymous clients flood the server with requests
     whose project ids are 15,000 characters long; and while an analyst of the first
     project asks for `count --rho 1e-17` and `{"rho": "1e-6000000"}`. It prints each p95
     against the quiet one (the goal: within 2x), what the flood left in the audit log and
     the database, and what the tiny-rho queries got back.
It prints requests/s and latency percentiles per phase, and checks that nothing was lost:
every upload stored with the right record count, every run done, and every download the
same answer as the first. Each project's clients and the flooder use their own loopback
address (127.0.1.N, 127.0.0.2), since the rate limit is per address. All traffic stays on
loopback; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from linkage.agency.encode import encode_csv
from linkage.agency.secret import generate_secret, write_secret
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import load_protocol
from linkage.service.client import NewProject, ServiceClient

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
FLOOD_ADDRESS = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bound_http(url: str, address: str, timeout: float = 600.0) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (a loopback address of its own)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, transport=transport, timeout=httpx.Timeout(60.0, read=timeout))


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


def p95(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def report(phase: str, requests: int, latencies: list[float], wall: float) -> None:
    print(
        f"  {phase:<34} {requests:>6} requests {requests / wall:8.1f} req/s   "
        f"median {statistics.median(latencies) * 1000:7.1f} ms   p95 {p95(latencies) * 1000:7.1f} ms"
    )


def everyday_calls(url: str, projects: list[NewProject], rounds: int) -> list[Callable[[], object]]:
    """What the parties and analysts of these projects ask day to day; nothing that spends budget."""
    calls: list[Callable[[], object]] = []
    for index, project in enumerate(projects, start=2):
        address = f"127.0.1.{index}"
        msd = ServiceClient(url, project.credentials["msd"], http=bound_http(url, address))
        analyst = ServiceClient(url, project.credentials["analyst"], http=bound_http(url, address))
        for _ in range(rounds):
            calls += [
                partial(msd.run_status, 1),
                msd.results,
                analyst.budget,
                partial(analyst.query, "count --by region --rho 0.01", dry_run=True),
            ]
    return calls


class Flood:
    """Anonymous requests with 15,000-character project ids, from threads, until stopped."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        path = f"/projects/{'x' * 15_000}/runs/1"
        with bound_http(self.url, FLOOD_ADDRESS, timeout=30) as http:
            while not self.stop.is_set():
                try:
                    status = http.get(path).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.statuses[status] += 1

    def __enter__(self) -> Flood:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


class TinyRho:
    """An analyst's queries whose cost is tiny or absurdly written, each in its own thread, timed."""

    QUERIES: tuple[Any, ...] = ("count --rho 1e-17", {"kind": "count", "cost": {"rho": "1e-6000000"}})

    def __init__(self, url: str, project: NewProject) -> None:
        self.url = url
        self.token = project.credentials["analyst"]
        self.outcomes: list[str] = []
        self.threads = [threading.Thread(target=self.ask, args=(query,), daemon=True) for query in self.QUERIES]

    def ask(self, query: Any) -> None:
        started = time.perf_counter()
        client = ServiceClient(self.url, self.token, http=bound_http(self.url, "127.0.1.1", timeout=120))
        try:
            answer = client.query(query)
            outcome = f"answered ({'released' if answer.get('released') else 'not released'})"
        except Exception as exc:
            outcome = f"{exc.__class__.__name__}: {str(exc)[:140]}"
        self.outcomes.append(f"{json.dumps(query)[:60]}: {outcome} after {time.perf_counter() - started:.1f} s")

    def __enter__(self) -> TinyRho:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        for thread in self.threads:
            thread.join(180)


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server; kill it if a request still running (a tiny-rho query) holds it past a minute."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=60)


def anonymous_lines(admin: ServiceClient) -> tuple[int, int]:
    """How many audit lines name no caller, and how many characters they hold."""
    lines = [line for line in admin.audit() if line.actor == "anonymous"]
    return len(lines), sum(len(line.detail) + len(line.action) + len(line.project_id or "") for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--projects", type=int, default=4)
    parser.add_argument("--downloads", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15, help="Everyday requests per other project and phase (x4).")
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
        admin_secret = tmp / "admin.secret"
        write_secret(admin_secret, generate_secret())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        data_dir = tmp / "service"
        server = subprocess.Popen(  # noqa: S603 - our own CLI, loopback only
            [sys.executable, "-m", "cli.main", "serve", "--data-dir", str(data_dir),
             "--admin-secret-file", str(admin_secret), "--port", str(port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        try:
            for _ in range(150):
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310 - loopback
                        break
                except OSError:
                    time.sleep(0.2)
            admin = ServiceClient(url, admin_secret.read_text().strip(), http=bound_http(url, "127.0.1.250"))
            projects = [admin.create_project(document) for _ in range(args.projects)]
            print(
                f"{args.projects} projects, {len(protocol.parties)} parties each, "
                f"{sum(outs.values()):,} records per project"
            )

            def client(project_index: int, role: str) -> ServiceClient:
                http = bound_http(url, f"127.0.1.{project_index + 1}")
                return ServiceClient(url, projects[project_index].credentials[role], http=http)

            def upload(project_index: int, party: str) -> object:
                return client(project_index, party).upload(tmp / party)

            def results(project_index: int, party: str) -> object:
                return client(project_index, party).results()

            uploads = [partial(upload, i, party) for i in range(len(projects)) for party in outs]
            receipts, latencies, wall = timed(uploads, args.threads)
            report("uploads (2 files each)", 2 * len(uploads), latencies, wall)
            stored = {(r.party, r.kind): r.record_count for batch in receipts for r in batch}  # type: ignore[attr-defined]
            assert all(
                stored[(party, kind)] == count for party, count in outs.items() for kind in ("encodings", "attributes")
            )
            clients = [client(i, "msd") for i in range(len(projects))]
            started = time.perf_counter()
            runs = [c.start_run() for c in clients]
            finished = [c.wait_for_run(run.run_id, poll_seconds=0.5) for c, run in zip(clients, runs, strict=True)]
            assert all(run.status == "done" for run in finished), [run.status for run in finished]
            print(
                f"  {'runs (queued, one at a time)':<34} {len(runs):>6} runs     "
                f"{time.perf_counter() - started:8.1f} s in all"
            )
            downloads = [partial(results, i % len(projects), ("msd", "haven")[i % 2]) for i in range(args.downloads)]
            answers, latencies, wall = timed(downloads, args.threads)
            report("result downloads", len(downloads), latencies, wall)
            first: dict[tuple[int, int], object] = {}
            for i, answer in enumerate(answers):
                key = (i % len(projects), i % 2)
                assert first.setdefault(key, answer) == answer, "a download differed from the first of its kind"
            print("nothing lost: every upload stored with its record count, every run done, every download identical")

            others = projects[1:]
            print(f"the other {len(others)} projects' everyday requests (run status, results, budget, dry-run query):")
            timed(everyday_calls(url, others, 1), args.threads)  # warm: entity tables built once
            _, quiet, wall = timed(everyday_calls(url, others, args.rounds), args.threads)
            report("quiet", len(quiet), quiet, wall)

            lines_before, chars_before = anonymous_lines(admin)
            with Flood(url) as flood:
                _, flooded, wall = timed(everyday_calls(url, others, args.rounds), args.threads)
            report("during an anonymous flood", len(flooded), flooded, wall)
            sent = sum(flood.statuses.values())
            # Refusals are written in bulk once a minute and when the server stops: count after stopping.
            stop(server)
            server = subprocess.Popen(  # noqa: S603 - the same server again, to read what the flood left
                [sys.executable, "-m", "cli.main", "serve", "--data-dir", str(data_dir),
                 "--admin-secret-file", str(admin_secret), "--port", str(port), "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            )  # fmt: skip
            for _ in range(150):
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310 - loopback
                        break
                except OSError:
                    time.sleep(0.2)
            timed(everyday_calls(url, others, 1), args.threads)  # warm again after the restart
            lines_after, chars_after = anonymous_lines(admin)
            print(
                f"    flood: {sent} requests ({dict(sorted(flood.statuses.items()))} by status) left "
                f"{lines_after - lines_before} anonymous audit line(s), {chars_after - chars_before} characters"
            )

            with TinyRho(url, projects[0]) as tiny:
                _, tiny_latencies, wall = timed(everyday_calls(url, others, args.rounds), args.threads)
            report("during tiny-rho queries (project 1)", len(tiny_latencies), tiny_latencies, wall)
            for outcome in tiny.outcomes:
                print(f"    tiny rho: {outcome}")
            for phase, latencies in (("flood", flooded), ("tiny rho", tiny_latencies)):
                ratio = p95(latencies) / p95(quiet)
                print(f"  p95 {phase} / quiet: {ratio:.2f}x {'(within 2x)' if ratio <= 2 else '(OVER 2x)'}")
        finally:
            stop(server)


if __name__ == "__main__":
    main()
