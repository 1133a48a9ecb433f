"""Every config file in configs/ loads, validates and builds its task; every sweep point too.

A typo'd field (config.model.prior_sclae), a value the model refuses or a sweep axis that
names a missing field fails here rather than minutes into a run.
"""

import glob
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnjax.config import load_config_file, resolve, validate, with_overrides
from bnnjax.task import DataInfo
from bnnjax.train import build_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))

# One example's shape, classes and training-set size per data set, so that no file is read.
SHAPES = {
  "mnist": ((28, 28, 1), 10, 60000),
  "fashion_mnist": ((28, 28, 1), 10, 60000),
  "digits": ((8, 8, 1), 10, 1437),
  "moons": ((2,), 0, 10000),
  "labelled_moons": ((2,), 2, 200),
  "ring": ((2,), 0, 10000),
  "diabetes": ((10,), 0, 353),
  "toy_regression": ((1,), 0, 1000),
  "heteroscedastic_toy": ((1,), 0, 1000),
  "uci": ((8,), 0, 927),  # concrete
}


def _task(config):
  config = resolve(config)
  validate(config)
  shape, num_classes, num_train = SHAPES[config.data.name]
  if config.data.flatten:
    shape = (int(np.prod(shape)),)
  return build_task(config, DataInfo(shape, num_classes, num_train, config.data.binarize == "static"))


def test_the_configs_are_all_here():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {
    "quickstart.py",
    "bayes_mnist.py",
    "bayes_mnist_tempered.py",
    "mlp_mnist.py",
    "vae_mnist.py",
    "flow_moons.py",
  } <= names


def _initial_metrics(config, task):
  """The loss and metrics of a fresh init on a batch of 8 synthetic examples of the right shape."""
  shape, num_classes, _ = SHAPES[config.data.name]
  if config.data.flatten:
    shape = (int(np.prod(shape)),)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(8, *shape)).astype(np.float32)
  if config.data.binarize == "static":
    x = (x > 0.5).astype(np.float32)
  y = rng.integers(num_classes, size=8).astype(np.int32) if num_classes else np.zeros(8, np.float32)
  if config.data.classes:  # a split task's labels only (a multi-head network has no others)
    y = rng.choice(np.asarray(config.data.classes), size=8).astype(np.int32)
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  # One compilation of init and loss together: cheaper than running either eagerly.
  fresh_loss = jax.jit(lambda b: task.loss(task.init(jax.random.PRNGKey(0), b), jax.random.PRNGKey(1), b, 0))
  loss, metrics = fresh_loss(batch)
  return float(loss), {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_its_task_with_the_initial_loss_it_should_have(path, request):
  module = load_config_file(path)
  config = resolve(module.get_config())
  if config.data.name == "uci":  # validation reads the split's files
    request.getfixturevalue("uci_data_dir")
  task = _task(config)
  loss, metrics = _initial_metrics(config, task)
  assert np.isfinite(loss) and all(np.isfinite(v) for v in metrics.values()), metrics
  _, num_classes, _ = SHAPES[config.data.name]
  if task.predictor is not None and num_classes:
    # A fresh classifier is close to uniform: NLL about log C (1.1 nats of slack for its
    # random logits; a loss of the probabilities or of the wrong label would miss it).
    assert abs(metrics["nll"] - np.log(len(config.data.classes) or num_classes)) < 0.6, metrics
  if task.generative is not None and task.generative.variational:
    # Bernoulli logits near 0 at init: log p(x | z) about -D log 2 nats per example.
    dim = int(np.prod(SHAPES[config.data.name][0]))
    assert metrics["reconstruction"] == pytest.approx(-dim * np.log(2), rel=0.1), metrics
  for point in getattr(module, "get_sweep", lambda: [])():
    _task(with_overrides(module.get_config(), point))


def test_a_misspelt_model_field_is_an_error():
  config = load_config_file(os.path.join(REPO, "configs", "bayes_mnist.py")).get_config()
  config.model.prior_sclae = 0.5
  with pytest.raises(
    ValueError, match=r"^config.model has no field 'prior_sclae'; did you mean 'prior_scale'\?$"
  ):
    _task(config)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("num_step", 5, "config has no field 'num_step'; did you mean 'num_steps'?"),
    ("data.nmae", "digits", "config.data has no field 'nmae'; did you mean 'name'?"),
    ("model.prior_scael", 2.0, "config.model has no field 'prior_scael'; did you mean 'prior_scale'?"),
    ("model.hidden_sizes", "big", "config.model.hidden_sizes must be a tuple"),
  ],
)
def test_fit_refuses_an_unknown_field_before_writing_anything(tmp_path, field, value, message):
  import bnnjax  # pylint: disable=import-outside-toplevel

  config = bnnjax.base_config()
  config.model.name = "bayes_mlp"
  *parents, leaf = field.split(".")
  node = config
  for key in parents:
    node = node[key]
  node[leaf] = value  # a plain ConfigDict takes new fields: fit must refuse them
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match="^" + re.escape(message)):
    bnnjax.fit(config, str(workdir))
  assert not workdir.exists()
