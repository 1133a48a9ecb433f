"""Deep ensembles' options: bootstrap resamples and randomised prior functions (issue 12).

Known answers: off (the default) the ensemble is the plain one, its loss exactly the sum of the
members' NLLs; a member with a prior function outputs g(θ, x) + β · g(φ, x), φ gets no gradient
and leaves training unchanged (checkpointed with the run, used by Run.predict); Poisson(1)
bootstrap weights have mean 1, e⁻¹ zeros, differ between members, depend on the example and not
on its batch, and weigh each member's NLL by hand.
"""

import math

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bnnjax
from bnnjax import data
from bnnjax.config import base_config, resolve
from bnnjax.methods import ensemble
from bnnjax.models import mlp
from bnnjax.task import DataInfo
from bnnjax.train import build_task
from tests.test_methods import DIGITS, digits_batch, plain_mlp, task_of


def members(tree, i):
  return jax.tree_util.tree_map(lambda a: a[i], tree)


def test_off_by_default_the_params_loss_and_predictive_are_the_plain_ensembles():
  batch = digits_batch(32)
  task = task_of("ensemble/mlp", ensemble_size=2)
  assert (
    task_of("ensemble/mlp", ensemble_size=2, bootstrap=False, prior_function_scale=0.0).trajectory is None
  )
  key = jax.random.PRNGKey(0)
  params = task.init(key, batch)
  assert task.trajectory is None and set(params) == {"mlp/~/linear_0", "mlp/~/linear_1"}

  def both(p):
    outputs = ensemble.stacked_outputs(plain_mlp().apply, p, batch["x"])
    formula = ensemble.member_nlls(outputs, batch["y"], True, 1.0).sum()
    return task.loss(p, key, batch, 0)[0], formula, task.predictor.sample(p, key, batch["x"], 5), outputs

  loss, formula, sampled, outputs = jax.jit(both)(params)
  np.testing.assert_array_equal(loss, formula)
  np.testing.assert_array_equal(sampled, outputs)


def test_prior_functions_add_beta_times_a_fixed_network_and_get_no_gradient():
  batch, beta = digits_batch(32), 2.5
  task = task_of("ensemble/mlp", ensemble_size=3, prior_function_scale=beta)
  params = task.init(jax.random.PRNGKey(0), batch)
  theta, phi = params["weights"], params["collected"]["prior"]
  w = lambda tree, i: np.asarray(tree["mlp/~/linear_0"]["w"][i])  # noqa: E731
  assert min(np.abs(w(phi, i) - w(phi, j)).max() for i in range(3) for j in range(i)) > 1e-2
  assert min(np.abs(w(phi, i) - w(theta, j)).max() for i in range(3) for j in range(3)) > 1e-2
  apply = plain_mlp().apply
  by_hand = np.stack(
    [apply(members(theta, i), batch["x"]) + beta * apply(members(phi, i), batch["x"]) for i in range(3)]
  )
  loss_and_grad = jax.value_and_grad(lambda p: task.loss(p, None, batch, 0)[0])
  sampled, (loss, grads) = jax.jit(
    lambda p: (task.predictor.sample(p, None, batch["x"], 7), loss_and_grad(p))
  )(params)
  np.testing.assert_allclose(sampled, by_hand, rtol=1e-5, atol=1e-5)
  own = [-np.mean(jax.nn.log_softmax(o)[np.arange(32), batch["y"]]) for o in by_hand]
  np.testing.assert_allclose(loss, np.sum(own), rtol=1e-5)
  assert all(np.all(g == 0) for g in jax.tree_util.tree_leaves(grads["collected"]))
  assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(grads["weights"]))


def loop_config(**model):
  config = bnnjax.base_config()
  config.data.name, config.data.seed = "digits", 2
  config.model = ml_collections.ConfigDict({"name": "ensemble/mlp", "hidden_sizes": (16,), **model})
  config.optimizer.name, config.optimizer.lr, config.optimizer.weight_decay = "adamw", 1e-2, 0.1
  config.batch_size, config.num_steps, config.eval_every = 64, 30, 30
  config.checkpoint_every, config.log_every, config.progress_bar = 30, 30, False
  return config


def test_the_loop_trains_the_members_only_and_saves_the_prior_functions_with_the_run(tmp_path):
  """Weight decay (adamw) would move any parameter the optimizer held: φ and the keys stay as drawn.
  (A resumed run replays the same weights: they are a pure function of the keys and the example,
  tested below.)"""
  config = loop_config(ensemble_size=2, prior_function_scale=1.0, bootstrap=True)
  bnnjax.fit(config, str(tmp_path))
  loaded = bnnjax.load(str(tmp_path))
  train = data.load_split(loaded.config.data, loaded.config.data.train_split)
  init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # the loop's init key
  fresh = loaded.task.init(init_rng, {"x": jnp.asarray(train["x"][:1]), "y": jnp.asarray(train["y"][:1])})
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params["collected"], fresh["collected"])
  moved = loaded.params["weights"]["mlp/~/linear_0"]["w"] - fresh["weights"]["mlp/~/linear_0"]["w"]
  assert np.abs(moved).max() > 1e-2
  # Used by Run.predict: the loaded run's predictive is θ's plus φ's.
  x = np.asarray(train["x"][:20], np.float32)
  theta, phi = loaded.params["weights"], loaded.params["collected"]["prior"]
  apply = plain_mlp().apply
  logits = [apply(members(theta, i), x) + apply(members(phi, i), x) for i in range(2)]
  expected = np.mean([jax.nn.softmax(z) for z in logits], 0)
  np.testing.assert_allclose(loaded.predict(x).probs, expected, rtol=1e-5, atol=1e-6)
  assert np.mean(np.argmax(expected, -1) == train["y"][:20]) > 0.7


