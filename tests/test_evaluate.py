"""bnnjax.load(workdir).evaluate(...) end to end on tiny digits runs trained by bnnjax.train.fit.

Known answers: a deterministic run's in-distribution accuracy and NLL equal what the
train loop logged on the same split; an "OOD" set that is the test set itself gives
AUROC 1/2 and rejects the same ~1% as in distribution; uniform noise images are told
apart from digits; a 28x28 OOD set for an 8x8 model is a one-line error.
"""

import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import bnnjax
from bnnjax import checkpoint, data, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 8


def evaluate(workdir, ood=(), compare=None, **kwargs):
  """What scripts/evaluate.py does: load, evaluate, write eval.json and the PNGs."""
  compare = bnnjax.load(compare) if compare else None
  return bnnjax.load(workdir).evaluate(ood, compare=compare, write=True, **kwargs)


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
  regression_dir = str(root / "regression")
  config = bnnjax.config.with_overrides(
    bnnjax.base_config(),
    {
      "data.name": "diabetes",
      "data.train_split": "train[:80%]",
      "data.validation_split": "train[80%:]",
      "model.name": "bayes_mlp",
      "model.hidden_sizes": (8,),
      "batch_size": 64,
      "num_steps": 10,
      "progress_bar": False,
    },
  )
  train.fit(config, regression_dir)
  test_x = data.load("digits", "test")["x"][..., 0]
  same = write_idx_images(root / "digits_again", np.round(test_x * 255))
  noise = write_idx_images(root / "noise", np.random.default_rng(0).integers(0, 256, (400, 8, 8)))
  return {
    "mlp": mlp_dir,
    "bayes": bayes_dir,
    "same": same,
    "noise": noise,
    "root": root,
    "regression": regression_dir,
  }


def last_test_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f]
  return [m for m in lines if "test/accuracy" in m][-1]


@pytest.mark.slow
def test_deterministic_run_matches_the_loop_and_separates_noise(runs):
  result = evaluate(runs["mlp"], [runs["same"], runs["noise"]], num_samples=K)
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
  result = evaluate(runs["bayes"], [runs["noise"]], num_samples=K, compare=runs["mlp"])
  assert result["num_samples"] == K
  assert result["in_distribution"]["accuracy"] > 0.8
  noise = result["ood"]["noise"]
  assert set(noise) == {
    "num_examples",
    "one_minus_max_prob",
    "predictive_entropy",
    "mutual_information",
    "class_std",
  }
  assert noise["mutual_information"]["auroc"] > 0.75
  assert noise["mutual_information"]["mean_out"] > noise["mutual_information"]["mean_in"] > 0.0
  baseline = result["compare"]
  assert baseline["model"] == "mlp" and baseline["num_samples"] == 1
  assert baseline["in_distribution"]["accuracy"] == pytest.approx(
    last_test_metrics(runs["mlp"])["test/accuracy"], abs=1e-9
  )
  row = result["auroc_side_by_side"]["noise"]
  assert row["mlp/softmax_entropy"] == baseline["ood"]["noise"]["softmax_entropy"]["auroc"]
  assert row["bayes_mlp/mutual_information"] == noise["mutual_information"]["auroc"]


@pytest.mark.slow
def test_ood_images_of_another_shape_are_a_one_line_error(runs):
  kmnist_like = write_idx_images(runs["root"] / "big", np.zeros((5, 28, 28)))
  with pytest.raises(ValueError, match=r"shape \(28, 28, 1\).*trained on \(8, 8, 1\)"):
    evaluate(runs["mlp"], [kmnist_like])


@pytest.mark.slow
def test_named_ood_set_of_another_shape_is_a_one_line_error(runs, shared_data_dir):
  with pytest.raises(ValueError, match=r"'kmnist' has inputs of shape \(28, 28, 1\)"):
    evaluate(runs["mlp"], ["kmnist"], data_dir=str(shared_data_dir))


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, runs):
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoints"):
    bnnjax.load(str(tmp_path))
  assert os.listdir(tmp_path) == []
  run = bnnjax.load(runs["bayes"])
  before = sorted(os.listdir(runs["bayes"]))
  with pytest.raises(ValueError, match="num_samples"):
    run.evaluate([], num_samples=0, write=True)
  with pytest.raises(ValueError, match=r"inputs of shape \(3, 28, 28, 1\).*takes \[B, 8, 8, 1\]"):
    run.predict(np.zeros((3, 28, 28, 1)))
  with pytest.raises(
    ValueError, match="sample needs a generative or density model; .bayes_mlp.* is classifier"
  ):
    run.sample(4)
  with pytest.raises(ValueError, match="ood and compare apply to classifiers"):
    bnnjax.load(runs["regression"]).evaluate(["digits"])
  assert sorted(os.listdir(runs["bayes"])) == before
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
    data.load_idx_folder(str(tmp_path), "test")


def test_a_checkpoint_of_another_model_is_a_one_line_error(runs, tmp_path):
  # The Bayesian run's checkpoint under a config.json that claims a plain MLP.
  import shutil

  fake = tmp_path / "fake"
  shutil.copytree(runs["bayes"], fake)
  meta_files = [
    os.path.join(d, f)
    for d, _, fs in os.walk(fake / "checkpoints")
    for f in fs
    if f == "metadata" and os.path.basename(d) == "meta"
  ]
  assert meta_files
  for path in meta_files:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
    meta["config"]["model"] = {"name": "mlp", "hidden_sizes": [32], "activation": "relu"}
    with open(path, "w", encoding="utf-8") as f:
      json.dump(meta, f)
  with pytest.raises(checkpoint.CheckpointError, match="holds another model: parameter"):
    bnnjax.load(str(fake))


