"""Known answers for shifted images (bnnjax.datasets.shift) and shift curves (bnnjax.evaluation.shift,
Run.evaluate(shift=...)): each corruption's effect on a small image whose answer is known by hand."""

import os
import subprocess
import sys

import numpy as np
import pytest

import bnnjax
from bnnjax import metrics, train
from bnnjax.datasets import shift
from bnnjax.evaluation import shift as shift_eval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dot(size, row, col, n=1):
  x = np.zeros((n, size, size), np.float32)
  x[:, row, col] = 1.0
  return x


def _gray(n=4, size=28, value=0.5):
  return np.full((n, size, size, 1), value, np.float32)


# ---------------------------------------------------------------- geometry


def test_rotate_turns_counter_clockwise_about_the_centre():
  x = _dot(5, 2, 4)  # right of the centre (2, 2)
  np.testing.assert_allclose(shift.rotate(x, 0), x)
  np.testing.assert_allclose(shift.rotate(x, 90), _dot(5, 0, 2), atol=1e-6)  # now above it
  np.testing.assert_allclose(shift.rotate(x, 180), _dot(5, 2, 0), atol=1e-6)
  np.testing.assert_allclose(shift.rotate(x, 270), _dot(5, 4, 2), atol=1e-6)
  digit = np.random.default_rng(0).random((2, 9, 9, 1)).astype(np.float32)
  np.testing.assert_allclose(shift.rotate(digit, 180), digit[:, ::-1, ::-1], atol=1e-6)
  assert shift.ROTATION_ANGLES == tuple(range(0, 181, 15))


def test_translate_shear_and_zoom_move_pixels_where_the_formula_says():
  np.testing.assert_allclose(
    shift.translate(_dot(7, 3, 3), [[1, 2]]), _dot(7, 1, 4), atol=1e-6
  )  # right 1, up 2
  # shear s = 1: a pixel 2 rows above the centre moves 2 columns right; the centre row stays
  np.testing.assert_allclose(shift.shear(_dot(9, 2, 4), 1.0), _dot(9, 2, 6), atol=1e-6)
  np.testing.assert_allclose(shift.shear(_dot(9, 4, 1), 1.0), _dot(9, 4, 1), atol=1e-6)
  # zoom 0.5: 4 pixels right of the centre (4, 4) comes to 2 right of it; zoom 2 takes 2 to 4
  np.testing.assert_allclose(shift.zoom(_dot(9, 4, 8), 0.5)[0, 4, 6], 1.0, atol=1e-6)
  np.testing.assert_allclose(shift.zoom(_dot(9, 2, 4), 2.0)[0, 0, 4], 1.0, atol=1e-6)


def test_motion_blur_spreads_a_dot_along_a_line_keeping_its_ink():
  out = shift.motion_blur(_dot(9, 4, 4), 4.0, 0.0)  # horizontal, 5 copies one pixel apart
  np.testing.assert_allclose(out[0, 4, 2:7], 0.2, atol=1e-6)
  assert out.sum() == pytest.approx(1.0) and np.count_nonzero(out > 1e-6) == 5
  vertical = shift.motion_blur(_dot(9, 4, 4), 2.0, np.pi / 2)
  np.testing.assert_allclose(vertical[0, 3:6, 4], 1 / 3, atol=1e-6)


# ---------------------------------------------------------------- corruptions


def test_translate_corruption_moves_each_image_by_its_severity_in_pixels():
  x = _dot(21, 10, 10, n=30)
  for severity in (1, 3, 5):
    out = shift.corrupt(x, "translate", severity, seed=0)
    moved = np.stack(np.unravel_index(out.reshape(30, -1).argmax(-1), (21, 21)), -1) - 10
    assert np.allclose(out.reshape(30, -1).sum(-1), 1.0)  # whole pixels: the dot moves intact
    assert np.all(np.abs(np.linalg.norm(moved, axis=-1) - severity) <= 0.75)


