"""`pprl encode --dask`: the same output as the pool, and a clear error for an unreachable scheduler."""

import pytest
from click.testing import CliRunner

import linkage.dask_cluster
from cli.main import main
from tests.helpers import EXAMPLE_PROTOCOL, SECRET, msd_row

pytest.importorskip("distributed")

# distributed's scheduler and nannies leave sockets for the garbage collector at start and
# close; that is theirs, not ours, and warnings are errors in this suite.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def test_pprl_encode_dask_and_an_unreachable_scheduler(dask_cluster, write_csv, tmp_path, monkeypatch):
    path = write_csv([msd_row("A1"), msd_row("A2", given="Mere")])
    base = ["encode", "--protocol", str(EXAMPLE_PROTOCOL), "--party", "msd", str(path), "--quiet"]
    runner = CliRunner()
    env = {"PPRL_SECRET": SECRET.hex()}
    result = runner.invoke(
        main, [*base, "--out", str(tmp_path / "out"), "--dask", dask_cluster.scheduler_address], env=env
    )
    assert result.exit_code == 0, result.output
    assert "encoded 2 records for msd (0 rejected)" in result.output and SECRET.hex() not in result.output
    assert "inside your agency" in runner.invoke(main, ["encode", "--help"]).output
    monkeypatch.setattr(linkage.dask_cluster, "CONNECT_SECONDS", 1)
    unreachable = runner.invoke(main, [*base, "--out", str(tmp_path / "no"), "--dask", "tcp://127.0.0.1:9"], env=env)
    assert unreachable.exit_code == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in unreachable.output
    assert not (tmp_path / "no").exists()
