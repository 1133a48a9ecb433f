"""scripts/benchmark.py: rows run, ratios are computed against the MLP, the reference row doubles."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_rows_and_ratios(tmp_path):
  out = tmp_path / "bench.json"
  rows = "mlp,mlp/two_copies,bayes_mlp/local/K=1/mixture_kl_bound"
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, "scripts", "benchmark.py"),
      f"--only={rows}",
      "--steps=3",
      "--repeats=1",
      "--width=16",
      f"--json={out}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  results = {r["model"]: r for r in json.loads(out.read_text())["results"]}
  assert set(results) == set(rows.split(","))
  mlp, twice, bayes = (results[name] for name in rows.split(","))
  assert mlp["ratio_to_mlp"] == 1.0
  # The reference optimises two independent copies; the Bayesian MLP a mean and a scale per weight.
  assert twice["params"] == 2 * mlp["params"] == bayes["params"]
  for row in results.values():
    assert row["steps_per_sec"] > 0
    assert abs(row["ratio_to_mlp"] - row["steps_per_sec"] / mlp["steps_per_sec"]) < 1e-2
