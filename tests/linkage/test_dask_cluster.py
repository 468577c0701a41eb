"""On a Dask cluster: the same encodings and entities as on the local process pool."""

import dataclasses
import os
import shutil
import signal

import numpy as np
import pytest

import linkage.agency.sources
import linkage.dask_cluster
from linkage.agency.encode import _work_remote, encode_csv
from linkage.agency.hashing import derive_keys
from linkage.dask_cluster import Sealed
from linkage.errors import InputError
from linkage.evaluation.synth import synthesise_population
from linkage.matching import tasks
from linkage.matching.compare import comparisons_for
from linkage.matching.engine import link, load_inputs
from linkage.token_files import write_entities
from tests.helpers import SECRET, canonical, encoded_population, protocol_with_parties

distributed = pytest.importorskip("distributed")

# distributed's scheduler and nannies leave sockets for the garbage collector at start and
# close; that is theirs, not ours, and warnings are errors in this suite.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    protocol = protocol_with_parties(3)
    _, outs = encoded_population(protocol, 1200, 13, tmp_path_factory.mktemp("dask"))
    return protocol, outs


def entities_bytes(result, path):
    write_entities(result, path)
    return path.read_bytes()


def test_dask_gives_the_same_entities_as_the_pool(dask_cluster, inputs, tmp_path):
    protocol, outs = inputs
    pooled = link(protocol, load_inputs(protocol, outs), workers=2)
    on_dask = link(protocol, load_inputs(protocol, outs), dask=dask_cluster.scheduler_address)
    assert entities_bytes(on_dask, tmp_path / "dask.csv") == entities_bytes(pooled, tmp_path / "pool.csv")
    assert on_dask.pairs_compared == pooled.pairs_compared


def test_dask_workers_need_no_copy_of_the_inputs(dask_cluster, inputs, tmp_path):
    """The encodings are scattered from the client: once loaded, the files may be gone."""
    protocol, outs = inputs
    expected = entities_bytes(link(protocol, load_inputs(protocol, outs), workers=2), tmp_path / "pool.csv")
    private = tmp_path / "client-only"
    for out in outs:
        shutil.copytree(out, private / out.name)
    encodings = load_inputs(protocol, [private / out.name for out in outs])
    shutil.rmtree(private)  # memory-mapped here, readable nowhere else
    progress = []
    result = link(protocol, encodings, dask=dask_cluster.scheduler_address, on_progress=lambda *p: progress.append(p))
    assert entities_bytes(result, tmp_path / "dask.csv") == expected
    total = progress[-1][1]
    half = total // 2  # two passes over the slices, each reported from 0 as its tasks complete
    assert [done for done, _ in progress] == list(range(half + 1)) + list(range(half, total + 1))
    with distributed.Client(dask_cluster) as client:
        assert list(client.run(lambda: len(tasks._states)).values()) == [0, 0]


def test_a_worker_killed_mid_job_is_survived(inputs, tmp_path, monkeypatch):
    protocol, outs = inputs
    expected = entities_bytes(link(protocol, load_inputs(protocol, outs)), tmp_path / "local.csv")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        results = []
        killer = WorkerKiller(local)
        sent = scattered_during(
            monkeypatch,
            lambda: results.append(
                link(protocol, load_inputs(protocol, outs), dask=local.scheduler_address, on_progress=killer)
            ),
        )
    assert killer.killed_at is not None
    assert entities_bytes(results[0], tmp_path / "survived.csv") == expected
    # The killed worker's slices died with it (scattered data cannot be recomputed): they were cut again.
    tasks = [data.value.task for data, _ in sent if isinstance(data, Sealed)]
    assert len(set(tasks)) < len(tasks)


@pytest.fixture(scope="module")
def client_file(protocol, tmp_path_factory):
    """A client file of a few chunks with bad rows of every kind the workers find."""
    data = tmp_path_factory.mktemp("dask-encode")
    synthesise_population(protocol, 2500, 3, data)
    lines = (data / "msd.csv").read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace(lines[5].split(",")[3], "31/02/1990", 1)
    lines.insert(40, lines[20])  # a repeated client id
    lines.insert(60, "too,few,columns\n")
    (data / "msd.csv").write_text("".join(lines))
    return data / "msd.csv"


