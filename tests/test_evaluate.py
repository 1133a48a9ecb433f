"""scripts/evaluate.py end to end on tiny digits runs trained by bnnjax.train.fit.

Known answers: a deterministic run's in-distribution accuracy and NLL equal what the
train loop logged on the same split; an "OOD" set that is the test set itself gives
AUROC 1/2 and rejects the same ~1% as in distribution; uniform noise images are told
apart from digits; a 28x28 OOD set for an 8x8 model is a one-line error.
"""
import gzip
import importlib.util
import json
import os

import numpy as np
import pytest

import bnnjax
from bnnjax import data, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("evaluate_script", os.path.join(REPO, "scripts", "evaluate.py"))
evaluate_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate_script)

K = 8


def write_idx_images(folder, images_uint8):
  """An MNIST-format t10k images file (gzip IDX, unsigned bytes) in `folder`."""
  os.makedirs(folder, exist_ok=True)
  header = (0x803).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in images_uint8.shape)
  with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "wb") as f:
    f.write(header + images_uint8.astype(np.uint8).tobytes())
  return str(folder)


def digits_config(model_name, **model_fields):
  config = bnnjax.base_config()
  config.data.name = "digits"
  config.model.name = model_name
  config.model.hidden_sizes = (32,)
  for key, value in model_fields.items():
    config.model[key] = value
  config.batch_size = 64
  config.optimizer.lr = 1e-2
  config.num_steps = 100
  config.eval_every = 100
  config.log_every = 100
  config.checkpoint_every = 100
  config.eval_batch_size = 500
  config.progress_bar = False
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Trained deterministic and Bayesian runs, and OOD folders: the test set itself and noise."""
  root = tmp_path_factory.mktemp("eval")
  mlp_dir, bayes_dir = str(root / "mlp"), str(root / "bayes")
  train.fit(digits_config("mlp"), mlp_dir)
  train.fit(digits_config("bayes_mlp", init_std=1e-2, eval_samples=K), bayes_dir)
  test_x = data.load("digits", "test")["x"][..., 0]
  same = write_idx_images(root / "digits_again", np.round(test_x * 255))
  noise = write_idx_images(root / "noise", np.random.default_rng(0).integers(0, 256, (400, 8, 8)))
  return {"mlp": mlp_dir, "bayes": bayes_dir, "same": same, "noise": noise, "root": root}


def last_test_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f]
  return [m for m in lines if "test/accuracy" in m][-1]


@pytest.mark.slow
def test_deterministic_run_matches_the_loop_and_separates_noise(runs):
  result = evaluate_script.evaluate(runs["mlp"], [runs["same"], runs["noise"]], num_samples=K)
  with open(os.path.join(runs["mlp"], "eval.json"), encoding="utf-8") as f:
    assert json.load(f) == result
  assert result["num_samples"] == 1  # a point estimate draws one sample whatever K asks
  logged = last_test_metrics(runs["mlp"])
  assert result["in_distribution"]["accuracy"] == pytest.approx(logged["test/accuracy"], abs=1e-9)
  assert result["in_distribution"]["nll"] == pytest.approx(logged["test/nll"], rel=1e-5)
  assert 0.0 <= result["in_distribution"]["ece"] <= 1.0
  assert 0.0 <= result["in_distribution"]["brier"] <= 2.0
  assert sum(result["reliability"]["count"]) == result["num_examples"] == 359

  same = result["ood"]["digits_again"]
  assert set(same) == {"num_examples", "one_minus_max_prob", "softmax_entropy"}
  for score in ("one_minus_max_prob", "softmax_entropy"):
    # The test set against itself (pixels rounded to bytes): indistinguishable.
    assert same[score]["auroc"] == pytest.approx(0.5, abs=0.02)
    assert same[score]["rejected_in"] == pytest.approx(0.01, abs=0.004)  # 4 of 359 above the 99th pct
    assert same[score]["rejected_out"] == pytest.approx(same[score]["rejected_in"], abs=0.01)
    noise = result["ood"]["noise"][score]
    assert noise["auroc"] > 0.65  # a point estimate is often confident on noise; a sign bug gives < 0.5
    assert 0.0 <= noise["fpr95"] <= 1.0 and noise["mean_out"] > noise["mean_in"]
  for name in ("reliability.png", "ood_digits_again.png", "ood_noise.png"):
    assert os.path.getsize(os.path.join(runs["mlp"], name)) > 1000


@pytest.mark.slow
def test_bayesian_run_reports_sample_scores_and_compares_with_the_baseline(runs):
  result = evaluate_script.evaluate(runs["bayes"], [runs["noise"]], num_samples=K, compare=runs["mlp"])
  assert result["num_samples"] == K
  assert result["in_distribution"]["accuracy"] > 0.8
  noise = result["ood"]["noise"]
  assert set(noise) == {"num_examples", "one_minus_max_prob", "predictive_entropy",
                        "mutual_information", "class_std"}
  assert noise["mutual_information"]["auroc"] > 0.75
  assert noise["mutual_information"]["mean_out"] > noise["mutual_information"]["mean_in"] > 0.0
  baseline = result["compare"]
  assert baseline["model"] == "mlp" and baseline["num_samples"] == 1
  assert baseline["in_distribution"]["accuracy"] == pytest.approx(
      last_test_metrics(runs["mlp"])["test/accuracy"], abs=1e-9)
  row = result["auroc_side_by_side"]["noise"]
  assert row["mlp/softmax_entropy"] == baseline["ood"]["noise"]["softmax_entropy"]["auroc"]
  assert row["bayes_mlp/mutual_information"] == noise["mutual_information"]["auroc"]


@pytest.mark.slow
def test_ood_images_of_another_shape_are_a_one_line_error(runs):
  kmnist_like = write_idx_images(runs["root"] / "big", np.zeros((5, 28, 28)))
  with pytest.raises(ValueError, match=r"shape \(28, 28, 1\).*trained on \(8, 8, 1\)"):
    evaluate_script.evaluate(runs["mlp"], [kmnist_like])


@pytest.mark.slow
def test_named_ood_set_of_another_shape_is_a_one_line_error(runs, shared_data_dir):
  with pytest.raises(ValueError, match=r"'kmnist' has images of shape \(28, 28, 1\)"):
    evaluate_script.evaluate(runs["mlp"], ["kmnist"], data_dir=str(shared_data_dir))


def test_bad_inputs_fail_before_anything_loads(tmp_path):
  with pytest.raises(ValueError, match="num_samples"):
    evaluate_script.evaluate(str(tmp_path), [], num_samples=0)
  with pytest.raises(ValueError, match="no checkpoints"):
    evaluate_script.evaluate(str(tmp_path), [])
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
    data.load_idx_folder(str(tmp_path), "test")


def test_the_in_distribution_split_is_the_one_named_test():
  assert evaluate_script.test_split("test") == "test"
  assert evaluate_script.test_split("val=train[90%:],test") == "test"
  assert evaluate_script.test_split("test=train[:10%],val=train[10%:20%]") == "train[:10%]"
  assert evaluate_script.test_split("val=train[90%:]") == "train[90%:]"


def test_toy_regression_is_less_sure_away_from_its_data(tmp_path):
  """The 1-D toy: epistemic std beyond the training range exceeds the std on the data."""
  config = bnnjax.config.with_overrides(bnnjax.base_config(), {
      "data.name": "toy_regression", "model.name": "bayes_mlp", "model.hidden_sizes": (32, 32),
      "model.learn_noise": True, "model.num_samples": 4, "model.init_std": 1e-2,
      "optimizer.lr": 1e-2, "batch_size": 50, "num_steps": 1000, "eval_batch_size": 500,
      "progress_bar": False})
  train.fit(config, str(tmp_path))
  bands = evaluate_script.evaluate(str(tmp_path), num_samples=32)["regression"]["bands"]
  assert os.path.isfile(bands["plot"])
  assert bands["epistemic_std_far_from_data"] > 2 * bands["epistemic_std_near_data"]


def test_named_ood_sets_are_found_beside_the_training_folder(tmp_path):
  # A run trained with data_dir=.../mnist looks for fashion_mnist in .../fashion-mnist.
  assert evaluate_script.ood_data_dir(str(tmp_path / "mnist")) == str(tmp_path)
  assert evaluate_script.ood_data_dir(str(tmp_path / "kmnist") + "/") == str(tmp_path)
  assert evaluate_script.ood_data_dir(str(tmp_path)) == str(tmp_path)
  assert evaluate_script.ood_data_dir("") is None
