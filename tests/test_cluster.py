"""Runs that share a machine or a cluster: the workdir lock, several processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bnnjax import checkpoint, train, writers
from tests.test_train import REPO, digits_config, run_cli, tree_equal

HOLDER_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from tests.test_train import digits_config
from bnnjax import train
train.fit(digits_config(num_steps=1_000_000, eval_every=100_000, checkpoint_every=100_000), {workdir!r})
"""


def _wait_for_holder(workdir, process, timeout=120.0):
  """The holder record a running fit writes beside its lock, once it is there."""
  path = os.path.join(workdir, checkpoint.LOCK_FILE + ".json")
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert process.poll() is None, process.communicate()[1][-2000:]
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        return json.load(f)
    time.sleep(0.1)
  raise AssertionError("the run in the subprocess never took the lock")


def test_a_second_run_is_refused_and_a_killed_run_leaves_no_stale_lock(tmp_path):
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLDER_SCRIPT.format(repo=REPO, workdir=workdir)],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    record = _wait_for_holder(workdir, holder)
    assert record["pid"] == holder.pid
    with pytest.raises(checkpoint.WorkdirBusy, match=f"pid {holder.pid}") as info:
      train.fit(digits_config(num_steps=10), workdir)
    assert "\n" not in str(info.value)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  state = train.fit(digits_config(num_steps=10), workdir)  # the OS released the lock
  assert int(state.step) == 10


def test_a_lock_path_that_is_not_a_lock_file_is_one_line(tmp_path):
  os.makedirs(tmp_path / checkpoint.LOCK_FILE)
  with pytest.raises(checkpoint.CheckpointError, match="cannot lock workdir") as info:
    train.fit(digits_config(num_steps=10), str(tmp_path))
  assert "\n" not in str(info.value)


# 200 steps: the 2-process (gloo) loop runs about 40 steps/s here, so a run killed once its
# step-50 checkpoint lands is killed mid-way.
CLI_ARGS = [
  "--config=configs/mlp_digits.py",
  "--config.num_steps=200",
  "--config.eval_every=100",
  "--config.checkpoint_every=50",
  "--config.log_every=50",
  "--config.progress_bar=False",
  "--config.model.hidden_sizes=32",
]


def _start_two_processes(workdir):
  """Both processes of a jax.distributed run of CLI_ARGS (the CLI's multi-process path)."""
  with socket.socket() as probe:  # a port that is free now
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  script = os.path.join(REPO, "scripts", "train.py")
  return [
    subprocess.Popen(
      [
        sys.executable,
        script,
        *CLI_ARGS,
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        f"--workdir={workdir}",
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]


def _finish(workers):
  outputs = [w.communicate(timeout=300) for w in workers]
  assert all(w.returncode == 0 for w in workers), outputs[0][1][-2000:] + outputs[1][1][-2000:]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """An uninterrupted 2-process run of CLI_ARGS."""
  workdir = str(tmp_path_factory.mktemp("two") / "run")
  _finish(_start_two_processes(workdir))
  return workdir


def test_two_processes_train_like_one(two_process_run, tmp_path):
  """jax.distributed over two local processes (gloo) matches one process up to rounding."""
  single = run_cli(*CLI_ARGS, f"--workdir={tmp_path / 'single'}")
  assert single.returncode == 0, single.stderr[-2000:]
  multi_params, _ = checkpoint.restore_params(two_process_run)
  single_params, _ = checkpoint.restore_params(str(tmp_path / "single"))
  for a, b in zip(jax.tree_util.tree_leaves(multi_params), jax.tree_util.tree_leaves(single_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_two_processes_killed_and_restarted_continue_bit_identically(two_process_run, tmp_path):
  workdir = str(tmp_path / "run")
  workers = _start_two_processes(workdir)
  deadline = time.monotonic() + 240
  while not os.path.isdir(os.path.join(workdir, "checkpoints", "50")):
    assert time.monotonic() < deadline and all(w.poll() is None for w in workers), (
      "the run ended before its step-50 checkpoint: " + workers[0].communicate()[1][-2000:]
    )
    time.sleep(0.05)
  for worker in workers:
    worker.send_signal(signal.SIGKILL)
  for worker in workers:
    worker.communicate()
  assert not os.path.isdir(os.path.join(workdir, "checkpoints", "200"))  # killed mid-way
  _finish(_start_two_processes(workdir))
  resumed, _ = checkpoint.restore_params(workdir)
  full, _ = checkpoint.restore_params(two_process_run)
  assert tree_equal(resumed, full)
  steps = [r["step"] for r in writers.read_metrics(workdir)]
  assert steps == [r["step"] for r in writers.read_metrics(two_process_run)]
