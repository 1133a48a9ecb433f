"""Config sweeps: bnnjax.config.product and scripts/sweep.py end to end."""

import json
import os
import re
import subprocess
import sys

import pytest

from bnnjax import checkpoint, sweep
from bnnjax import config as config_lib
from tests.test_train import digits_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_product_lists_every_combination_once():
  points = config_lib.product({"optimizer.lr": [1, 2, 3], "model.estimator": ["a", "b"]})
  assert len(points) == 6
  assert {(p["optimizer.lr"], p["model.estimator"]) for p in points} == {
    (lr, e) for lr in (1, 2, 3) for e in ("a", "b")
  }


def test_with_overrides_leaves_the_original_untouched():
  base = config_lib.base_config()
  changed = config_lib.with_overrides(base, {"optimizer.lr": 0.5, "model.name": "bayes_mlp"})
  assert (changed.optimizer.lr, changed.model.name) == (0.5, "bayes_mlp")
  assert (base.optimizer.lr, base.model.name) == (1e-3, "mlp")


def run_sweep(*args):
  return subprocess.run(
    [sys.executable, os.path.join(REPO, "scripts", "sweep.py"), "--config=configs/mlp_digits.py", *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )


def test_sweep_runs_the_chosen_point_with_its_overrides(tmp_path):
  result = run_sweep(f"--workdir={tmp_path}", "--index=5", "--set=num_steps=20", "--set=progress_bar=false")
  assert result.returncode == 0, result.stderr[-2000:]
  with open(tmp_path / "sweep.json") as f:
    rows = json.load(f)["runs"]
  assert [r["status"] for r in rows] == ["pending"] * 5 + ["finished"]  # the other tasks' rows
  row = rows[5]
  assert row["overrides"] == {"optimizer.lr": 0.003, "model.hidden_sizes": [128, 128]}
  with open(os.path.join(row["workdir"], "config.json")) as f:
    saved = json.load(f)
  assert saved["optimizer"]["lr"] == 0.003 and saved["model"]["hidden_sizes"] == [128, 128]
  assert saved["num_steps"] == 20 and row["final"]["step"] == 20


def test_sweep_index_out_of_range_is_one_line(tmp_path):
  result = run_sweep(f"--workdir={tmp_path}", "--index=6")
  assert result.returncode != 0
  assert "--index=6 but the sweep has 6 points" in result.stderr
  assert "Traceback" not in result.stderr


def test_a_misspelt_set_field_stops_the_sweep_before_any_point_runs(tmp_path):
  result = run_sweep(f"--workdir={tmp_path}", "--set=num_step=50")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    "error: --set: config has no field 'num_step'; did you mean 'num_steps'?"
  ]
  assert not os.listdir(tmp_path)


def test_a_misspelt_get_sweep_entry_names_its_point(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text(
    "from bnnjax.config import base_config\n"
    "def get_config():\n"
    "  c = base_config(); c.data.name = 'digits'; c.model.hidden_sizes = (8,); return c\n"
    "def get_sweep():\n"
    "  return [{'optimizer.lr': 0.1}, {'model.hiden_sizes': (4,)}]\n"
  )
  workdir = tmp_path / "runs"
  result = subprocess.run(
    [sys.executable, os.path.join(REPO, "scripts", "sweep.py"), f"--config={path}", f"--workdir={workdir}"],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    "error: get_sweep()[1]: config.model has no field 'hiden_sizes'; did you mean 'hidden_sizes'?"
  ]
  assert not workdir.exists()


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"num_step": 5}, "config has no field 'num_step'; did you mean 'num_steps'?"),
    ({"model.prior_scael": 2.0}, "config.model has no field 'prior_scael'; did you mean 'prior_scale'?"),
    ({"optimizer.lrr": 0.1}, "config.optimizer has no field 'lrr'; did you mean 'lr'?"),
    ({"data.seed.x": 1}, "config.data.seed is a value, not a section"),
    ({"num_steps": "many"}, "config.num_steps"),
  ],
)
def test_with_overrides_refuses_unknown_fields(overrides, message):
  config = config_lib.with_overrides(config_lib.base_config(), {"model.name": "bayes_mlp"})
  with pytest.raises(ValueError, match=re.escape(message)):
    config_lib.with_overrides(config, overrides)


def tiny_trials(seeds=(0, 1), points=({"optimizer.lr": 0.01}, {"optimizer.lr": 0.03})):
  config = digits_config(num_steps=10, eval_every=10, checkpoint_every=10, **{"model.hidden_sizes": (8,)})
  return sweep.make_trials(config, list(points), seeds=seeds)


