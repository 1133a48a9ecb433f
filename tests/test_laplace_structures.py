"""Laplace structures against brute force: the conjugate linear model's exact posterior (last layer and
KFAC), diagonal Laplace = diag(GGN) + λ, KFAC = the exact GGN block for one example, the GLM
predictive's moments = (f*, J Σ Jᵀ), the marginal likelihood's closed-form maximiser."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import bnnjax
from bnnjax.config import resolve
from bnnjax.methods import laplace, laplace_layers
from bnnjax.models import mlp
from bnnjax.task import DataInfo
from bnnjax.train import build_task
from tests.test_methods import adam_fit, conjugate_problem, digits_batch, digits_config, linear, task_of

TINY = DataInfo((3,), 3, 7)


def tiny_net(x):
  return mlp.mlp((4,), 3)(x)


@functools.lru_cache(None)
def tiny_problem(n=7):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(n, 3)), jnp.float32)
  params = hk.transform(tiny_net).init(jax.random.PRNGKey(0), x)
  params = jax.tree_util.tree_map(lambda p: p + 0.3 * jnp.ones_like(p), params)  # non-zero biases
  return x, params


@jax.jit
def jacobian_and_hessian(params, x1):
  """({layer: [C, P_l] ∂f(x1)/∂(w.ravel(), b)}, [C, C] the softmax's H at x1)."""
  apply = hk.without_apply_rng(hk.transform(tiny_net)).apply
  jac = jax.jacobian(lambda p: apply(p, x1[None])[0])(params)
  probs = jax.nn.softmax(apply(params, x1[None])[0])
  layers = {k: jnp.concatenate([j["w"].reshape(j["w"].shape[0], -1), j["b"]], 1) for k, j in jac.items()}
  return layers, jnp.diag(probs) - jnp.outer(probs, probs)


def test_last_layer_and_kfac_laplace_of_a_linear_regressor_are_the_exact_conjugate_posterior():
  x, y, mean, cov = conjugate_problem()  # prior N(0, I): λ = 1, noise 0.5
  info = DataInfo((3,), 0, len(x))
  params = {
    "linear": {"w": jnp.asarray(mean[:3, None], jnp.float32), "b": jnp.asarray(mean[3:], jnp.float32)}
  }
  precision = np.linalg.inv(cov)  # XᵀX / σ² + I over (w, b)
  last = laplace.fit(linear, params, x, y, info, prior_precision=1.0, noise_std=0.5)
  order = [3, 0, 1, 2]  # ravel_pytree's order: b, then w
  np.testing.assert_allclose(last.precision, precision[np.ix_(order, order)], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(ravel_pytree(last.params["linear"])[0], mean[order], rtol=1e-6)
  # KFAC: one output, H_i = 1/σ² for every row, so (mean ããᵀ) ⊗ (Σ_i 1/σ²) is XᵀX/σ² exactly.
  kfac = laplace_layers.fit(linear, params, x, info, "kfac", prior_precision=1.0, noise_std=0.5, batch_size=8)
  np.testing.assert_allclose(
    laplace_layers.kfac_precision(kfac.factors["linear"], kfac.prior_precision),
    precision,
    rtol=1e-5,
    atol=1e-4,
  )
  diag = laplace_layers.fit(linear, params, x, info, "diagonal", prior_precision=1.0, noise_std=0.5)
  np.testing.assert_allclose(diag.precision["linear"]["w"][:, 0], np.diag(precision)[:3], rtol=1e-5)
  np.testing.assert_allclose(diag.precision["linear"]["b"], np.diag(precision)[3:], rtol=1e-5)
  # The model is linear in θ: MC and GLM draws coincide, with covariance Σ.
  xs = jnp.asarray(x[:3])
  draw = jax.jit(laplace_layers.sample_outputs, static_argnums=(0, 4, 5))
  glm = draw(linear, kfac, jax.random.PRNGKey(0), xs, 20000, "glm")
  mc = draw(linear, kfac, jax.random.PRNGKey(0), xs, 20000, "mc")
  np.testing.assert_allclose(glm, mc, atol=1e-4)
  features = np.concatenate([x[:3], np.ones((3, 1))], 1)
  np.testing.assert_allclose(
    np.cov(np.asarray(glm[..., 0]).T), features @ cov @ features.T, rtol=0.06, atol=2e-3
  )


def test_the_evidence_maximiser_is_the_closed_form_one_for_equal_eigenvalues():
  # e_j = e for P weights: d/dλ = P/λ − s − P/(e + λ) = 0  =>  λ² + eλ − P e / s = 0.
  p, e, s = 50, 30.0, 4.0
  expected = (-e + np.sqrt(e**2 + 4 * p * e / s)) / 2
  tuned = laplace_layers.tune_prior_precision(jnp.full(p, e), s)
  assert tuned == pytest.approx(expected, rel=0.012)  # the grid's spacing: 10^(10/2000)
  ggn = jnp.diag(jnp.full(p, e))  # the last layer's tuning: the same evidence
  assert laplace.tune_prior_precision(ggn, jnp.full(p, np.sqrt(s / p))) == pytest.approx(tuned, rel=1e-6)


def conv_net(x):
  x = hk.Conv2D(2, 3, name="conv")(x)
  return hk.Linear(3, name="head")(hk.Flatten()(x))


def brute_force_ggn(net, params, x):
  """[P, P] Σ_i J_iᵀ H_i J_i of a softmax classifier over ravel_pytree(params), by jax.jacobian."""
  flat, unravel = ravel_pytree(params)
  apply = hk.without_apply_rng(hk.transform(net)).apply

  def one(x1):
    jac = jax.jacobian(lambda t: apply(unravel(t), x1[None])[0])(flat)
    probs = jax.nn.softmax(apply(params, x1[None])[0])
    return jac.T @ (jnp.diag(probs) - jnp.outer(probs, probs)) @ jac

  return jax.jit(lambda x: jnp.sum(jax.vmap(one)(x), 0))(x)


def test_diagonal_laplace_is_the_diagonal_of_the_brute_force_ggn_plus_the_prior_precision():
  x, params = tiny_problem()  # dense layers only: the factors' pass
  ggn = brute_force_ggn(tiny_net, params, x)
  posterior = laplace_layers.fit(tiny_net, params, x, TINY, "diagonal", prior_precision=0.7, batch_size=4)
  np.testing.assert_allclose(ravel_pytree(posterior.precision)[0], np.diag(ggn) + 0.7, rtol=1e-4, atol=1e-6)
  tuned = laplace_layers.fit(tiny_net, params, x, TINY, "diagonal")  # λ by the marginal likelihood
  expected = laplace_layers.tune_prior_precision(np.diag(ggn), float(_sq_norm(params)))
  assert float(tuned.prior_precision) == pytest.approx(expected, rel=1e-6)
  # A convolution: bnnjax.methods.fisher's per-example gradients, the same exact diagonal.
  images = jnp.asarray(np.random.default_rng(2).normal(size=(5, 4, 4, 1)), jnp.float32)
  conv_params = hk.transform(conv_net).init(jax.random.PRNGKey(0), images)
  conv = laplace_layers.fit(
    conv_net, conv_params, images, DataInfo((4, 4, 1), 3, 5), "diagonal", prior_precision=0.7
  )
  expected = np.diag(brute_force_ggn(conv_net, conv_params, images)) + 0.7
  np.testing.assert_allclose(ravel_pytree(conv.precision)[0], expected, rtol=1e-4, atol=1e-6)


def _sq_norm(params):
  return sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("copies", [1, 2])
def test_kfac_is_the_exact_ggn_block_of_each_layer_for_one_example(copies):
  x, params = tiny_problem()
  x1 = x[2]
  # The same example `copies` times: Ā (a mean) is unchanged, G (a sum) doubles: the block doubles.
  posterior = laplace_layers.fit(
    tiny_net, params, jnp.stack([x1] * copies), TINY, "kfac", prior_precision=0.5
  )
  assert sorted(posterior.factors) == ["mlp/~/linear_0", "mlp/~/linear_1"]
  jacobians, hessian = jacobian_and_hessian(params, x1)
  for name, factors in posterior.factors.items():
    jac = jacobians[name]  # over (w.ravel(), b): Kronecker index (row of [w; b], column)
    block = copies * jac.T @ hessian @ jac
    np.testing.assert_allclose(jnp.kron(factors.a, factors.g), block, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
      laplace_layers.kfac_precision(factors, 0.5), block + 0.5 * np.eye(len(block)), rtol=1e-4, atol=1e-6
    )
    # The eigendecompositions reproduce the factors.
    np.testing.assert_allclose(
      (factors.a_vectors * factors.a_eigenvalues) @ factors.a_vectors.T, factors.a, atol=1e-5
    )


@pytest.mark.parametrize("structure", ["kfac", "diagonal"])
def test_glm_predictive_samples_have_mean_f_star_and_covariance_j_sigma_jt(structure):
  x, params = tiny_problem()
  posterior = laplace_layers.fit(tiny_net, params, x, TINY, structure, prior_precision=2.0)
  apply = hk.without_apply_rng(hk.transform(tiny_net)).apply
  names = sorted(params)
  if structure == "kfac":  # Σ block diagonal over layers, each over (w.ravel(), b)
    blocks = [np.linalg.inv(laplace_layers.kfac_precision(posterior.factors[n], 2.0)) for n in names]
    sizes = [len(b) for b in blocks]
    sigma = np.zeros((sum(sizes),) * 2)
    for i, b in enumerate(blocks):
      start = sum(sizes[:i])
      sigma[start : start + sizes[i], start : start + sizes[i]] = b
  else:
    precision = posterior.precision
    sigma = np.diag(
      np.concatenate([np.concatenate([precision[n]["w"].ravel(), precision[n]["b"]]) for n in names])
    )
    sigma = np.linalg.inv(sigma)
  xs = x[:2]
  draw = jax.jit(laplace_layers.sample_outputs, static_argnums=(0, 4, 5))
  samples = draw(tiny_net, posterior, jax.random.PRNGKey(1), xs, 40000, "glm")
  mean = apply(params, xs)
  for i in range(2):
    jac = jnp.concatenate([jacobian_and_hessian(params, xs[i])[0][n] for n in names], 1)
    expected = jac @ sigma @ jac.T
    got = np.cov(np.asarray(samples[:, i]).T)
    assert np.linalg.norm(got - expected) < 0.03 * np.linalg.norm(expected), (got, expected)
    std_error = np.sqrt(np.diag(expected) / 40000)
    assert np.all(np.abs(np.asarray(samples[:, i]).mean(0) - mean[i]) < 4 * std_error)
  # MC draws the same weights but runs the network: a different (non-linear) predictive.
  mc = draw(tiny_net, posterior, jax.random.PRNGKey(1), xs, 100, "mc")
  assert not np.allclose(mc, samples[:100], atol=1e-3)


def test_fit_run_diagonal_and_kfac_on_a_digits_point_run():
  point = adam_fit(task_of("point/mlp"), digits_batch(256), num_steps=40, lr=1e-2)
  config = resolve(digits_config("mlp", hidden_sizes=(16,)))
  _, _, info = bnnjax.data.load_splits(config.data)
  run = bnnjax.Run("unsaved", config, point, info, build_task(config, info))
  test = run.test_data()
  map_accuracy = np.mean(run.predict(test["x"]).probs.argmax(1) == test["y"])
  kfac = laplace.fit_run(run, structure="kfac", predictive="glm")
  pred = kfac.predict(test["x"], num_samples=8)
  assert kfac.config.model.name == "laplace_kfac/mlp" and pred.mutual_information.max() > 0
  assert map_accuracy > 0.8 and np.mean(pred.probs.argmax(1) == test["y"]) == pytest.approx(
    map_accuracy, abs=0.03
  )
  eigenvalues = laplace_layers.curvature_eigenvalues(kfac.params)
  assert eigenvalues.size == 64 * 16 + 16 + 16 * 10 + 10  # every weight of both layers
  expected = laplace_layers.tune_prior_precision(eigenvalues, float(_sq_norm(point)))
  assert float(kfac.params.prior_precision) == pytest.approx(expected, rel=1e-6)
  diagonal = laplace.fit_run(run, structure="diagonal", prior_precision=1.0, predictive="mc")
  assert diagonal.config.model.name == "laplace_diagonal/mlp"
  assert (
    float(diagonal.params.prior_precision) == 1.0
    and float(diagonal.params.precision["mlp/~/linear_1"]["b"].min()) > 1.0
  )


def test_bad_structures_and_networks_are_one_line_errors():
  with pytest.raises(
    ValueError, match="Laplace structure must be one of last_layer, diagonal, kfac, got 'full'"
  ):
    laplace.fit_run(None, structure="full")  # refused before the run is looked at
  with pytest.raises(ValueError, match="predictive for a diagonal or KFAC posterior must be one of mc, glm"):
    laplace.fit_run(None, structure="kfac", predictive="closed_form")

  def conv_only(x):
    return hk.Flatten()(hk.Conv2D(3, 4, padding="VALID")(x))

  x = jnp.zeros((2, 4, 4, 1))
  info = DataInfo((4, 4, 1), 3, 2)
  for net, message in (
    (conv_net, "layer 'conv' is not one"),
    (conv_only, "needs dense layers .hk.Linear.; this network has none"),
  ):
    params = hk.transform(net).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=message):
      laplace_layers.fit(net, params, x, info, "kfac")

  def shared(x):  # one hk.Linear called twice
    layer = hk.Linear(3, name="shared")
    return layer(jax.nn.relu(layer(hk.Flatten()(x)[:, :3])))

  params = hk.transform(shared).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="needs each hk.Linear called once; 'shared' is called again"):
    laplace_layers.fit(shared, params, x, info, "kfac")
  with pytest.raises(ValueError, match="prior_precision must be positive"):
    laplace_layers.fit(tiny_net, tiny_problem()[1], tiny_problem()[0], TINY, "kfac", prior_precision=0.0)