def test_predict_is_the_predictive_that_evaluate_scores(runs):
  run = bnnjax.load(runs["bayes"])
  test = run.test_data()
  pred = run.predict(test["x"], num_samples=K, rng=0)
  assert pred.probs.shape == (359, 10) and pred.mutual_information.shape == (359,)
  np.testing.assert_allclose(pred.probs.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(
    pred.predictive_entropy - pred.expected_entropy, pred.mutual_information, atol=1e-5
  )
  accuracy = float(np.mean(pred.probs.argmax(-1) == test["y"]))
  # evaluate draws its in-distribution predictive with fold_in(PRNGKey(seed), 0).
  import jax

  same = bnnjax.evaluation.predictive.predict(
    run.task.predictor, run.params, test["x"], K, jax.random.fold_in(jax.random.PRNGKey(0), 0)
  )
  assert run.evaluate(num_samples=K)["in_distribution"]["accuracy"] == pytest.approx(
    float(np.mean(same.probs.argmax(-1) == test["y"])), abs=1e-12
  )
  assert accuracy > 0.8


def test_regression_intervals_are_calibrated_on_validation_and_scored_on_test(runs):
  """Run.evaluate's conformal intervals against q̂ and the coverage worked out from Run.predict."""
  run = bnnjax.load(runs["regression"])
  out = run.evaluate(num_samples=8, conformal_alphas=(0.1,))["regression"]
  (report,) = out["conformal"]
  val, test = run.validation_data(), run.test_data()
  val_pred = run.predict(val["x"], 8, jax.random.fold_in(jax.random.PRNGKey(0), 2))
  test_pred = run.predict(test["x"], 8, 0)
  scores = np.sort(np.abs(val["y"] - val_pred.mean) / val_pred.std)
  k = int(np.ceil((len(scores) + 1) * 0.9))  # 71 validation rows: the 65th smallest score
  assert report["calibration_examples"] == len(val["y"]) == 71 and out["validation_split"] == "train[80%:]"
  assert report["threshold"] == pytest.approx(scores[k - 1], rel=1e-5)
  inside = np.abs(test["y"] - test_pred.mean) <= scores[k - 1] * test_pred.std
  assert report["coverage"] == pytest.approx(inside.mean(), abs=1.0 / len(inside))
  assert report["mean_width"] == pytest.approx(2 * scores[k - 1] * test_pred.std.mean(), rel=1e-4)
  assert report["splits_within_held_out"]["calibration_examples"] == (71 + len(test["y"])) // 2
  assert report["splits_to_test"]["num_splits"] == 20


def test_the_in_distribution_split_is_the_one_named_test():
  for spec, split in [
    ("test", "test"),
    ("val=train[90%:],test", "test"),
    ("test=train[:10%],val=train[10%:20%]", "train[:10%]"),
    ("val=train[90%:]", "train[90%:]"),
  ]:
    config = bnnjax.base_config()
    config.data.eval_splits = spec
    assert data.test_split(config.data) == split


def test_toy_regression_is_less_sure_away_from_its_data(tmp_path):
  """The 1-D toy: epistemic std beyond the training range exceeds the std on the data."""
  config = bnnjax.config.with_overrides(
    bnnjax.base_config(),
    {
      "data.name": "toy_regression",
      "model.name": "bayes_mlp",
      "model.hidden_sizes": (32, 32),
      "model.learn_noise": True,
      "model.num_samples": 4,
      "model.init_std": 1e-2,
      "optimizer.lr": 1e-2,
      "batch_size": 50,
      "num_steps": 1000,
      # An epoch is 4 steps here: a checkpoint and an evaluation per epoch cost ten times the training.
      "eval_every": 1000,
      "checkpoint_every": 1000,
      "eval_batch_size": 500,
      "progress_bar": False,
    },
  )
  train.fit(config, str(tmp_path))
  bands = evaluate(str(tmp_path), num_samples=32)["regression"]["bands"]
  assert os.path.isfile(bands["plot"]) and os.path.isfile(bands["split_plot"])
  assert bands["epistemic_std_far_from_data"] > 2 * bands["epistemic_std_near_data"]


def test_named_ood_sets_are_found_beside_the_training_folder(tmp_path):
  # A run trained with data_dir=.../mnist looks for fashion_mnist in .../fashion-mnist.
  assert data._ood_data_dir(str(tmp_path / "mnist")) == str(tmp_path)  # pylint: disable=protected-access
  assert data._ood_data_dir(str(tmp_path / "kmnist") + "/") == str(tmp_path)  # pylint: disable=protected-access
  assert data._ood_data_dir(str(tmp_path)) == str(tmp_path)  # pylint: disable=protected-access
  assert data._ood_data_dir("") is None  # pylint: disable=protected-access


@pytest.mark.slow
def test_the_script_prints_the_runs_figures(runs):
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, "scripts", "evaluate.py"),
      f"--workdir={runs['mlp']}",
      f"--num_samples={K}",
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  with open(os.path.join(runs["mlp"], "eval.json"), encoding="utf-8") as f:
    accuracy = json.load(f)["in_distribution"]["accuracy"]
  assert f"accuracy {accuracy:.4f}" in result.stdout
  failed = subprocess.run(
    [sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), f"--workdir={runs['root'] / 'nothing'}"],
    capture_output=True,
    text=True,
  )
  assert failed.returncode == 1 and failed.stderr.strip().splitlines() == [
    f"error: no checkpoints in {runs['root'] / 'nothing'} "
    f"(looked for {runs['root'] / 'nothing' / 'checkpoints'})"
  ]
