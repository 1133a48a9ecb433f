"""What a run leaves on disk after a crash: metrics.jsonl, checkpoints, provenance."""
import json
import os
import shutil

import pytest

from bnnjax import train, writers
from tests.test_train import digits_config


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


def test_resume_drops_the_records_after_the_restored_step(crashed, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(crashed, workdir)
  train.fit(digits_config(), workdir)  # resumes at step 20
  assert steps(workdir) == [10, 20, 20, 30, 40, 40]  # as an uninterrupted run logs them
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    assert all(json.loads(line) for line in f)  # the truncated line is gone from the file too
