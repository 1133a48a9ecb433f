"""Config sweeps: bnnjax.config.product and scripts/sweep.py end to end."""
import json
import os
import subprocess
import sys

from bnnjax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_product_lists_every_combination_once():
  points = config_lib.product({"optimizer.lr": [1, 2, 3], "model.estimator": ["a", "b"]})
  assert len(points) == 6
  assert {(p["optimizer.lr"], p["model.estimator"]) for p in points} == {
      (lr, e) for lr in (1, 2, 3) for e in ("a", "b")}


def test_with_overrides_leaves_the_original_untouched():
  base = config_lib.base_config()
  changed = config_lib.with_overrides(base, {"optimizer.lr": 0.5, "model.name": "bayes_mlp"})
  assert (changed.optimizer.lr, changed.model.name) == (0.5, "bayes_mlp")
  assert (base.optimizer.lr, base.model.name) == (1e-3, "mlp")


def run_sweep(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sweep.py"),
                         "--config=configs/mlp_digits.py", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=300)


def test_sweep_runs_the_chosen_point_with_its_overrides(tmp_path):
  result = run_sweep(f"--workdir={tmp_path}", "--index=5", "--set=num_steps=20",
                     "--set=progress_bar=false")
  assert result.returncode == 0, result.stderr[-2000:]
  with open(tmp_path / "sweep.json") as f:
    (row,) = json.load(f)
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
