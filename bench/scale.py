"""Scale-out: encoding and a two-party link on the local process pool and on a Dask cluster.

    .venv/bin/python bench/scale.py [--sizes 100000,1000000] [--workers 2] [--seed 5] [--skip-pool-link]
        [--skip-dask-encode]

For each size it synthesises that many people for the example protocol, encodes msd and
police on the pool and on a Dask `distributed.LocalCluster` with as many single-threaded
worker processes (checking that both give the same encodings, tokens aside), and links
them twice: on the engine's process pool and on the cluster, where the encodings are
scattered to the workers from this process. It prints wall time, records or candidate
pairs per second, the largest resident memory of any one worker process (and of this,
the coordinating process), the bytes scattered to the cluster's workers (counted at the
client: a broadcast counts once per worker), whether both gave the same entities, and
blocking's pair completeness, and the CPU seconds the link took in this process and
its workers (wall time is unreliable on a shared machine). The README extrapolates these to 20M x 20M.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from memory_sampler import MemorySampler

from linkage.agency.encode import encode_csv
from linkage.encodings import read_encodings
from linkage.evaluation.blocking import analyse_blocking
from linkage.evaluation.scores import read_truth, record_people
from linkage.evaluation.synth import synthesise_population
from linkage.matching.engine import link, load_inputs
from linkage.protocol import load_protocol
from linkage.token_files import read_keymap, write_entities

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
PARTIES = ("msd", "police")


class ScatteredBytes:
    """Counts the array bytes this process scatters to Dask workers (a broadcast once per worker).

    Wraps ``distributed.Client.scatter``, so it sees every scatter of the engine and the
    encoder without their help; a re-scatter after a lost worker counts again.
    """

    def __init__(self) -> None:
        self.total = 0

    @staticmethod
    def size(value: object) -> int:
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, (bytes, str)):
            return len(value)
        if isinstance(value, (list, tuple)):
            return sum(ScatteredBytes.size(item) for item in value)
        if isinstance(value, dict):
            return sum(ScatteredBytes.size(item) for item in value.values())
        if dataclasses.is_dataclass(value):
            return sum(ScatteredBytes.size(getattr(value, field.name)) for field in dataclasses.fields(value))
        inner = getattr(value, "value", None)  # linkage.dask_cluster.Sealed
        return ScatteredBytes.size(inner) if inner is not None else 0

    @contextmanager
    def watch(self) -> Iterator[ScatteredBytes]:
        from distributed import Client

        original = Client.scatter

        def scatter(client: Client, data: object, *rest: object, **options: object) -> object:
            copies = len(client.scheduler_info()["workers"]) if options.get("broadcast") else 1
            self.total += copies * self.size(data)
            return original(client, data, *rest, **options)

        Client.scatter = scatter  # type: ignore[method-assign]
        try:
            yield self
        finally:
            Client.scatter = original  # type: ignore[method-assign]


def same_encodings(one: Path, two: Path) -> bool:
    """Same records, tokens aside (tokens are fresh random numbers on every run)."""
    a, b = read_encodings(one).records, read_encodings(two).records
    return len(a) == len(b) and all(np.array_equal(a[name], b[name]) for name in a.dtype.names if name != "token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--skip-pool-link", action="store_true", help="Link on the cluster only.")
    parser.add_argument("--skip-dask-encode", action="store_true", help="Encode on the pool only.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from distributed import LocalCluster

    protocol = load_protocol(PROTOCOL)
    scattered = ScatteredBytes()

    @contextmanager
    def engine_for(engine: str) -> Iterator[tuple[dict[str, object], MemorySampler]]:
        """Keyword arguments that run on the pool or on a fresh cluster, and a memory watch."""
        if engine == "pool":
            with MemorySampler() as memory:
                yield {"workers": args.workers}, memory
            return
        with LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster:
            with MemorySampler() as memory, scattered.watch():
                yield {"dask": cluster.scheduler_address}, memory

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for people in (int(s) for s in args.sizes.split(",") if s):
            data = tmp / f"data-{people}"
            started = time.perf_counter()
            synthesise_population(protocol, people, args.seed, data)
            print(f"{people:,} people: synthesised in {time.perf_counter() - started:.0f} s", flush=True)
            outs = {}
            for engine in ("pool",) if args.skip_dask_encode else ("pool", "dask"):
                scattered.total = 0
                with engine_for(engine) as (where, memory):
                    started = time.perf_counter()
                    records = 0
                    for party in PARTIES:
                        out = tmp / f"{party}-{people}-{engine}"
                        records += encode_csv(protocol, party, SECRET, data / f"{party}.csv", out, **where).records
                        outs[party, engine] = out
                    seconds = time.perf_counter() - started
                same = (
                    ""
                    if engine == "pool"
                    else ("yes" if all(same_encodings(outs[p, "pool"], outs[p, "dask"]) for p in PARTIES) else "NO")
                )
                print(
                    f"  encode {engine:>4}: {records:,} records in {seconds:.1f} s "
                    f"({records / seconds:,.0f} records/s), "
                    f"worker {memory.worker / 2**20:,.0f} MiB, coordinator {memory.coordinator / 2**20:,.0f} MiB"
                    + (f", scattered {scattered.total / 2**20:,.1f} MiB" if engine == "dask" else "")
                    + (f", same encodings: {same}" if same else ""),
                    flush=True,
                )
            for party in () if args.skip_dask_encode else PARTIES:
                shutil.rmtree(outs[party, "dask"])
            link_outs = [outs[party, "pool"] for party in PARTIES]
            encodings = load_inputs(protocol, link_outs)
            keymaps = {party: read_keymap(out / "keymap.csv") for party, out in zip(PARTIES, link_outs, strict=True)}
            people_ids = record_people(encodings, keymaps, read_truth(data / "truth.csv"))
            blocking = analyse_blocking(protocol, encodings, people_ids)
            print(
                "  records "
                + " x ".join(f"{item.header.record_count:,}" for item in encodings)
                + f"; {blocking.candidate_pairs:,} candidate pairs ({blocking.candidates_per_record:.1f} per record of "
                + f"the larger party); pair completeness {blocking.pair_completeness:.4f}",
                flush=True,
            )
            del encodings, keymaps, people_ids
            runs = {}
            for engine in ("dask",) if args.skip_pool_link else ("pool", "dask"):
                entities = tmp / f"entities-{engine}-{people}.csv"
                scattered.total = 0
                with engine_for(engine) as (where, memory):
                    started = time.perf_counter()
                    result = link(protocol, load_inputs(protocol, link_outs), **where)  # type: ignore[arg-type]
                    seconds = time.perf_counter() - started
                write_entities(result, entities)
                runs[engine] = entities.read_bytes()
                same = (
                    "" if engine == "pool" or "pool" not in runs else ("yes" if runs["dask"] == runs["pool"] else "NO")
                )
                print(
                    f"  link   {engine:>4}: {seconds:.1f} s, {memory.cpu:.0f} CPU s, "
                    f"{result.pairs_compared / seconds / 1e6:.2f} M pairs/s, "
                    f"worker {memory.worker / 2**20:,.0f} MiB, coordinator {memory.coordinator / 2**20:,.0f} MiB, "
                    + (f"scattered {scattered.total / 2**20:,.1f} MiB, " if engine == "dask" else "")
                    + f"{len(result.entities):,} linked entities"
                    + (f", same entities: {same}" if same else ""),
                    flush=True,
                )
                del result


if __name__ == "__main__":
    main()
