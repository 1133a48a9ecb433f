"""Bayesian convolutions and LeNet-5 under every method.

Known answers: a convolution is linear in its weights, so under the mean-field posterior each
output activation has mean conv(x, mu) + mu_b (the mean pass) and variance sum_w (dy/dw)^2
std_w^2 (the exact Jacobian of the mean pass); local reparameterisation and flipout must
reproduce both, as the reparameterisation's Monte Carlo draws do, for every padding, stride,
dilation, layout, mask and feature grouping of hk.ConvND, and give its expected gradient of a
loss of each activation alone, with a lower variance; flipout decorrelates identical examples
and gives the reparameterisation's expected gradient through a whole conv net (local
reparameterisation does not there: it drops the correlation between the positions that share
a kernel, see bnnjax.estimators). LeNet-5 has uncertainty-baselines' parameter count under
every method. Draws run through lax.map, not vmap: a vmapped kernel draw is a grouped
convolution that compiles for minutes on CPU.
"""

import haiku as hk
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bnnjax import estimators, models, posterior as post, priors
from bnnjax.config import base_config, resolve
from bnnjax.distributions import gaussian_kl
from bnnjax.methods import mean_field
from bnnjax.task import DataInfo
from bnnjax.train import build_task

NUM_DRAWS = 3000
STD = 0.3


def _layers(x):
  """Four convolutions of one input, side by side: outputs linear in the weights [B, 165]."""
  flat = lambda y: y.reshape(len(x), -1)
  a = hk.Conv2D(3, 3, stride=2, padding="SAME", name="same_stride2")(x)
  b = hk.Conv2D(2, 3, padding="VALID", rate=2, name="valid_dilated")(x)
  nchw = jnp.transpose(x, (0, 3, 1, 2))
  c = hk.Conv2D(2, (3, 2), padding=[(1, 0), (2, 1)], data_format="NCHW", name="explicit_nchw")(nchw)
  mask = (jnp.arange(3 * 3 * 1 * 4).reshape(3, 3, 1, 4) % 3 != 0).astype(jnp.float32)
  d = hk.Conv2D(4, 3, stride=3, padding="VALID", feature_group_count=2, mask=mask, name="grouped_masked")(x)
  return jnp.concatenate([flat(a), flat(b), flat(c), flat(d)], -1)


def _layer_problem():
  """The four layers' posterior (std 0.3 everywhere) and a batch of 3 whose first two are equal."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 2))
  x = jnp.concatenate([x[:1], x], 0)
  params = hk.transform(_layers).init(jax.random.PRNGKey(1), x)
  params = jax.tree_util.tree_map(lambda w: w + 0.1, params)  # nonzero bias means
  return post.init_posterior(params, STD), x


@pytest.fixture(scope="module")
def layer_draws():
  """{estimator: outputs [D, B, 165]} and the exact mean and variance of every activation."""
  q, x = _layer_problem()
  keys = jax.random.split(jax.random.PRNGKey(2), NUM_DRAWS)
  draws = {}
  for e in estimators.ESTIMATORS:
    net = estimators.bayesian_transform(_layers, e)
    draws[e] = np.asarray(
      jax.jit(lambda ks, net=net: jax.lax.map(lambda k: net.apply(q, k, x), ks))(keys), np.float64
    )
  # The outputs are linear in the weights: column j of the Jacobian is y(mu + e_j) - y(mu).
  mean_pass = lambda p: hk.transform(_layers).apply(p, None, x)
  flat, unravel = jax.flatten_util.ravel_pytree(q["mean"])
  columns = jax.jit(lambda: jax.lax.map(lambda e: mean_pass(unravel(flat + e)), jnp.eye(flat.size)))()
  jacobian = np.asarray(columns, np.float64) - np.asarray(mean_pass(q["mean"]), np.float64)
  exact_var = np.square(jacobian).sum(0) * STD**2
  return draws, np.asarray(mean_pass(q["mean"]), np.float64), exact_var


@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_conv_estimators_have_the_mean_pass_as_mean_and_the_exact_variance(layer_draws, estimator):
  draws, exact_mean, exact_var = layer_draws
  out = draws[estimator]
  z = (out.mean(0) - exact_mean) / np.sqrt(exact_var / NUM_DRAWS)
  assert np.max(np.abs(z)) < 4.8, np.max(np.abs(z))
  ratio = out.var(0) / exact_var  # sample variance / exact: ~ 1 +- sqrt(2 / D) = 2.6% each
  assert abs(np.mean(ratio) - 1) < 0.02 and np.max(np.abs(ratio - 1)) < 0.14, (np.mean(ratio), ratio.max())


def test_local_variance_matches_the_reparameterisation_monte_carlo(layer_draws):
  draws = layer_draws[0]
  ratio = draws["local"].var(0) / draws["reparam"].var(0)
  assert abs(np.mean(ratio) - 1) < 0.03 and np.max(np.abs(ratio - 1)) < 0.25


def test_flipout_and_local_decorrelate_identical_examples_and_reparam_does_not(layer_draws):
  draws = layer_draws[0]
  corr = lambda out: np.mean([np.corrcoef(out[:, 0, j], out[:, 1, j])[0, 1] for j in range(out.shape[-1])])
  assert corr(draws["reparam"]) > 0.999
  # Flipout shares std * eps across examples: the signs leave only the bias noise common.
  assert abs(corr(draws["local"])) < 0.05
  assert corr(draws["flipout"]) < 0.5


def _gradients(forward, q, x, estimator, loss_of, num_draws):
  """[D, P] draws of the gradient of mean(loss_of(outputs)) in the posterior's params."""
  net = estimators.bayesian_transform(forward, estimator)

  def grad(k):
    loss = lambda q: jnp.mean(loss_of(net.apply(q, k, x)))
    return jax.flatten_util.ravel_pytree(jax.grad(loss)(q))[0]

  keys = jax.random.split(jax.random.PRNGKey(2), num_draws)
  return np.asarray(jax.jit(lambda ks: jax.lax.map(grad, ks))(keys), np.float64)


