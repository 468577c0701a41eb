"""Fault tests on a real server process: kill -9 during an upload and after starting a run."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.helpers import ADMIN, ADMIN_SECRET, CSV, OCTET, PARTIES, ROOT, bearer, create_project, wait_for_run

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`pprl serve` in a subprocess, on a fixed data folder and port."""

    def __init__(self, data_dir, secret_file, log_path):
        self.data_dir, self.secret_file, self.log_path = data_dir, secret_file, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        command = [sys.executable, "-m", "cli.main", "serve", "--data-dir", str(self.data_dir), "--port",
                   str(self.port), "--admin-secret-file", str(self.secret_file), "--workers", "1"]  # fmt: skip
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()  # never leave a half-started server behind
        raise AssertionError(f"the server did not start: {self.log_path.read_text()}")

    def kill(self):
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    secret = tmp_path / "admin.secret"
    secret.write_text(ADMIN_SECRET)
    started = Server(tmp_path / "data", secret, tmp_path / "server.log")
    started.start()
    yield started
    started.stop()


def received_bytes(blobs):
    """Bytes of the half-received bodies in the blob folder."""
    return sum(path.stat().st_size for path in blobs.glob(".incoming-*"))


def wait_for(condition, deadline=30.0):
    """Whether ``condition()`` became true before the deadline (checked as the server writes)."""
    stop = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > stop:
            return False
        time.sleep(0.01)
    return True


def test_kill_during_upload_and_run_loses_nothing_and_duplicates_nothing(server, agencies):
    client = httpx.Client(base_url=server.url, timeout=30)
    project_id, credentials = create_project(client)
    for party in ("msd", "police"):
        body = (agencies[party] / "encodings.pprl").read_bytes()
        response = client.put(
            f"/projects/{project_id}/encodings", content=body, headers={**bearer(credentials[party]), **OCTET}
        )
        assert response.status_code == 201

    # Kill -9 while haven's encodings are half sent.
    body = (agencies["haven"] / "encodings.pprl").read_bytes()
    half_sent, killed = threading.Event(), threading.Event()

    def slow_body():
        yield body[: len(body) // 2]
        half_sent.set()
        killed.wait(30)
        yield body[len(body) // 2 :]

    def send():
        headers = {**bearer(credentials["haven"]), **OCTET, "Content-Length": str(len(body))}
        try:
            httpx.put(f"{server.url}/projects/{project_id}/encodings", content=slow_body(), headers=headers, timeout=30)
        except httpx.HTTPError:
            pass

    sender = threading.Thread(target=send)
    sender.start()
    assert half_sent.wait(30)
    incoming = wait_for(lambda: received_bytes(server.data_dir / "blobs") >= len(body) // 2)
    assert incoming, "the server wrote the half it received before it was killed"
    server.kill()
    killed.set()
    sender.join(30)
    assert any(path.name.startswith(".incoming-") for path in (server.data_dir / "blobs").iterdir())

    server.start()
    parties = client.get(f"/projects/{project_id}", headers=ADMIN).json()["parties"]
    assert {p["id"]: p["encodings_uploaded"] for p in parties} == {"msd": True, "police": True, "haven": False}
    blobs = sorted(path.name for path in (server.data_dir / "blobs").iterdir())
    assert len(blobs) == 2, "the half-received body is gone, the two complete uploads are kept"
    again = client.put(
        f"/projects/{project_id}/encodings", content=body, headers={**bearer(credentials["haven"]), **OCTET}
    )
    assert again.status_code == 201

    for party in PARTIES:
        body = (agencies[party] / "attributes.csv").read_bytes()
        headers = {**bearer(credentials[party]), **CSV}
        assert client.put(f"/projects/{project_id}/attributes", content=body, headers=headers).status_code == 201

    # Kill -9 right after queuing a run: after a restart it completes, once.
    run = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"])).json()
    server.kill()
    server.start()
    status = wait_for_run(client, project_id, run["run_id"], ADMIN_SECRET)
    assert status["status"] == "done", status
    assert client.get(f"/projects/{project_id}/runs/{run['run_id'] + 1}", headers=ADMIN).status_code == 404
    results = client.get(f"/projects/{project_id}/results", headers=bearer(credentials["msd"])).json()
    assert results["run_id"] == run["run_id"]
    assert results["records"]

    log = server.log_path.read_text()
    assert ADMIN_SECRET not in log
    assert not any(token in log for token in credentials.values())
    assert f"/projects/{project_id}/encodings" in log, "the access log is on"
    client.close()