def test_bootstrap_weights_are_poisson_one_per_member_and_example():
  train, _, _ = data.load_splits(loop_config().data)
  x, y = jnp.asarray(train["x"]), jnp.asarray(train["y"])  # the 1437 digits
  keys = jax.random.split(jax.random.PRNGKey(4), 4)
  weights_of = jax.jit(ensemble.bootstrap_weights)
  w = np.asarray(weights_of(keys, x, y))  # [4, 1437]
  assert w.shape == (4, len(y)) and np.all(w == np.round(w)) and w.min() == 0
  n = w.size  # Poisson(1): mean 1, variance 1; P(0) = P(1) = e⁻¹, P(2) = e⁻¹ / 2
  assert abs(w.mean() - 1) < 4 / math.sqrt(n)
  for k, p in ((0, math.exp(-1)), (1, math.exp(-1)), (2, math.exp(-1) / 2)):
    assert abs(np.mean(w == k) - p) < 4 * math.sqrt(p * (1 - p) / n), k
  assert all(np.mean(w[i] != w[j]) > 0.4 for i in range(4) for j in range(i))  # independent members
  # A pure function of the example: the same weights in any batch, at any position.
  perm = np.random.default_rng(0).permutation(len(y))[:50]
  np.testing.assert_array_equal(weights_of(keys, x[perm], y[perm]), w[:, perm])


def test_the_poisson_inverse_cdf_at_and_between_its_steps():
  """F⁻¹(u) = min{k : u < F(k)}: a draw exactly on F(k) is k + 1 (the interval [F(k−1), F(k)) is k's)."""
  cdf = np.cumsum([math.exp(-1.0) / math.factorial(j) for j in range(16)]).astype(np.float32)
  u = jnp.asarray([0.0, np.nextafter(cdf[0], 0), cdf[0], cdf[1], (cdf[1] + cdf[2]) / 2, cdf[3]], jnp.float32)
  np.testing.assert_array_equal(ensemble.poisson1_inverse_cdf(u), [0, 0, 1, 2, 2, 4])


@pytest.mark.parametrize("regression", [False, True])
def test_a_members_bootstrapped_loss_is_its_weighted_mean_nll_by_hand(regression):
  if regression:
    info, x = DataInfo((3,), 0, 6), jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    batch = {"x": x, "y": jnp.sin(x[:, :1])}
    task = task_of("ensemble/mlp", info, ensemble_size=2, bootstrap=True, noise_std=0.5)
  else:
    batch = digits_batch(6)
    task = task_of("ensemble/mlp", DIGITS, ensemble_size=2, bootstrap=True)
  params = task.init(jax.random.PRNGKey(0), batch)
  y = np.asarray(batch["y"]).reshape(6)
  keys = params["collected"]["bootstrap_keys"]
  (loss, metrics), w = jax.jit(
    lambda p: (task.loss(p, None, batch, 0), ensemble.bootstrap_weights(keys, batch["x"], batch["y"]))
  )(params)
  w = np.asarray(w)
  net = hk.without_apply_rng(hk.transform(lambda v: mlp.mlp((16,), 1 if regression else 10)(v)))
  outputs = np.stack([net.apply(members(params["weights"], i), batch["x"]) for i in range(2)])  # [2, 6, C]
  if regression:
    nll = 0.5 * ((y - outputs[..., 0]) / 0.5) ** 2 + np.log(0.5) + 0.5 * np.log(2 * np.pi)
  else:
    nll = -np.asarray(jax.nn.log_softmax(outputs))[:, np.arange(6), y]
  np.testing.assert_allclose(loss, sum(np.sum(w[m] * nll[m]) / 6 for m in range(2)), rtol=1e-5)
  np.testing.assert_allclose(metrics["nll"], nll.mean(), rtol=1e-5)


@pytest.mark.parametrize(
  "fields, match",
  [
    ({"prior_function_scale": -1.0}, "prior_function_scale must be a finite number >= 0"),
    ({"prior_function_scale": float("nan")}, "prior_function_scale must be a finite number >= 0"),
  ],
)
def test_bad_options_are_one_line_errors(fields, match):
  config = base_config()
  config.model = ml_collections.ConfigDict({"name": "ensemble/mlp", "hidden_sizes": (4,)})
  with pytest.raises(ValueError, match=match) as error:
    for key, value in fields.items():
      config.model[key] = value
    build_task(resolve(config), DIGITS)
  assert "\n" not in str(error.value)


def test_a_bootstrap_flag_that_is_not_a_bool_is_a_one_line_error():
  fields = ml_collections.ConfigDict({**ensemble.DEFAULTS, "bootstrap": 1})  # the config refuses it first
  with pytest.raises(ValueError, match="config.model.bootstrap must be True or False"):
    ensemble.validate(fields)


def test_prior_functions_refuse_the_heteroscedastic_head():
  with pytest.raises(ValueError, match="'heteroscedastic' head's std output takes no prior function"):
    task_of("ensemble/mlp", DataInfo((1,), 0, 8), likelihood="heteroscedastic", prior_function_scale=1.0)
