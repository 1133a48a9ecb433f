"""Methods that gather from the optimiser's path, through the train loop: SG-MCMC samples the
exact posterior of a conjugate problem; SWAG's weights follow SGD exactly and resume exactly."""

import haiku as hk
import jax
import numpy as np
import pytest

import bnnjax
from bnnjax import data, models
from bnnjax.task import Network


@pytest.fixture(scope="module", autouse=True)
def linear_network():
  """y = w x + b: with a Gaussian likelihood and prior, a conjugate model."""
  if "linear" not in models.NETWORKS:
    models.register(Network("linear", lambda: {}, lambda m, info, n: lambda x: hk.Linear(n)(x)))


def exact_posterior(x, y, noise_std, prior_std):
  """Mean and covariance of (w, b) given the training rows."""
  design = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float64)
  precision = design.T @ design / noise_std**2 + np.eye(2) / prior_std**2
  cov = np.linalg.inv(precision)
  return cov @ design.T @ y.astype(np.float64) / noise_std**2, cov


def test_sgld_through_the_loop_samples_the_conjugate_posterior_of_the_toy_line(tmp_path):
  config = bnnjax.base_config()
  config.data.name = "toy_regression"
  config.model = bnnjax.models.get("sgmcmc/linear").default_config()
  m = config.model
  m.sampler, m.schedule, m.step_size, m.prior_std = "sgld", "constant", 1e-4, 10.0
  m.noise_std, m.num_cycles, m.exploration, m.samples_per_cycle = data.TOY_NOISE_STD, 1, 0.2, 200
  config.batch_size, config.num_steps, config.steps_per_call = 200, 25000, 500
  config.eval_every = config.checkpoint_every = config.log_every = 25000
  config.progress_bar = False
  run = bnnjax.fit(config, str(tmp_path / "sgld"))
  train = data.load_split(config.data, "train")
  mean, cov = exact_posterior(train["x"], train["y"], m.noise_std, m.prior_std)
  collected = run.params["collected"]
  assert int(collected["count"]) == 200
  samples = np.stack(
    [collected["samples"]["linear"]["w"][:, 0, 0], collected["samples"]["linear"]["b"][:, 0]], 1
  ).astype(np.float64)
  sd = np.sqrt(np.diag(cov))
  assert np.all(np.abs(samples.mean(0) - mean) < 0.5 * sd), (samples.mean(0), mean, sd)
  ratio = samples.var(0) / np.diag(cov)
  assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio  # a wrong N or noise scale is off by orders


def digits_config(name, workdir_from=""):
  config = bnnjax.base_config()
  config.data.name = "digits"
  config.model = bnnjax.models.get(name).default_config()
  config.model.hidden_sizes = (32,)
  config.model.init_from = workdir_from
  config.optimizer.name, config.optimizer.lr, config.optimizer.momentum = "sgd", 0.05, 0.9
  config.batch_size, config.num_steps = 64, 100
  config.eval_every = config.checkpoint_every = 100
  config.log_every = 50
  config.progress_bar = False
  return config


def test_swag_continues_sgd_exactly_collects_its_snapshots_and_resumes_bit_identically(tmp_path):
  pretrained = bnnjax.fit(digits_config("mlp"), str(tmp_path / "map"))
  config = digits_config("swag/mlp", pretrained.workdir)
  config.model.rank, config.model.collect_every, config.model.eval_samples = 4, 10, 4
  swag = bnnjax.fit(config, str(tmp_path / "swag"))
  continued = bnnjax.fit(digits_config("point/mlp", pretrained.workdir), str(tmp_path / "sgd"))
  same = jax.tree_util.tree_map(np.array_equal, swag.params["weights"], continued.params)
  assert all(jax.tree_util.tree_leaves(same))  # SWAG's weights are plain SGD's

  assert int(swag.params["collected"]["count"]) == 10
  resumed_dir = str(tmp_path / "resumed")
  bnnjax.fit(config, resumed_dir, stop_after=50)
  resumed = bnnjax.fit(config, resumed_dir)
  same = jax.tree_util.tree_map(np.array_equal, resumed.params, swag.params)
  assert all(jax.tree_util.tree_leaves(same))

  accuracy = swag.evaluate(num_samples=8)["in_distribution"]["accuracy"]
  assert accuracy > pretrained.evaluate()["in_distribution"]["accuracy"] - 0.03
