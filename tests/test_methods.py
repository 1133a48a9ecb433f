"""Inference methods beyond mean-field VI: deep ensembles, MC dropout, NUTS, Laplace.

Known answers: an ensemble's predictive is the mean of its members' softmaxes and an ensemble
of one is the point estimate; dropout at rate 0 is the deterministic network and inverted
dropout keeps activations' means; on Bayesian linear regression (correlated features,
Gaussian prior, known noise) NUTS recovers the exact posterior mean and full covariance within
Monte Carlo error, and the Laplace posterior equals it (the log posterior is quadratic).
"""

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import bnnjax
from bnnjax import data
from bnnjax.config import base_config, resolve
from bnnjax.models import mlp
from bnnjax.task import DataInfo
from bnnjax.train import build_task

DIGITS = DataInfo((64,), 10, 1437)


def task_of(name, info=DIGITS, **model):
  config = base_config()
  config.model = ml_collections.ConfigDict({"name": name, "hidden_sizes": (16,), **model})
  return build_task(resolve(config), info)


def digits_config(name, **model):
  config = bnnjax.base_config()
  config.data.name, config.data.seed = "digits", 2
  config.model = ml_collections.ConfigDict({"name": name, "hidden_sizes": (32,), **model})
  config.optimizer.lr = 1e-2
  config.batch_size, config.num_steps, config.eval_every = 64, 200, 200
  config.checkpoint_every, config.log_every, config.progress_bar = 200, 200, False
  return config


def digits_batch(n=128):
  train, _, _ = data.load_splits(digits_config("mlp").data)
  x = np.asarray(train["x"][:n], np.float32).reshape(n, -1)
  return {"x": jnp.asarray(x), "y": jnp.asarray(train["y"][:n])}


def adam_fit(task, batch, num_steps=60, lr=3e-3, seed=0):
  """Full-batch Adam on task.loss, one jit: the params after num_steps."""
  params = task.init(jax.random.PRNGKey(seed), batch)
  optimizer = optax.adam(lr)

  def step(carry, i):
    params, state = carry
    grads = jax.grad(lambda p: task.loss(p, jax.random.PRNGKey(i), batch, i)[0])(params)
    updates, state = optimizer.update(grads, state)
    return (optax.apply_updates(params, updates), state), None

  run = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), jnp.arange(num_steps))[0][0])
  return run(params)


def plain_mlp(hidden=(16,)):
  return hk.without_apply_rng(hk.transform(lambda x: mlp.mlp(hidden, 10)(x)))


# ---------------------------------------------------------------- deep ensembles


def test_ensemble_members_differ_and_the_predictive_is_the_mean_of_their_softmaxes():
  batch = digits_batch(128)
  task = task_of("ensemble/mlp", ensemble_size=3)
  fresh = task.init(jax.random.PRNGKey(0), batch)
  trained = adam_fit(task, batch, num_steps=20)
  for params in (fresh, trained):
    w = np.asarray(params["mlp/~/linear_0"]["w"])
    assert w.shape == (3, 64, 16)
    assert min(np.abs(w[i] - w[j]).max() for i in range(3) for j in range(i)) > 1e-2
  by_hand = [
    plain_mlp().apply(jax.tree_util.tree_map(lambda a, i=i: a[i], trained), batch["x"]) for i in range(3)
  ]
  logits = jax.jit(task.predictor.sample, static_argnums=3)(trained, jax.random.PRNGKey(1), batch["x"], 100)
  assert logits.shape == (3, 128, 10)  # K = M whatever is asked
  np.testing.assert_allclose(logits, np.stack(by_hand), rtol=1e-5, atol=1e-5)
  expected = np.mean([jax.nn.softmax(member) for member in by_hand], 0)
  metrics = jax.jit(task.evaluate)(trained, jax.random.PRNGKey(2), batch)
  np.testing.assert_allclose(
    metrics["nll"], -np.mean(np.log(expected[np.arange(128), batch["y"]])), rtol=1e-5
  )
  # Each member's gradient is its own: the loss is the sum of the members' NLLs.
  loss, metrics = jax.jit(task.loss)(trained, jax.random.PRNGKey(3), batch, 0)
  own = [-np.mean(jax.nn.log_softmax(member)[np.arange(128), batch["y"]]) for member in by_hand]
  np.testing.assert_allclose(loss, np.sum(own), rtol=1e-5)
  np.testing.assert_allclose(metrics["nll"], np.mean(own), rtol=1e-5)


