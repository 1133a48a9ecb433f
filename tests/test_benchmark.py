"""scripts/benchmark.py: rows run, ratios are computed against the MLP and the two-copies floor, the
reference row doubles the parameters and the FLOPs, the ensemble against M MLP steps, predictive
rows, device and memory."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_rows_and_ratios(tmp_path):
  out = tmp_path / "bench.json"
  rows = "mlp,mlp/two_copies,bayes_mlp/local/K=1/mixture_kl_bound,ensemble/mlp/M=5,sgmcmc/mlp/sgld"
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, "scripts", "benchmark.py"),
      "--steps=3",
      "--repeats=1",
      "--width=16",
      "--peak_size=64",
      "--eval_samples=3",
      "--eval_examples=50",
      f"--only={rows},predictive",
      f"--json={out}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads(out.read_text())
  results = {r["model"]: r for r in summary["results"]}
  assert set(results) == set(rows.split(","))
  mlp, twice, bayes, ensemble, sgld = (results[name] for name in rows.split(","))
  assert mlp["ratio_to_mlp"] == 1.0 and twice["ratio_to_floor"] == 1.0
  # The reference optimises two independent copies; the Bayesian MLP a mean and a scale per weight.
  assert twice["params"] == 2 * mlp["params"] == bayes["params"]
  # XLA counts the copies' arithmetic twice (the batch draw and Adam's scalar work aside).
  assert 1.9 < twice["gflop_per_step"] / mlp["gflop_per_step"] < 2.1
  # Five members side by side, compared with five MLP steps; SGLD trains the MLP's weights
  # with its own update rule (the trajectory's optimizer) and keeps samples beside them.
  assert ensemble["params"] == 5 * mlp["params"] and sgld["params"] > mlp["params"]
  expected = 5 * ensemble["steps_per_sec"] / mlp["steps_per_sec"]
  assert abs(ensemble["ratio_to_separate_mlp_steps"] - expected) < 1e-2
  for row in results.values():
    assert row["steps_per_sec"] > 0
    assert abs(row["ratio_to_mlp"] - row["steps_per_sec"] / mlp["steps_per_sec"]) < 1e-2
    assert abs(row["ratio_to_floor"] - row["steps_per_sec"] / twice["steps_per_sec"]) < 1e-2
    achieved = row["gflop_per_step"] * row["steps_per_sec"]
    assert abs(row["fraction_of_peak"] - achieved / summary["matmul_peak_gflops"]) < 2e-3 + 0.01 * achieved
  assert [r["model"] for r in summary["predictive"]] == ["predictive/bayes_mlp/local/K=3"]
  assert summary["predictive"][0]["examples_per_sec"] > 0
  assert summary["device"].startswith("cpu") and summary["peak_rss_bytes"] > 2**20
