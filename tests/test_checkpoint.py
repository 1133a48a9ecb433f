"""What a run leaves on disk after a crash: metrics.jsonl, checkpoints, provenance."""

import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys

import jax
import jaxlib
import numpy as np
import pytest

import bnnjax
from bnnjax import checkpoint, train, writers
from tests.test_train import REPO, digits_config


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
  """A run that died after logging step 30, before its checkpoint landed, mid-way through a line."""
  workdir = str(tmp_path_factory.mktemp("crashed"))
  train.fit(digits_config(), workdir, stop_after=30)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "30"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") as f:
    f.write('{"step": 31, "train/lo')
  return workdir


def steps(workdir):
  return [r["step"] for r in writers.read_metrics(workdir)]


def test_read_metrics_leaves_out_a_truncated_last_line(crashed):
  assert steps(crashed) == [10, 20, 20, 30]


def test_a_malformed_line_before_the_last_is_one_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match="metrics.jsonl line 2 is not JSON") as info:
    writers.read_metrics(str(tmp_path))
  assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def resumed(crashed, tmp_path_factory):
  """The crashed run, resumed (from step 20) to its end."""
  workdir = str(tmp_path_factory.mktemp("resumed") / "run")
  shutil.copytree(crashed, workdir)
  train.fit(digits_config(), workdir)
  return workdir


def test_resume_drops_the_records_after_the_restored_step(resumed):
  workdir = resumed
  assert steps(workdir) == [10, 20, 20, 30, 40, 40]  # as an uninterrupted run logs them
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    assert all(json.loads(line) for line in f)  # the truncated line is gone from the file too


def test_each_fit_records_its_provenance_beside_config_json(resumed):
  with open(os.path.join(resumed, "provenance.json"), encoding="utf-8") as f:
    first, second = json.load(f)  # one entry per fit: the crashed run's, then the resume's
  assert (first["start_step"], second["start_step"]) == (0, 20)
  head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
  assert second["git_commit"] == head.stdout.strip() and isinstance(second["git_dirty"], bool)
  assert (second["bnnjax"], second["jax"], second["jaxlib"]) == (
    bnnjax.__version__,
    jax.__version__,
    jaxlib.__version__,
  )
  assert second["devices"] == {
    "platform": "cpu",
    "count": jax.device_count(),
    "kinds": ["cpu"],
    "process_count": 1,
  }
  for key in ("python", "host", "time"):
    assert second[key]


def _array_files(workdir, step):
  folder = os.path.join(workdir, "checkpoints", str(step), "state")
  return [
    os.path.join(root, name)
    for root, _, names in os.walk(folder)
    for name in names
    if os.sep + "d" + os.sep in os.path.join(root, name)
  ]


def _flip_a_bit(path, offset):
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))


def test_corrupt_checkpoints_are_set_aside_quietly_and_an_older_one_used(resumed, tmp_path, caplog):
  """Step 30: one bit flipped in its compressed array data (it decodes, to other values); step 20:
  its array data cut short (a long TensorStore error)."""
  workdir = str(tmp_path / "run")
  train.fit(digits_config(), workdir, stop_after=30)
  _flip_a_bit(max(_array_files(workdir, 30), key=os.path.getsize), 500)
  with open(max(_array_files(workdir, 20), key=os.path.getsize), "r+b") as f:
    f.truncate(100)
  caplog.clear()
  state = train.fit(digits_config(), workdir)  # from step 10: the same run as uninterrupted
  params, _ = checkpoint.restore_params(resumed)
  assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, state.params, params)))
  assert sorted(n.split("-")[0] for n in os.listdir(os.path.join(workdir, "unreadable_checkpoints"))) == [
    "20",
    "30",
  ]
  lines = caplog.text.strip().splitlines()
  assert len(lines) <= 3 and all(len(line) < 400 for line in lines), caplog.text[:3000]
  assert "step 30" in caplog.text and "step 20" in caplog.text and "step 10" in lines[-1]


def test_reads_that_orbax_leaves_failing_print_nothing(tmp_path, monkeypatch, caplog):
  """orbax closes its event loop without awaiting every read; a second read that failed too
  logs "Task exception was never retrieved" (pages of TensorStore spec) whenever it is
  collected. The CI run of f7e6630 printed 85 such lines; restore collects them while quiet."""
  manager = checkpoint.make_manager(str(tmp_path))
  state = train.TrainState({"w": jax.numpy.ones(3)}, (), jax.random.PRNGKey(0), jax.numpy.zeros(()))
  checkpoint.save(manager, 1, state, {})

  def orbax_like_failure(*args, **kwargs):
    async def read(name):
      raise ValueError(f"OUT_OF_RANGE: Error reading {name}")

    async def restore_all():
      asyncio.ensure_future(read("b"))  # awaited by no one
      await asyncio.sleep(0)
      await read("a")

    loop = asyncio.new_event_loop()
    try:
      loop.run_until_complete(restore_all())
    finally:
      loop.close()

  monkeypatch.setattr(manager, "restore", orbax_like_failure)
  caplog.clear()
  with pytest.raises(checkpoint.CheckpointError, match=r"step 1: ValueError: OUT_OF_RANGE: Error reading a"):
    checkpoint.restore(manager, state)
  gc.collect()
  assert "never retrieved" not in caplog.text, caplog.text[:2000]


def test_a_failed_save_ends_in_one_line_naming_the_step_kept(tmp_path, monkeypatch, capsys):
  """TensorStore's callbacks print tracebacks of the failing writes to stderr: held back on a
  failure (a full tmpfs printed about 28 such lines before the error), passed on otherwise."""
  manager = checkpoint.make_manager(str(tmp_path))
  state = {"w": jax.numpy.ones(3)}
  save = manager.save

  def printing_save(*args, **kwargs):
    print("a line from a save that succeeded", file=sys.stderr)
    return save(*args, **kwargs)

  monkeypatch.setattr(manager, "save", printing_save)
  checkpoint.save(manager, 1, state, {})
  assert capsys.readouterr().err == "a line from a save that succeeded\n"

  def disk_full(*args, **kwargs):
    print("Traceback (most recent call last):\nRuntimeError: Event loop is closed", file=sys.stderr)
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(manager, "save", disk_full)
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"saving checkpoint step 2 .* failed "
    r"\(OSError: .*No space left on device\); the last good checkpoint: step 1 is kept",
  ):
    checkpoint.save(manager, 2, state, {})
  assert capsys.readouterr().err == ""