def test_an_ensemble_of_one_is_the_point_estimate_and_laplace_fits_around_it():
  batch = digits_batch(128)
  point = adam_fit(task_of("point/mlp"), batch, num_steps=20)
  single = adam_fit(task_of("ensemble/mlp", ensemble_size=1), batch, num_steps=20)
  for layer in point:
    np.testing.assert_allclose(single[layer]["w"][0], point[layer]["w"], atol=1e-5)
  # The same point estimate, as a Run, with a last-layer Laplace posterior fitted on digits.
  from bnnjax.methods import laplace  # pylint: disable=import-outside-toplevel

  config = resolve(digits_config("mlp", hidden_sizes=(16,)))
  _, _, info = data.load_splits(config.data)
  run = bnnjax.Run("unsaved", config, point, info, build_task(config, info))
  fitted = laplace.fit_run(run)  # prior precision by the marginal likelihood
  report = fitted.evaluate(num_samples=8)
  assert report["model"] == "laplace/mlp" and report["num_samples"] == 8
  assert float(fitted.params.prior_precision) > 0 and fitted.params.precision.shape == (170, 170)
  assert report["in_distribution"]["accuracy"] == pytest.approx(
    run.evaluate()["in_distribution"]["accuracy"], abs=0.03
  )


def test_ensemble_fits_loads_and_evaluates_on_digits(tmp_path):
  run = bnnjax.fit(digits_config("ensemble/mlp", ensemble_size=3), str(tmp_path))
  report = bnnjax.load(str(tmp_path)).evaluate(num_samples=8)
  assert report["num_samples"] == 3
  assert report["in_distribution"]["accuracy"] > 0.9, report["in_distribution"]
  assert run.predict(run.test_data()["x"][:5]).mutual_information.max() > 0
  w = np.asarray(run.params["mlp/~/linear_1"]["w"])  # [M, 32, 10], after 200 loop steps
  assert min(np.abs(w[i] - w[j]).max() for i in range(3) for j in range(i)) > 1e-2


@pytest.mark.parametrize("name", ["ensemble/mlp", "dropout/mlp"])
def test_ensemble_and_dropout_regressors_give_k_gaussian_outputs(name):
  info = DataInfo((1,), 0, 32)
  x = jnp.linspace(-1, 1, 32)[:, None]
  batch = {"x": x, "y": jnp.sin(3 * x)}  # [B, 1] targets, as the regression sets give them
  fields = {"ensemble_size": 2} if name.startswith("ensemble") else {"dropout_rate": 0.5}
  task = task_of(name, info, noise_std=0.3, **fields)
  key = jax.random.PRNGKey(0)
  (means, stds), (loss, _), metrics = jax.jit(
    lambda b: (  # one compilation for the three
      task.predictor.sample(task.init(key, b), key, b["x"], 4),
      task.loss(task.init(key, b), key, b, 0),
      task.evaluate(task.init(key, b), key, b),
    )
  )(batch)
  assert means.shape == stds.shape == ((2 if name.startswith("ensemble") else 4), 32)
  np.testing.assert_allclose(stds, 0.3)
  assert np.isfinite(loss) and set(metrics) >= {"rmse", "nll", "coverage_95"}


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_a_bad_ensemble_size_is_a_one_line_error(size):
  with pytest.raises(ValueError, match="config.model.ensemble_size must be"):
    task_of("ensemble/mlp", ensemble_size=size)


# ---------------------------------------------------------------- MC dropout


def test_dropout_at_rate_zero_is_the_deterministic_network():
  batch = digits_batch(32)
  task = task_of("dropout/mlp", dropout_rate=0.0)
  params = task.init(jax.random.PRNGKey(0), batch)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
    plain_mlp().init(jax.random.PRNGKey(0), batch["x"])
  )
  logits = task.predictor.sample(params, jax.random.PRNGKey(1), batch["x"], 3)
  exact = plain_mlp().apply(params, batch["x"])
  np.testing.assert_array_equal(logits, np.broadcast_to(exact, logits.shape))


