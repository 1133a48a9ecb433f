"""Config sweeps: bnnjax.config.product and scripts/sweep.py end to end."""
import json
import os
import re
import subprocess
import sys

import pytest

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


def test_a_misspelt_set_field_stops_the_sweep_before_any_point_runs(tmp_path):
  result = run_sweep(f"--workdir={tmp_path}", "--set=num_step=50")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "error: --set: config has no field 'num_step'; did you mean 'num_steps'?"]
  assert not os.listdir(tmp_path)


def test_a_misspelt_get_sweep_entry_names_its_point(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text(
      "from bnnjax.config import base_config\n"
      "def get_config():\n"
      "  c = base_config(); c.data.name = 'digits'; c.model.hidden_sizes = (8,); return c\n"
      "def get_sweep():\n"
      "  return [{'optimizer.lr': 0.1}, {'model.hiden_sizes': (4,)}]\n")
  workdir = tmp_path / "runs"
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sweep.py"),
                           f"--config={path}", f"--workdir={workdir}"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "error: get_sweep()[1]: config.model has no field 'hiden_sizes'; did you mean 'hidden_sizes'?"]
  assert not workdir.exists()


@pytest.mark.parametrize("overrides, message", [
    ({"num_step": 5}, "config has no field 'num_step'; did you mean 'num_steps'?"),
    ({"model.prior_scael": 2.0}, "config.model has no field 'prior_scael'; did you mean 'prior_scale'?"),
    ({"optimizer.lrr": 0.1}, "config.optimizer has no field 'lrr'; did you mean 'lr'?"),
    ({"data.seed.x": 1}, "config.data.seed is a value, not a section"),
    ({"num_steps": "many"}, "config.num_steps"),
])
def test_with_overrides_refuses_unknown_fields(overrides, message):
  config = config_lib.with_overrides(config_lib.base_config(), {"model.name": "bayes_mlp"})
  with pytest.raises(ValueError, match=re.escape(message)):
    config_lib.with_overrides(config, overrides)
