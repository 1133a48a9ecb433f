"""Runs that share a machine or a cluster: the workdir lock, several processes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bnnjax import checkpoint, train
from tests.test_train import REPO, digits_config

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
  holder = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT.format(repo=REPO, workdir=workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