def test_dropout_keeps_the_mean_of_the_dropped_activations_and_samples_differ():
  from bnnjax.methods import dropout  # pylint: disable=import-outside-toplevel

  p, n = 0.3, 50_000
  x = jnp.linspace(0.5, 1.5, n)
  dropped = np.asarray(jax.jit(dropout.inverted_dropout, static_argnums=1)(jax.random.PRNGKey(0), p, x))
  assert np.mean(dropped == 0) == pytest.approx(p, abs=5 * np.sqrt(p * (1 - p) / n))
  kept = dropped != 0
  np.testing.assert_allclose(dropped[kept], np.asarray(x)[kept] / (1 - p), rtol=1e-6)
  # E[x̃] = x: the mean over units within 5 Monte Carlo standard errors.
  standard_error = np.std(dropped - np.asarray(x)) / np.sqrt(n)
  assert abs(np.mean(dropped) - np.mean(np.asarray(x))) < 5 * standard_error
  # Through a network: the first layer's input (the data) is never dropped; the second
  # layer's is, so a linear second layer's output has the deterministic output as its mean.
  forward = lambda x: hk.Linear(1, name="second")(jax.nn.relu(hk.Linear(64, name="first")(x)))
  net = dropout.dropout_transform(forward, p)
  params = jax.jit(net.init)(jax.random.PRNGKey(1), batch := jnp.ones((2, 8)))
  outputs = jax.jit(lambda p, k: dropout.sample_outputs(net, p, k, batch, 2000))(
    params, jax.random.PRNGKey(2)
  )[:, 0, 0]
  exact = jax.jit(hk.transform(forward).apply)(params, None, batch)[0, 0]
  assert float(jnp.std(outputs)) > 0
  assert abs(float(outputs.mean() - exact)) < 5 * float(outputs.std()) / np.sqrt(2000)


def test_dropout_fits_loads_and_evaluates_on_digits(tmp_path):
  bnnjax.fit(digits_config("dropout/mlp", dropout_rate=0.2, eval_samples=8), str(tmp_path))
  run = bnnjax.load(str(tmp_path))
  report = run.evaluate(num_samples=8)
  assert report["num_samples"] == 8
  assert report["in_distribution"]["accuracy"] > 0.9, report["in_distribution"]
  x = run.inputs(run.test_data()["x"][:4])
  logits = run.task.predictor.sample(run.params, jax.random.PRNGKey(0), x, 2)
  assert float(jnp.abs(logits[0] - logits[1]).max()) > 0


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_a_bad_dropout_rate_is_a_one_line_error(rate):
  with pytest.raises(ValueError, match=r"config.model.dropout_rate must lie in \[0, 1\)"):
    task_of("dropout/mlp", dropout_rate=rate)


# ---------------------------------------------------------------- exact posterior, NUTS


def conjugate_problem(n=20, noise_std=0.5, prior_scale=1.0):
  """Bayesian linear regression y = x w + b + noise, correlated features, w, b ~ N(0, s² I):
  (x, y, exact posterior mean [4], exact posterior covariance [4, 4]) of (w, b)."""
  rng = np.random.default_rng(0)
  correlation = np.array([[1.0, 0.9, 0.5], [0.9, 1.0, 0.7], [0.5, 0.7, 1.0]])
  x = (rng.normal(size=(n, 3)) @ np.linalg.cholesky(correlation).T).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + noise_std * rng.normal(size=n)).astype(np.float32)
  features = np.concatenate([x, np.ones((n, 1))], 1).astype(np.float64)
  precision = features.T @ features / noise_std**2 + np.eye(4) / prior_scale**2
  cov = np.linalg.inv(precision)
  return x, y, cov @ features.T @ y / noise_std**2, cov


def linear(x):
  return hk.Linear(1, name="linear")(x)


