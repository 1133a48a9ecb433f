"""Gradient estimators: same expectation of outputs and gradients, lower variance where promised."""

import haiku as hk
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from bnnjax import estimators
from bnnjax import posterior as post

NUM_DRAWS = 4000


def _forward(x):
  return hk.nets.MLP([8, 3])(x)


def _problem():
  """A fixed 5-8-3 network posterior (std 0.3, so the noise matters) and a batch of 32."""
  x = jax.random.normal(jax.random.PRNGKey(0), (32, 5))
  params = estimators.bayesian_transform(_forward, "reparam").init(jax.random.PRNGKey(1), x)
  return post.init_posterior(params, 0.3), x


def _loss(net, q, rng, x):
  out = net.apply(q, rng, x)
  return jnp.mean(jnp.sum(out**2, -1) + out[:, 0])


def _draws(estimator, fn):
  q, x = _problem()
  net = estimators.bayesian_transform(_forward, estimator)
  keys = jax.random.split(jax.random.PRNGKey(2), NUM_DRAWS)
  return jax.jit(jax.vmap(lambda k: fn(net, q, k, x)))(keys)


def _output_and_gradient(net, q, k, x):
  """One draw of the outputs [B, 3] and of the loss gradient (flattened)."""
  grad = jax.flatten_util.ravel_pytree(jax.grad(_loss, 1)(net, q, k, x))[0]
  return net.apply(q, k, x), grad


@pytest.fixture(scope="module")
def draws():
  """{estimator: (outputs [D, B, 3], gradients [D, P])}, one compilation per estimator."""
  return {
    e: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), _draws(e, _output_and_gradient))
    for e in estimators.ESTIMATORS
  }


@pytest.fixture(scope="module")
def gradient_draws(draws):
  return {e: g for e, (_, g) in draws.items()}


def test_estimators_agree_on_the_expected_output(draws):
  outputs = {e: out for e, (out, _) in draws.items()}
  ref = outputs["reparam"]
  for e in ("local", "flipout"):
    diff = outputs[e].mean(0) - ref.mean(0)
    standard_error = np.sqrt((outputs[e].var(0) + ref.var(0)) / NUM_DRAWS)
    assert np.all(np.abs(diff) < 4.5 * standard_error), e
    # Per example the output distributions agree too (second moments).
    np.testing.assert_allclose(outputs[e].std(0), ref.std(0), rtol=0.1)


def test_estimators_agree_on_the_expected_gradient(gradient_draws):
  ref = gradient_draws["reparam"]
  for e in ("local", "flipout"):
    g = gradient_draws[e]
    diff = g.mean(0) - ref.mean(0)
    standard_error = np.sqrt((g.var(0) + ref.var(0)) / NUM_DRAWS)
    z = diff / np.maximum(standard_error, 1e-12)
    # Over ~120 coordinates a correct estimator keeps every |z| small; a biased one does not.
    assert np.max(np.abs(z)) < 4.5, (e, np.max(np.abs(z)))


def test_local_and_flipout_have_lower_gradient_variance(gradient_draws):
  total_variance = {e: g.var(0).sum() for e, g in gradient_draws.items()}
  # Independent noise per example averages out over the batch of 32; shared noise does not.
  assert total_variance["local"] < 0.5 * total_variance["reparam"], total_variance
  assert total_variance["flipout"] < 0.5 * total_variance["reparam"], total_variance


def test_unknown_estimator_is_an_error():
  with pytest.raises(ValueError, match="unknown estimator 'bogus'"):
    estimators.bayesian_transform(_forward, "bogus")


def test_local_reparameterisation_rejects_bayesian_layers_it_cannot_handle():
  def deconv(x):
    return hk.Conv1DTranspose(2, 3)(x)

  x = jnp.ones((1, 6, 1))
  params = hk.transform(deconv).init(jax.random.PRNGKey(0), x)
  net = estimators.bayesian_transform(deconv, "local")
  with pytest.raises(
    ValueError, match=r"hk.ConvND \(hk.Conv2D\) layers only; Bayesian layer conv1_d_transpose"
  ):
    net.apply(post.init_posterior(params, 0.1), jax.random.PRNGKey(1), x)


def test_num_samples_below_one_is_an_error():
  q, x = _problem()
  with pytest.raises(ValueError, match="num_samples must be >= 1"):
    estimators.sample_outputs(
      estimators.bayesian_transform(_forward, "local"), q, jax.random.PRNGKey(0), x, 0
    )


def test_flipout_decorrelates_identical_inputs_in_one_batch():
  """Flipout's point (Wen et al. 2018): two copies of one input in a batch get perturbations
  that are uncorrelated, and whose magnitudes are too, with each one's marginal that of the
  reparameterisation. Without the input sign flip, ((x * s_in) @ dW) * s_out becomes
  (x @ dW) * s_out: the two magnitudes are then equal, draw by draw."""
  x = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(0), (1, 40)), (2, 40))
  forward = lambda inputs: hk.Linear(1, with_bias=False)(inputs)
  params = hk.transform(forward).init(jax.random.PRNGKey(1), x)
  q = post.init_posterior(params, 0.5)
  q["mean"] = jax.tree_util.tree_map(jnp.zeros_like, q["mean"])  # outputs are the perturbations
  keys = jax.random.split(jax.random.PRNGKey(2), NUM_DRAWS)

  def outputs(estimator):
    net = estimators.bayesian_transform(forward, estimator)
    return np.asarray(jax.jit(jax.vmap(lambda k: net.apply(q, k, x)[:, 0]))(keys), np.float64)

  flip, reparam = outputs("flipout"), outputs("reparam")
  assert abs(np.corrcoef(flip[:, 0], flip[:, 1])[0, 1]) < 0.06  # 4000 draws: sd about 0.016
  assert abs(np.corrcoef(flip[:, 0] ** 2, flip[:, 1] ** 2)[0, 1]) < 0.15  # 1.0 without s_in
  np.testing.assert_allclose(reparam[:, 0], reparam[:, 1])  # one weight draw: identical
  expected_var = float(jnp.sum(x[0] ** 2) * 0.25)  # sum_j x_j^2 std^2
  for draws in (flip[:, 0], flip[:, 1], reparam[:, 0]):
    assert np.var(draws) == pytest.approx(expected_var, rel=0.08)