def read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_index_loop_parallel_processes_and_submitit_give_one_table(tmp_path):
  """2 points x 2 seeds: as a job array's tasks (--index), in 2 processes, via submitit."""
  trials = tiny_trials()
  for i in range(len(trials)):  # each task adds its result: nothing is lost
    sweep.launch(trials, str(tmp_path / "array"), index=i)
  table = read(tmp_path / "array" / "sweep.md")
  assert "| 0 | 0.01 | 2 | 2 finished |" in table and " ± " in table
  # Each launcher runs one point's two seeds at once (two processes): the same row.
  sweep.launch(trials[2:], str(tmp_path / "parallel"), parallel=2)
  assert read(tmp_path / "parallel" / "sweep.md").splitlines()[2] == table.splitlines()[3]
  # submitit's LocalExecutor: what --launcher=slurm submits, run on this machine
  sweep.launch(trials[:2], str(tmp_path / "submitit"), launcher="local_submitit", parallel=2)
  assert read(tmp_path / "submitit" / "sweep.md").splitlines()[2] == table.splitlines()[2]
  results = [tmp_path / "array" / t.name / "result.json" for t in trials]
  written = [os.stat(path).st_mtime_ns for path in results]
  records = sweep.launch(trials, str(tmp_path / "array"))  # a re-run skips every finished run
  assert [r["status"] for r in records] == ["finished"] * 4
  assert [os.stat(path).st_mtime_ns for path in results] == written
  with open(tmp_path / "array" / "sweep.csv") as f:
    header, first, _ = f.read().splitlines()
  assert header.startswith("point,optimizer.lr,n,failed,test/accuracy_mean,test/accuracy_std")
  assert first.startswith("0,0.01,2,0,")


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path):
  trials = tiny_trials(seeds=(), points=[{"batch_size": 100_000}, {"batch_size": 32}])
  records = sweep.launch(trials, str(tmp_path))
  assert [r["status"] for r in records] == ["failed", "finished"]
  with open(tmp_path / trials[0].name / "result.json") as f:
    assert "exceeds the" in json.load(f)["error"]
  with open(tmp_path / trials[1].name / "result.json") as f:
    assert json.load(f)["provenance"]["start_step"] == 0  # what produced the row
  table = read(tmp_path / "sweep.md")
  assert "| 0 | 100000 | 0 | 1 failed |" in table and "- point 0 failed: config.batch_size=100000" in table


def test_a_run_whose_workdir_is_locked_is_left_to_its_holder(tmp_path):
  (trial,) = tiny_trials(seeds=(), points=[{}])
  workdir = tmp_path / trial.name
  workdir.mkdir()
  with checkpoint.workdir_lock(str(workdir)):
    (record,) = sweep.launch([trial], str(tmp_path))
  assert record["status"] == "running" and f"pid {os.getpid()}" in record["error"]
  assert not (workdir / "result.json").exists()
  assert "| 0 | 0 | 1 running |" in read(tmp_path / "sweep.md")


def test_slurm_job_array_carries_partition_time_and_gpus(tmp_path, monkeypatch):
  """A fake sbatch keeps the batch file submitit writes; nothing runs."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
  (bin_dir / "sbatch").write_text(
    f"#!/bin/sh\ncp \"$1\" {tmp_path}/batch.sh\necho 'Submitted batch job 42'\n"
  )
  for tool in ("srun", "sbatch"):
    os.chmod(bin_dir / tool, 0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  trials = tiny_trials(seeds=(0, 1, 2))
  records = sweep.launch(
    trials, str(tmp_path / "sweep"), launcher="slurm", partition="gpu", time_min=120, gpus=1, parallel=2
  )
  assert [r["job"] for r in records] == [f"42_{i}" for i in range(6)]
  batch = read(tmp_path / "batch.sh")
  for line in ("--array=0-5%2", "--partition=gpu", "--time=120", "--gpus-per-node=1"):
    assert f"#SBATCH {line}" in batch
  assert "3 pending" in read(tmp_path / "sweep" / "sweep.md")


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"launcher": "pbs"}, "--launcher='pbs' is not one of local, local_submitit, slurm"),
    ({"parallel": 0}, "--parallel must be at least 1, got 0"),
    ({"index": 6}, "--index=6 but the sweep has 6 runs (2 points x 3 seeds)"),
    ({"index": 1, "parallel": 2}, "--index runs one run in this process"),
  ],
)
def test_bad_launch_is_one_line(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    sweep.launch(tiny_trials(seeds=(0, 1, 2)), str(tmp_path), **kwargs)
  assert not os.listdir(tmp_path)


def test_slurm_without_a_cluster_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))  # no srun
  with pytest.raises(ValueError, match="--launcher=slurm: .*srun"):
    sweep.launch(tiny_trials(), str(tmp_path / "sweep"), launcher="slurm")


def test_duplicate_seeds_are_one_line(tmp_path):
  result = run_sweep(f"--workdir={tmp_path}", "--seeds=0,1,0")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == ["error: --seeds lists 0 twice: each seed runs once per point"]