def _agree_with_lower_variance(g, ref, factor):
  """Expected gradients equal within Monte Carlo error; g's total variance < factor * ref's."""
  z = (g.mean(0) - ref.mean(0)) / np.maximum(np.sqrt((g.var(0) + ref.var(0)) / len(g)), 1e-12)
  assert np.max(np.abs(z)) < 4.8, np.max(np.abs(z))
  assert g.var(0).sum() < factor * ref.var(0).sum(), (g.var(0).sum(), ref.var(0).sum())


def test_conv_estimators_give_the_expected_gradient_of_a_per_activation_loss_with_lower_variance():
  q, _ = _layer_problem()
  x = jax.random.normal(jax.random.PRNGKey(3), (16, 7, 7, 2))  # per-example noise averages out
  grads = {e: _gradients(_layers, q, x, e, jax.nn.softplus, 800) for e in estimators.ESTIMATORS}
  # The bias gradients' noise is mostly that of the bias draw, which flipout shares: 0.75, not 0.5.
  for e in ("local", "flipout"):
    _agree_with_lower_variance(grads[e], grads["reparam"], 0.75)


def _small_cnn(x):
  x = jax.nn.relu(hk.Conv2D(4, 3, name="conv_0")(x))
  x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
  x = jax.nn.relu(hk.Conv2D(6, 3, stride=2, name="conv_1")(x))
  return hk.Linear(3, name="linear")(hk.Flatten()(x))


def test_flipout_gives_a_conv_nets_expected_gradient_with_lower_variance():
  x = jax.random.normal(jax.random.PRNGKey(0), (32, 8, 8, 1))
  q = post.init_posterior(hk.transform(_small_cnn).init(jax.random.PRNGKey(1), x), 0.2)
  loss_of = lambda out: jnp.sum(out**2, -1)
  grads = {e: _gradients(_small_cnn, q, x, e, loss_of, 800) for e in ("reparam", "flipout")}
  _agree_with_lower_variance(grads["flipout"], grads["reparam"], 0.5)


def _lenet_config(name, **fields):
  config = base_config()
  config.model = ml_collections.ConfigDict({"name": name, **fields})
  return resolve(config)


MNIST = DataInfo((28, 28, 1), 10, 50000)
# uncertainty-baselines' LeNet-5 with SAME padding on 28x28x1: conv 156 + 2,416 + 48,120, dense
# 7*7*120*84 + 84 = 494,004 and 850.
LENET5_PARAMS = 545_546