def test_encode_on_dask_writes_the_same_files_as_the_pool(dask_cluster, protocol, client_file, tmp_path, monkeypatch):
    monkeypatch.setattr(linkage.agency.sources, "CHUNK_ROWS", 400)  # several tasks from a small file
    progress = []
    pooled = encode_csv(protocol, "msd", SECRET, client_file, tmp_path / "pool", workers=2, on_error="skip")
    on_dask = encode_csv(
        protocol,
        "msd",
        SECRET,
        client_file,
        tmp_path / "dask",
        on_error="skip",
        dask=dask_cluster.scheduler_address,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert (on_dask.records, on_dask.rejected) == (pooled.records, pooled.rejected)
    assert on_dask.rejected == 4
    dask_files, pool_files = canonical(tmp_path / "dask"), canonical(tmp_path / "pool")
    assert sorted(dask_files) == ["attributes.csv", "dask/encodings.pprl", "keymap.csv", "rejected.csv"]
    assert dask_files.pop("dask/encodings.pprl") == pool_files.pop("pool/encodings.pprl")
    assert dask_files == pool_files
    done = [d for d, _ in progress]
    assert len(set(done)) > 3 and done == sorted(done) and progress[-1] == (client_file.stat().st_size,) * 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_encode_on_dask_gives_the_pool_errors_and_writes_nothing(dask_cluster, protocol, client_file, tmp_path):
    failures = []
    for name, where in (("pool", {"workers": 2}), ("dask", {"dask": dask_cluster.scheduler_address})):
        with pytest.raises(InputError, match="4 row\\(s\\) cannot be encoded; nothing was written") as info:
            encode_csv(protocol, "msd", SECRET, client_file, tmp_path / name, **where)
        failures.append((str(info.value), info.value.problems))
    assert failures[0] == failures[1]
    assert "line 41, column 'client_id': the client id is also on line 21" in "\n".join(failures[1][1])
    assert list(tmp_path.iterdir()) == []


def test_a_failed_encode_task_logs_neither_keys_nor_rows(dask_cluster, protocol):
    """Dask logs a failed task with its arguments; the keys and the rows travel sealed."""
    keys = derive_keys(SECRET, protocol)
    bad_setup = Sealed((protocol, "msd", keys, [99], 3))  # a column position past the row's end
    with distributed.Client(dask_cluster) as client:
        future = client.submit(_work_remote, "job", bad_setup, Sealed((2, "A1,Zebediah,Quixotic\n")), pure=False)
        with pytest.raises(IndexError):
            future.result()
        logged = str(client.get_worker_logs())
    assert "Compute Failed" in logged
    for secret in ("Zebediah", "Keys(", repr(keys.clk[0])[2:20]):
        assert secret not in logged


@pytest.mark.slow
def test_a_worker_killed_mid_encode_is_survived(protocol, client_file, tmp_path, monkeypatch):
    monkeypatch.setattr(linkage.agency.sources, "CHUNK_ROWS", 100)
    expected = encode_csv(protocol, "msd", SECRET, client_file, tmp_path / "pool", workers=2, on_error="skip")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        killer = WorkerKiller(local)
        survived = encode_csv(
            protocol,
            "msd",
            SECRET,
            client_file,
            tmp_path / "dask",
            on_error="skip",
            dask=local.scheduler_address,
            on_progress=killer,
        )
    assert killer.killed_at is not None and killer.killed_at < len(killer.progress) / 2
    assert survived.records == expected.records
    dask_files, pool_files = canonical(tmp_path / "dask"), canonical(tmp_path / "pool")
    assert dask_files.pop("dask/encodings.pprl") == pool_files.pop("pool/encodings.pprl")
    assert dask_files == pool_files


class WorkerKiller:
    """An ``on_progress`` callback that kills one of the cluster's workers at the job's first progress.

    The kill happens inside the job's own callback, before it takes a second result, so
    the killed worker still holds inputs (and results) the job has not consumed: the job
    must survive a real loss, whatever the machine's speed.
    """

    def __init__(self, local):
        with distributed.Client(local) as client:
            self.pid = next(iter(client.run(os.getpid).values()))
        self.progress: list[int] = []
        self.killed_at: int | None = None

    def __call__(self, done, _total):
        if self.killed_at is None and done > 0:
            os.kill(self.pid, signal.SIGKILL)
            self.killed_at = len(self.progress)
        self.progress.append(done)


def scattered_during(monkeypatch, run):
    """What ``run()`` scattered: (value, keyword arguments) of every call of ``Client.scatter``."""
    sent = []
    original = distributed.Client.scatter

    def spy(client, data, *args, **kwargs):
        sent.append((data, kwargs))
        return original(client, data, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "scatter", spy)
    run()
    monkeypatch.setattr(distributed.Client, "scatter", original)
    return sent


def array_bytes(value):
    """The bytes of every array in a scattered value (sealed, in dataclasses, tuples or lists)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Sealed):
        return array_bytes(value.value)
    if dataclasses.is_dataclass(value):
        return sum(array_bytes(getattr(value, field.name)) for field in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(array_bytes(item) for item in value)
    return 0


@pytest.fixture(scope="module")
def two_parties(tmp_path_factory):
    """Two parties of the example protocol (similarity rules and all), the first the larger."""
    protocol = protocol_with_parties(2)
    _, outs = encoded_population(protocol, 1500, 17, tmp_path_factory.mktemp("two"), profile="realistic")
    return protocol, outs


def test_similarity_bands_send_a_record_at_most_once_to_a_worker(dask_cluster, two_parties, monkeypatch, tmp_path):
    """Issue 18's regression: bands sent a record to a block partition per band it shared.

    The first party's slices go to one worker each, the second party to every worker once,
    whatever the blocking rules: at most one copy of a record per worker, only the fields a
    task reads, and the pool's candidates and entities.
    """
    protocol, outs = two_parties
    assert any(protocol.band_columns)
    encodings = load_inputs(protocol, outs)
    pooled = link(protocol, encodings, workers=2)
    results = []
    sent = scattered_during(
        monkeypatch, lambda: results.append(link(protocol, encodings, dask=dask_cluster.scheduler_address))
    )
    assert entities_bytes(results[0], tmp_path / "dask.csv") == entities_bytes(pooled, tmp_path / "pool.csv")
    assert results[0].pairs_compared == pooled.pairs_compared
    # All that was sent (a broadcast once per worker), however it was cut: at most the first
    # party once and the second once per worker (block partitions sent 2.9x that here).
    sizes = [item.header.record_count for item in encodings]
    total = sum((2 if kwargs.get("broadcast") else 1) * array_bytes(data) for data, kwargs in sent)
    assert total <= (sizes[0] + 2 * sizes[1]) * encodings[0].records.dtype.itemsize
    broadcast = [data for data, kwargs in sent if kwargs.get("broadcast")]
    assert len(broadcast) == 1 and len(broadcast[0]) == 1  # the second party, once to every worker
    records, _ = broadcast[0][0].value
    read = {"block", *(name for c in comparisons_for(protocol) for name in c.columns)}
    assert set(records.dtype.names) == read and "token" not in read
    first = np.asarray(encodings[0].records)
    assert np.array_equal(records["block"], np.asarray(encodings[1].records["block"]))
    slices = [(data.value, kwargs) for data, kwargs in sent if isinstance(data, Sealed)]
    assert all(not kwargs.get("broadcast") and len(kwargs["workers"]) == 1 for _, kwargs in slices)
    covered = np.concatenate([np.arange(*piece.task[2:]) for piece, _ in slices])
    assert np.array_equal(np.sort(covered), np.arange(len(first)))  # each record of the first party once
    for piece, _ in slices:
        start, stop = piece.task[2:]
        assert set(piece.records.dtype.names) == read
        assert np.array_equal(piece.records["block"], first["block"][start:stop])
    shipped = sum(piece.records.nbytes for piece, _ in slices) + 2 * records.nbytes
    assert shipped <= (len(first) + 2 * len(records)) * records.dtype.itemsize


def test_a_party_second_in_some_pair_is_never_sliced_again(dask_cluster, inputs, monkeypatch):
    """With three parties, the middle one is broadcast (second to the first): its slices carry no records."""
    protocol, outs = inputs
    sent = scattered_during(
        monkeypatch, lambda: link(protocol, load_inputs(protocol, outs), dask=dask_cluster.scheduler_address)
    )
    broadcast = [data for data, kwargs in sent if kwargs.get("broadcast")]
    assert len(broadcast) == 1 and len(broadcast[0]) == 2
    slices = [data.value for data, _ in sent if isinstance(data, Sealed)]
    assert {piece.task[:2] for piece in slices} == {(0, 1), (0, 2), (1, 2)}
    assert all((piece.records is None) == (piece.task[0] == 1) for piece in slices)


def test_a_clk_prefilter_sends_the_clks_with_the_slices(dask_cluster, inputs, monkeypatch, tmp_path):
    """An all-pairs CLK scan reads the CLKs: they travel with the records, and the result is the pool's."""
    protocol, outs = inputs
    scanning = dataclasses.replace(protocol, clk_prefilter=0.5)
    pooled = link(scanning, load_inputs(scanning, outs), workers=2)
    results = []
    sent = scattered_during(
        monkeypatch,
        lambda: results.append(link(scanning, load_inputs(scanning, outs), dask=dask_cluster.scheduler_address)),
    )
    broadcast = [data for data, kwargs in sent if kwargs.get("broadcast")]
    assert len(broadcast) == 1 and all("clk" in sealed.value[0].dtype.names for sealed in broadcast[0])
    assert entities_bytes(results[0], tmp_path / "dask.csv") == entities_bytes(pooled, tmp_path / "pool.csv")
    assert (
        results[0].pairs_compared == pooled.pairs_compared > link(protocol, load_inputs(protocol, outs)).pairs_compared
    )
