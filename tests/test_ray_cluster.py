"""`search.address`: a search joins a Ray cluster that is already running (`ray start --head`).

Kept apart from test_executor_ray.py: `ray stop` ends every Ray process of this user, so it
must not run beside that module's session.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_search import front_of_run, stored, write_config

from merge3.evolve import start_search

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(monkeypatch):
    """A head node started by `ray start`, with the token authentication Ray now defaults to;
    every process that joins it (merge3, the probe) runs with the same RAY_AUTH_MODE."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    port = _free_port()
    started = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        ip = re.search(r"Local node IP: (\S+)", started.stdout + started.stderr)
        yield f"{ip.group(1) if ip else '127.0.0.1'}:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def test_a_search_joins_a_running_cluster_and_leaves_it_running(cluster, tiny_dir, tmp_path):
    small = dict(generations=2, population=4)
    reference = start_search(write_config(tmp_path, "ref.yaml", **small), tmp_path / "ref").path
    path = write_config(tmp_path, "ray.yaml", executor="ray", workers=2, address=cluster, **small)
    data = yaml.safe_load(path.read_text())
    assert data["search"]["address"] == cluster
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "merge3", "search", str(path), "--run-dir", str(tmp_path / "run"),
         "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"search on the external cluster: {time.perf_counter() - t0:.1f} s")
    assert stored(tmp_path / "run") == stored(reference)
    assert front_of_run(tmp_path / "run") == front_of_run(reference)
    # The executor did not start the cluster, so it must not have shut it down.
    probe = (
        f"import ray; ray.init(address={cluster!r}, logging_level='ERROR'); "
        "print(int(ray.cluster_resources()['CPU']))"
    )
    alive = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=180
    )
    assert alive.returncode == 0 and alive.stdout.strip().endswith("2"), alive.stderr[-2000:]
