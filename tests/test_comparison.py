"""The side-by-side table: the headline OOD score fixed by K, standard errors over seeds."""

import math

import pytest

from bnnjax.evaluation import comparison


def report(num_samples, auroc_mi=0.9, auroc_mp=0.8):
  return {
    "num_samples": num_samples,
    "in_distribution": {"accuracy": 0.98, "nll": 0.07, "brier": 0.03, "ece": 0.01},
    "ood": {
      "kmnist": {
        "num_examples": 10000,
        "mutual_information": {"auroc": auroc_mi},
        "one_minus_max_prob": {"auroc": auroc_mp},
      }
    },
  }


def test_the_headline_auroc_is_mutual_information_for_several_draws_and_max_prob_for_one():
  assert comparison.run_figures(report(16), 10, 1, 5)["auroc/kmnist"] == 0.9
  one = comparison.run_figures(report(1), 10, 1, 5)
  assert one["auroc/kmnist"] == 0.8 and one["auroc/kmnist/mutual_information"] == 0.9
  assert "auroc/kmnist/num_examples" not in one


def test_mean_and_standard_error_over_seeds():
  stats = comparison.mean_and_error([1.0, 2.0, 6.0])
  assert stats["mean"] == pytest.approx(3.0) and stats["n"] == 3
  assert stats["se"] == pytest.approx(math.sqrt(7.0) / math.sqrt(3.0))  # std (ddof=1) = sqrt(7)
  assert math.isnan(comparison.mean_and_error([4.0])["se"])


def test_the_table_has_one_line_per_method_with_its_seed_count():
  rows = {
    "mlp": [comparison.run_figures(report(1, auroc_mp=a), 10, 1, 5) for a in (0.8, 0.9)],
    "ensemble/mlp": [comparison.run_figures(report(5), 50, 2, 25)],
  }
  lines = comparison.markdown(comparison.summarise(rows), ["kmnist"])
  assert lines[0].startswith("| method | n | accuracy | nll | brier | ece | auroc/kmnist |")
  assert lines[2].startswith("| mlp | 2 | 0.9800 ± 0.0000 |") and "| 0.8500 ± 0.0500 |" in lines[2]
  assert lines[3].startswith("| ensemble/mlp | 1 | 0.9800 |") and "| 0.9000 |" in lines[3]
