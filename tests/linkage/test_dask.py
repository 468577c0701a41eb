"""The engine on a Dask cluster gives the same entities as the local process pool."""

import os
import signal
import threading
import time

import pytest

from linkage.engine import link, load_inputs, write_entities
from tests.linkage.test_engine import encoded_population, protocol_with_parties

distributed = pytest.importorskip("distributed")

# distributed's scheduler and nannies leave sockets for the garbage collector at start and
# close; that is theirs, not ours, and warnings are errors in this suite.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    protocol = protocol_with_parties(3)
    _, outs = encoded_population(protocol, 1200, 13, tmp_path_factory.mktemp("dask"))
    return protocol, outs


def entities_bytes(result, path):
    write_entities(result, path)
    return path.read_bytes()


def test_dask_gives_the_same_entities_as_the_pool(cluster, inputs, tmp_path):
    protocol, outs = inputs
    pooled = link(protocol, load_inputs(protocol, outs), workers=2)
    on_dask = link(protocol, load_inputs(protocol, outs), dask=cluster.scheduler_address)
    assert entities_bytes(on_dask, tmp_path / "dask.csv") == entities_bytes(pooled, tmp_path / "pool.csv")
    assert on_dask.pairs_compared == pooled.pairs_compared


def test_a_worker_killed_mid_job_is_survived(inputs, tmp_path):
    protocol, outs = inputs
    expected = entities_bytes(link(protocol, load_inputs(protocol, outs)), tmp_path / "local.csv")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        with distributed.Client(local) as client:
            pids = list(client.run(os.getpid).values())
        progress: list[int] = []

        def kill_when_started():
            deadline = time.monotonic() + 60
            while not progress and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        result = link(
            protocol,
            load_inputs(protocol, outs),
            dask=local.scheduler_address,
            on_progress=lambda done, _total: progress.append(done),
        )
        killer.join()
    assert entities_bytes(result, tmp_path / "survived.csv") == expected