def test_noise_corruptions_have_their_stated_strength():
  gray = _gray(8, 28, 0.5)
  impulse = shift.corrupt(gray, "impulse_noise", 5, seed=1)  # 27% of pixels to 0 or 1
  changed = impulse != 0.5
  assert changed.mean() == pytest.approx(0.27, abs=0.02)
  assert set(np.unique(impulse[changed])) == {0.0, 1.0} and (impulse[changed] == 1).mean() == pytest.approx(
    0.5, abs=0.05
  )
  gauss = shift.corrupt(gray, "gaussian_noise", 3, seed=1)  # sigma 0.2, clipping negligible at 0.5
  assert gauss.std() == pytest.approx(0.2, rel=0.05) and gauss.mean() == pytest.approx(0.5, abs=0.01)
  shot = shift.corrupt(gray, "shot_noise", 1, seed=1)  # Poisson(60 * 0.6) / 60 - 0.1: mean 0.5, std 0.1
  assert shot.mean() == pytest.approx(0.5, abs=0.01) and shot.std() == pytest.approx(0.1, rel=0.1)


def test_brightness_stripes_fog_and_contrast():
  zeros = np.zeros((3, 10, 10), np.float32)
  np.testing.assert_allclose(shift.corrupt(zeros, "brightness", 5), 0.45)
  np.testing.assert_allclose(shift.corrupt(np.ones((1, 4, 4)), "brightness", 2), 1.0)  # clipped
  stripes = shift.corrupt(zeros, "stripes", 4, seed=2)  # 4 distinct full columns of ones per image
  np.testing.assert_array_equal(stripes.sum(axis=1).max(axis=-1), 10)
  np.testing.assert_array_equal((stripes.sum(axis=1) == 10).sum(-1), 4)
  assert stripes.sum() == 3 * 4 * 10
  fog = shift.corrupt(zeros, "fog", 5, seed=3)  # amplitude 0.7: a field spanning [0, 0.7]
  np.testing.assert_allclose(fog.max(axis=(1, 2)), 0.7, atol=1e-6)
  np.testing.assert_allclose(fog.min(axis=(1, 2)), 0.0, atol=1e-6)
  assert np.abs(np.diff(fog, axis=2)).mean() < 0.7 / 10  # smooth: small steps between neighbours
  image = np.random.default_rng(0).random((2, 6, 6)).astype(np.float32)
  low = shift.corrupt(image, "contrast", 3)  # factor 0.3 about each image's mean
  mean = image.mean(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(low, mean + 0.3 * (image - mean), atol=1e-6)


def test_every_corruption_is_seeded_graded_and_in_range():
  small = bnnjax.data.load("digits", "test")["x"][:24, ..., 0]  # 8 x 8 -> 24 x 24 inside a 28 x 28 frame
  digits = np.pad(np.kron(small, np.ones((1, 3, 3), np.float32)), ((0, 0), (2, 2), (2, 2)))
  assert len(shift.CORRUPTIONS) >= 8
  for name in shift.CORRUPTIONS:
    changes = []
    for severity in shift.SEVERITY_LEVELS:
      out = shift.corrupt(digits, name, severity, seed=4)
      assert out.shape == digits.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
      changes.append(np.abs(out - digits).mean())
    assert all(a < b for a, b in zip(changes, changes[1:])), (name, changes)
    np.testing.assert_array_equal(
      shift.corrupt(digits, name, 3, seed=4), shift.corrupt(digits, name, 3, seed=4)
    )


def test_bad_input_is_one_line():
  x = np.zeros((1, 8, 8))
  with pytest.raises(ValueError, match="severity must be an integer in 1-5, got 6"):
    shift.corrupt(x, "fog", 6)
  with pytest.raises(ValueError, match="severity must be an integer in 1-5, got 0"):
    shift.corrupt(x, "fog", 0)
  with pytest.raises(ValueError, match="unknown corruption 'shot_nois'; did you mean 'shot_noise'"):
    shift.corrupt(x, "shot_nois", 1)
  with pytest.raises(ValueError, match=r"angle must be in \[0, 360\) degrees, got 360"):
    shift.rotate(x, 360)
  with pytest.raises(ValueError, match=r"angle must be in \[0, 360\) degrees, got -15"):
    shift.rotate(x, -15)
  with pytest.raises(ValueError, match="unknown shift 'rotation'"):
    shift.parse_family("rotation")
  with pytest.raises(ValueError, match="did you mean 'motion_blur'"):
    shift.parse_family("corrupt:motion-blur")


# ---------------------------------------------------------------- curves


def test_curve_scores_the_predictive_of_each_shifted_set():
  rng = np.random.default_rng(0)
  templates = rng.random((3, 8, 8)).astype(np.float32)
  x, labels = np.repeat(templates, 5, axis=0), np.repeat(np.arange(3), 5)

  def predict(images):  # nearest template: right on the clean images
    d = ((images.reshape(-1, 1, 8, 8) - templates[None]) ** 2).sum((-1, -2))
    probs = np.exp(-d) / np.exp(-d).sum(-1, keepdims=True)
    return probs, {"one_minus_max_prob": 1 - probs.max(-1)}

  c = shift_eval.curve(predict, x, labels, "rotate", thresholds={"one_minus_max_prob": 0.5})
  assert c["intensities"] == list(shift.ROTATION_ANGLES) and c["intensity"] == "angle"
  assert c["accuracy"][0] == 1.0
  expected = metrics.classification_metrics(predict(shift.rotate(x, 45))[0], labels)
  assert c["nll"][3] == pytest.approx(expected["nll"]) and c["ece"][3] == pytest.approx(expected["ece"])
  assert (
    len(c["aurc"]["one_minus_max_prob"]) == 13
    and len(c["rejection_rule"]["one_minus_max_prob"]["coverage"]) == 13
  )
  corrupt = shift_eval.curve(predict, x.reshape(15, 64), labels, "corrupt:fog")  # flat square inputs too
  assert corrupt["intensities"] == [0, 1, 2, 3, 4, 5] and corrupt["accuracy"][0] == 1.0


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  config = bnnjax.base_config()
  config.data.name = "digits"
  config.data.train_split, config.data.validation_split = "train[:80%]", "train[80%:]"
  config.model.name = "mlp"
  config.model.hidden_sizes = (32,)
  config.batch_size, config.optimizer.lr, config.num_steps = 64, 1e-2, 80
  config.eval_every = config.log_every = config.checkpoint_every = 80
  config.progress_bar = False
  workdir = str(tmp_path_factory.mktemp("shift") / "mlp")
  train.fit(config, workdir)
  return bnnjax.load(workdir)


def test_run_evaluate_shift_recalibrate_and_conformal(digits_run, tmp_path):
  out = digits_run.evaluate(
    shift=["rotate", "corrupt:impulse_noise"], recalibrate=True, conformal_alphas=[0.1], write=True
  )
  for png in ("selective.png", "shift_rotate.png", "shift_corrupt_impulse_noise.png"):
    assert os.path.getsize(os.path.join(digits_run.workdir, png)) > 0
  clean = out["in_distribution"]
  for family in ("rotate", "corrupt:impulse_noise"):  # intensity 0 is the clean test split itself
    assert out["shift"][family]["accuracy"][0] == clean["accuracy"]
    assert out["shift"][family]["nll"][0] == pytest.approx(clean["nll"])
  assert out["shift"]["rotate"]["accuracy"][6] < clean["accuracy"] - 0.3  # 90 degrees
  t = out["temperature_scaling"]
  assert out["validation_split"] == "train[80%:]"
  assert t["validation_examples"] == len(digits_run.validation_data()["y"]) > 250
  assert t["after"]["accuracy"] == t["before"]["accuracy"] == clean["accuracy"]
  assert [(c["alpha"], c["method"]) for c in out["conformal"]] == [(0.1, "lac"), (0.1, "aps")]
  assert out["conformal"][0]["splits_to_test"]["num_splits"] == 20
  assert (
    out["conformal"][0]["splits_within_validation"]["calibration_examples"]
    == len(digits_run.validation_data()["y"]) // 2
  )
  assert out["selective"]["one_minus_max_prob"]["aurc"] < 1 - clean["accuracy"]  # better than random
  with pytest.raises(ValueError, match="unknown shift 'rotat'"):
    digits_run.evaluate(shift=["rotat"])
  with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
    digits_run.evaluate(conformal_alphas=[1.5])


def test_cli_bad_shift_is_one_line_and_writes_nothing(digits_run):
  before = sorted(os.listdir(digits_run.workdir))
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, "scripts", "evaluate.py"),
      f"--workdir={digits_run.workdir}",
      "--shift=corrupt:fgo",
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == ("error: unknown corruption 'fgo'; did you mean 'fog'?")
  assert sorted(os.listdir(digits_run.workdir)) == before