def test_nuts_recovers_the_exact_posterior_mean_and_full_covariance():
  from blackjax.diagnostics import effective_sample_size  # pylint: disable=import-outside-toplevel
  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel

  x, y, mean, cov = conjugate_problem()
  result = hmc.network_posterior(
    linear,
    DataInfo((3,), 0, len(x)),
    x,
    y,
    jax.random.PRNGKey(0),
    prior_scale=1.0,
    noise_std=0.5,
    num_chains=2,
    num_samples=500,
    num_warmup=200,
    dense_mass=True,
  )
  draws = result.samples["linear"]
  theta = np.concatenate([np.asarray(draws["w"])[..., 0], np.asarray(draws["b"])], -1)  # [2, 500, 4]
  assert max(float(r.max()) for r in jax.tree_util.tree_leaves(result.rhat)) < 1.05
  assert min(float(e.min()) for e in jax.tree_util.tree_leaves(result.ess)) > 100
  assert int(result.divergences.sum()) == 0
  # Monte Carlo standard errors from the effective sample size of each statistic.
  ess = np.asarray(effective_sample_size(theta))
  mean_z = (theta.mean((0, 1)) - mean) / np.sqrt(np.diag(cov) / ess)
  centred = theta - theta.mean((0, 1))
  products = (centred[..., :, None] * centred[..., None, :]).reshape(2, 500, 16)
  products_ess = np.asarray(effective_sample_size(products))
  cov_z = (products.mean((0, 1)) - cov.ravel()) / (products.std((0, 1)) / np.sqrt(products_ess))
  assert np.abs(mean_z).max() < 3, mean_z  # reached: 2.6 (4 chains x 4000 draws: 1.5)
  assert np.abs(cov_z).max() < 3, cov_z.reshape(4, 4)  # reached: 2.1 (4 x 4000: 1.2)
  # The test has power: the posterior correlation of w_0 and w_1 (-0.9) is tens of standard
  # errors from 0, so a diagonal (mean-field) answer would fail it.
  assert abs(products.mean((0, 1))[1] / (products.std((0, 1))[1] / np.sqrt(products_ess[1]))) > 10
  # The predictive of the samples: K = S draws, mean x · E[w] + E[b].
  samples = hmc.stack_chains(result.samples)
  predictor = hmc.predictor(linear, DataInfo((3,), 0, len(x)), noise_std=0.5)
  means, stds = predictor.sample(samples, jax.random.PRNGKey(0), jnp.asarray(x[:4]), 8)
  assert means.shape == stds.shape == (1000, 4)
  np.testing.assert_allclose(
    means.mean(0), x[:4] @ theta.mean((0, 1))[:3] + theta.mean((0, 1))[3], rtol=1e-4, atol=1e-4
  )


def test_nuts_refuses_a_data_set_too_large_and_a_non_finite_density():
  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel

  big = np.zeros((hmc.FULL_BATCH_LIMIT + 1, 3), np.float32)
  with pytest.raises(ValueError, match="HMC/NUTS runs full batch: 10001 training examples exceed"):
    hmc.network_posterior(linear, DataInfo((3,), 0, len(big)), big, big[:, 0], jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="log_prob at the initial position is not finite"):
    hmc.nuts_posterior(lambda w: jnp.sum(jnp.log(-w)), jnp.ones(2), jax.random.PRNGKey(0))
  top1, tv = hmc.agreement(jnp.array([[0.9, 0.1], [0.4, 0.6]]), jnp.array([[0.7, 0.3], [0.6, 0.4]]))
  np.testing.assert_allclose([top1, tv], [0.5, 0.2], rtol=1e-6)
  with pytest.raises(ValueError, match="num_chains must be an integer >= 2"):
    hmc.nuts_posterior(lambda w: -jnp.sum(w**2), jnp.ones(2), jax.random.PRNGKey(0), num_chains=1)


def test_a_sampled_noise_std_adds_its_gamma_prior_in_log_sigma():
  """With noise_prior (a, b) the position is (params, log σ) and the density gains the Gamma(a,
  rate b) log density of the precision τ = σ⁻² and the change of variables' log 2τ."""
  from scipy import stats  # pylint: disable=import-outside-toplevel

  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel

  x, y, _, _ = conjugate_problem()
  info = DataInfo((3,), 0, len(x))
  net = hk.without_apply_rng(hk.transform(linear))
  params = net.init(jax.random.PRNGKey(1), x[:1])
  log_std, sigma = -0.7, np.exp(-0.7)
  tau = sigma**-2.0
  f = np.asarray(net.apply(params, x))[:, 0]
  weights = sum(stats.norm.logpdf(np.asarray(w), 0.0, 2.0).sum() for w in jax.tree_util.tree_leaves(params))
  likelihood = stats.norm.logpdf(y, f, sigma).sum()
  noise = stats.gamma.logpdf(tau, 3.0, scale=1 / 0.5) + np.log(2 * tau)
  sampled = hmc.network_log_posterior(linear, info, x, y, prior_scale=2.0, noise_prior=(3.0, 0.5))
  assert float(jax.jit(sampled)((params, jnp.float32(log_std)))) == pytest.approx(
    likelihood + weights + noise, rel=1e-5
  )
  fixed = hmc.network_log_posterior(linear, info, x, y, prior_scale=2.0, noise_std=sigma)
  assert float(jax.jit(fixed)(params)) == pytest.approx(likelihood + weights, rel=1e-5)
  with pytest.raises(ValueError, match=r"noise_prior \(a, b\) needs a regressor and a, b > 0"):
    hmc.network_log_posterior(linear, info, x, y, noise_prior=(3.0, 0.0))