@pytest.mark.parametrize(
  "name, factor",
  [("point/lenet5", 1), ("dropout/lenet5", 1), ("mean_field/lenet5", 2), ("ensemble/lenet5", 3)],
)
def test_lenet5_has_uncertainty_baselines_parameter_count_under_every_method(name, factor):
  fields = {"ensemble_size": 3} if name.startswith("ensemble") else {}
  task = build_task(_lenet_config(name, **fields), MNIST)
  batch = {"x": jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), "y": jax.ShapeDtypeStruct((1,), jnp.int32)}
  params = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
  assert sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)) == factor * LENET5_PARAMS
  if name.startswith("mean_field"):  # every conv and dense layer is Bayesian
    assert sorted(post.scale_params(params)) == [f"lenet5/conv_{i}" for i in range(3)] + [
      "lenet5/linear_0",
      "lenet5/linear_1",
    ]


SMALL = dict(conv_channels=(4, 8), kernel_size=3, hidden_sizes=(16,))
DIGITS = DataInfo((8, 8, 1), 10, 1000)


def test_mean_field_lenet_at_a_tiny_std_is_the_point_network_at_its_means(estimator="local"):
  x = jax.random.uniform(jax.random.PRNGKey(0), (5, 8, 8, 1))
  point = build_task(_lenet_config("point/lenet5", **SMALL), DIGITS)
  bayes = build_task(_lenet_config("mean_field/lenet5", estimator=estimator, init_std=1e-7, **SMALL), DIGITS)
  q = bayes.init(jax.random.PRNGKey(1), {"x": x})
  draws = jax.jit(lambda q: bayes.predictor.sample(q, jax.random.PRNGKey(2), x, 2))(q)
  expected = point.predictor.sample(q["mean"], None, x, 1)[0]
  np.testing.assert_allclose(draws, jnp.broadcast_to(expected, draws.shape), atol=1e-4)
  assert not np.allclose(expected, 0, atol=1e-3)


def test_only_the_conv_layers_bayesian_with_a_prior_per_layer():
  m = _lenet_config("mean_field/lenet5", **SMALL).model
  conv = lambda module_name, name, value: "/conv_" in module_name
  scales = {"lenet5/conv_0": 0.5, "lenet5/conv_1": 2.0}
  task = mean_field.method_task(
    models.NETWORKS["lenet5"].build(m, DIGITS, 10),
    m,
    DIGITS,
    {},
    predicate=conv,
    prior_of=lambda ref: priors.layerwise_prior({k: priors.gaussian_prior(s) for k, s in scales.items()}),
  )
  q = task.init(jax.random.PRNGKey(0), {"x": jnp.zeros((1, 8, 8, 1))})
  assert sorted(post.scale_params(q)) == sorted(scales)
  _, metrics = task.loss(q, jax.random.PRNGKey(1), {"x": jnp.zeros((2, 8, 8, 1)), "y": jnp.zeros(2, int)}, 0)
  expected = sum(
    float(gaussian_kl(q["mean"][k][n], m.init_std, 0.0, s).sum())
    for k, s in scales.items()
    for n in ("w", "b")
  )
  np.testing.assert_allclose(float(metrics["kl"]), expected, rtol=1e-5)


def test_a_kernel_that_does_not_fit_is_a_one_line_error_naming_the_layer():
  config = _lenet_config("point/lenet5", kernel_size=3, padding="VALID", conv_channels=(4, 8, 8))
  # 8x8 -> conv_0 6x6 -> pool 3x3 -> conv_1 1x1: too small for the 2x2 pooling after it
  with pytest.raises(ValueError, match=r"^lenet5 layer conv_1: its 1x1 output is too small"):
    build_task(config, DIGITS)
  config = _lenet_config("mean_field/lenet5", kernel_size=5, padding="VALID")
  with pytest.raises(ValueError, match=r"^lenet5 layer conv_1: kernel 5x5 does not fit its 2x2 input"):
    build_task(config, DIGITS)
  with pytest.raises(ValueError, match="config.model.padding must be one of SAME, VALID"):
    build_task(_lenet_config("point/lenet5", padding="REFLECT"), DIGITS)


def test_an_estimator_on_a_layer_it_cannot_handle_is_one_line_before_compiling():
  def forward(x):
    x = hk.Conv2DTranspose(2, 3, name="upsample")(x)
    return hk.Linear(10)(hk.Flatten()(x))

  m = ml_collections.ConfigDict(mean_field.DEFAULTS)
  with pytest.raises(ValueError, match=r"Bayesian layer upsample \(Conv2DTranspose\) is neither"):
    mean_field.method_task(forward, m, DIGITS, {})
  m.estimator = "reparam"  # any layer
  mean_field.method_task(forward, m, DIGITS, {})
