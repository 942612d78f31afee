"""One run over two processes (two host devices each) on this machine, as
over two hosts: ``--distributed --devices all`` gives the numbers of a
one-device run (README, "Scale")."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARGS = ["-m", "experiments.sinusoid", "--config", "tiny", "--set",
        "meta_batch=8", "--no-progress"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_device(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  env.pop("METAJAX_COMPILE_CACHE", None)
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, *ARGS, "--workdir", str(tmp_path / f"host{i}"),
       "--distributed", "--devices", "all"], cwd=ROOT,
      env=dict(env, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i),
               XLA_FLAGS="--xla_force_host_platform_device_count=2"),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  single = subprocess.run([sys.executable, *ARGS, "--workdir",
                           str(tmp_path / "single")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  hosts = [json.loads((tmp_path / f"host{i}" / "results.json").read_text())
           for i in range(2)]
  one = json.loads((tmp_path / "single" / "results.json").read_text())
  assert hosts[0]["run"]["meta_step_devices"]["devices"] == 4
  assert hosts[0]["run"]["meta_step_devices"]["processes"] == 2
  assert one["run"]["meta_step_devices"]["devices"] == 1
  for name in ("maml", "pretrained"):
    losses = [h["methods"][name]["final_train_loss"] for h in hosts]
    assert losses[0] == losses[1]  # one program: both hosts hold the same
    assert losses[0] == pytest.approx(
        one["methods"][name]["final_train_loss"], rel=1e-5)  # float32