def test_find_map_climbs_to_the_mode():
  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel

  mode = {"a": jnp.array([3.0, -1.0]), "b": jnp.float32(0.5)}
  scales = {"a": jnp.array([1.0, 0.1]), "b": jnp.float32(10.0)}  # Adam is scale free: all reached
  log_prob = lambda p: -0.5 * sum(jnp.sum(((p[k] - mode[k]) / scales[k]) ** 2) for k in mode)
  start = {"a": jnp.zeros(2), "b": jnp.float32(0.0)}
  found = hmc.find_map(log_prob, start, 2000, learning_rate=0.05)
  np.testing.assert_allclose(found["a"], mode["a"], atol=1e-2)
  np.testing.assert_allclose(found["b"], mode["b"], atol=1e-2)


# ---------------------------------------------------------------- last-layer Laplace


def test_laplace_of_a_linear_model_is_the_exact_conjugate_posterior():
  from bnnjax.methods import laplace  # pylint: disable=import-outside-toplevel

  x, y, mean, cov = conjugate_problem()
  info = DataInfo((3,), 0, len(x))
  # At the MAP (= the exact posterior mean) the log posterior is quadratic: Λ is exact.
  params = {
    "linear": {"w": jnp.asarray(mean[:3, None], jnp.float32), "b": jnp.asarray(mean[3:], jnp.float32)}
  }
  posterior = laplace.fit(
    linear, params, x, y, info, prior_precision=1.0, noise_std=0.5, batch_size=8
  )  # 20 rows in batches of 8: the padded last one masked
  order = [3, 0, 1, 2]  # ravel_pytree's order: b, then w
  np.testing.assert_allclose(
    np.linalg.inv(np.asarray(posterior.precision, np.float64)),
    cov[np.ix_(order, order)],
    rtol=1e-4,
    atol=1e-7,
  )
  means, stds = laplace.predictor(linear, info, 0.5).sample(
    posterior, jax.random.PRNGKey(0), jnp.asarray(x[:3]), 20000
  )
  features = np.concatenate([x[:3], np.ones((3, 1))], 1)
  np.testing.assert_allclose(
    np.var(np.asarray(means), 0), np.einsum("bp,pq,bq->b", features, cov, features), rtol=0.05
  )
  assert float(stds[0, 0]) == 0.5
  # The closed form: the exact Gaussian predictive N(f*, noise² + fᵀ Σ f), K = 1.
  means, stds = jax.jit(
    lambda p, x: laplace.predictor(linear, info, 0.5, "closed_form").sample(p, None, x, 8)
  )(posterior, jnp.asarray(x[:3]))
  np.testing.assert_allclose(means[0], features @ mean, rtol=1e-5)
  np.testing.assert_allclose(
    stds[0] ** 2, 0.25 + np.einsum("bp,pq,bq->b", features, cov, features), rtol=1e-4
  )


def test_laplace_last_layer_ggn_is_the_hessian_of_the_nll_and_needs_a_dense_last_layer():
  from bnnjax.methods import laplace  # pylint: disable=import-outside-toplevel

  batch = digits_batch(32)
  net = plain_mlp((8,))
  params = net.init(jax.random.PRNGKey(0), batch["x"])
  posterior = laplace.fit(
    lambda x: mlp.mlp((8,), 10)(x), params, batch["x"], batch["y"], DIGITS, prior_precision=2.0
  )
  last = "mlp/~/linear_1"
  theta, unravel = jax.flatten_util.ravel_pytree(params[last])
  nll = lambda t: (
    -jnp.sum(
      jax.nn.log_softmax(net.apply({**params, last: unravel(t)}, batch["x"]))[jnp.arange(32), batch["y"]]
    )
  )
  np.testing.assert_allclose(posterior.ggn, jax.jit(jax.hessian(nll))(theta), atol=2e-4)
  np.testing.assert_allclose(posterior.precision - posterior.ggn, 2.0 * np.eye(theta.size), atol=1e-6)
  with pytest.raises(ValueError, match="Laplace needs a network whose output is its last hk.Linear"):
    scaled = lambda x: 2.0 * hk.Linear(10)(x)
    laplace.fit(
      scaled, hk.transform(scaled).init(jax.random.PRNGKey(0), batch["x"]), batch["x"], batch["y"], DIGITS
    )
