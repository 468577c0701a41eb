"""Scale-out: a two-party link on the local process pool and on a Dask cluster, side by side.

    .venv/bin/python bench/scale.py [--sizes 100000,1000000] [--workers 2] [--seed 5]

For each size it synthesises that many people for the example protocol, encodes msd and
police, and links them twice: on the engine's process pool and on a Dask
`distributed.LocalCluster` with as many single-threaded workers. It prints wall time,
candidate pairs compared per second, the largest resident memory of any one worker
process (and of this, the coordinating process), whether both gave the same entities,
and blocking's pair completeness. The README extrapolates these to 20M x 20M.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import psutil

from linkage.agency import encode_csv
from linkage.engine import link, load_inputs, write_entities
from linkage.evaluate import blocking_scores, read_keymap, read_truth, record_people
from linkage.protocol import load_protocol
from linkage.synth import synthesise_population

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
PARTIES = ("msd", "police")


class WorkerMemory:
    """Samples, every 0.2 s, the resident memory of this process and of each descendant."""

    def __init__(self) -> None:
        self.coordinator = 0
        self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.coordinator = max(self.coordinator, me.memory_info().rss)
                for child in me.children(recursive=True):
                    self.worker = max(self.worker, child.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(protocol, outs, workers: int, dask: str | None, entities: Path) -> tuple[float, int, WorkerMemory]:
    with WorkerMemory() as memory:
        started = time.perf_counter()
        result = link(protocol, load_inputs(protocol, outs), workers=workers, dask=dask)
        seconds = time.perf_counter() - started
    write_entities(result, entities)
    return seconds, result.pairs_compared, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from distributed import LocalCluster

    protocol = load_protocol(PROTOCOL)
    print(
        f"{'people':>10} {'records':>21} {'engine':>6} {'seconds':>8} {'M pairs/s':>9} "
        f"{'worker MiB':>10} {'coord MiB':>9} {'PC':>7}  same entities"
    )
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
    ):
        tmp = Path(tmp_name)
        for people in (int(s) for s in args.sizes.split(",") if s):
            data = tmp / f"data-{people}"
            synthesise_population(protocol, people, args.seed, data)
            outs = []
            for party in PARTIES:
                out = tmp / f"{party}-{people}"
                encode_csv(protocol, party, SECRET, data / f"{party}.csv", out, workers=args.workers)
                outs.append(out)
            encodings = load_inputs(protocol, outs)
            keymaps = {party: read_keymap(out / "keymap.csv") for party, out in zip(PARTIES, outs, strict=True)}
            people_ids = record_people(encodings, keymaps, read_truth(data / "truth.csv"))
            completeness = blocking_scores(protocol, encodings, people_ids).pair_completeness
            records = " x ".join(f"{item.header.record_count:,}" for item in encodings)
            runs = {}
            for engine, dask in (("pool", None), ("dask", cluster.scheduler_address)):
                entities = tmp / f"entities-{engine}-{people}.csv"
                seconds, compared, memory = measure(protocol, outs, args.workers, dask, entities)
                runs[engine] = entities.read_bytes()
                same = "" if engine == "pool" else ("yes" if runs["dask"] == runs["pool"] else "NO")
                print(
                    f"{people:>10,} {records:>21} {engine:>6} {seconds:8.1f} {compared / seconds / 1e6:9.2f} "
                    f"{memory.worker / 2**20:10.0f} {memory.coordinator / 2**20:9.0f} {completeness:7.4f}  {same}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
