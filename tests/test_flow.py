"""RealNVP, planar flows and IAF: invertibility, log-determinants, normalisation, bad input."""

import functools
import json
import os
import subprocess
import sys

import bnnjax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnjax import task as task_lib
from bnnjax.distributions import gaussian_log_prob
from bnnjax.models import flow as flow_lib
from bnnjax.models import vae_flow


def _perturbed(params, rng, scale):
  """Random non-zero params: the zero-initialised output layers make an untrained flow the identity."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(rng, len(leaves))
  noisy = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(treedef, noisy)


@functools.lru_cache(maxsize=None)  # one compilation per flow for the whole file
def _random_flow(dim, num_layers=4, hidden=(32, 32), scale=0.3, seed=1):
  flow = flow_lib.make_flow(flow_lib.alternating_masks((dim,), num_layers), hidden)
  x = jax.random.normal(jax.random.PRNGKey(seed), (7, dim))
  params = _perturbed(flow.init(jax.random.PRNGKey(seed + 1), x), jax.random.PRNGKey(seed + 2), scale)
  return flow, params, x


# ----------------------------------------------------------------------------- RealNVP


def test_masks_alternate_and_keep_half():
  masks = flow_lib.alternating_masks((6,), 3)
  np.testing.assert_array_equal(masks[0], [0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(masks[1], 1 - masks[0])
  image = flow_lib.alternating_masks((2, 2, 1), 2)
  np.testing.assert_array_equal(image[0], [0, 1, 1, 0])  # a checkerboard


def test_untrained_flow_is_identity():
  flow = flow_lib.make_flow(flow_lib.alternating_masks((2,), 2), (8,))
  x = jnp.array([[0.3, -1.2], [2.0, 0.5]])
  params = flow.init(jax.random.PRNGKey(0), x)
  z, log_det = flow.forward(params, x)
  np.testing.assert_allclose(z, x, atol=1e-7)
  np.testing.assert_allclose(log_det, 0.0, atol=1e-7)


def test_inverse_undoes_forward():
  flow, params, x = _random_flow(dim=4)
  z, log_det = flow.forward(params, x)
  assert float(jnp.abs(z - x).max()) > 0.1  # the perturbed flow is far from the identity
  x_back, inverse_log_det = flow.inverse(params, z)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-5)


def test_log_det_matches_autodiff_jacobian():
  flow, params, x = _random_flow(dim=4)
  _, log_det = flow.forward(params, x)
  jacobians = jax.jit(jax.vmap(jax.jacfwd(lambda v: flow.forward(params, v[None])[0][0])))(x)
  sign, expected = jnp.linalg.slogdet(jacobians)
  assert np.all(np.asarray(sign) != 0)
  assert float(jnp.abs(expected).min()) > 0.05  # a non-trivial volume change
  np.testing.assert_allclose(log_det, expected, atol=1e-4)


def test_two_dim_density_integrates_to_one():
  # Random params make a density far from the base N(0, I) (checked below), so a
  # wrong log-det term would change the integral. Some mass lies outside any grid,
  # so the Riemann sum is compared both with 1 and with the fraction of flow
  # samples that land inside the grid (standard error ~1e-4 with 200k samples).
  flow, params, _ = _random_flow(dim=2)
  edge, n = 10.0, 801
  ticks = jnp.linspace(-edge, edge, n)
  grid = jnp.stack(jnp.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
  density = jnp.exp(jax.jit(flow.log_prob)(params, grid))
  cell = (ticks[1] - ticks[0]) ** 2
  total = float(density.sum() * cell)
  samples = jax.jit(lambda p, rng: flow_lib.sample(flow, p, rng, 200_000))(params, jax.random.PRNGKey(0))
  inside = float((jnp.abs(samples) <= edge).all(-1).mean())
  assert abs(total - 1.0) < 5e-3, total
  assert abs(total - inside) < 2e-3, (total, inside)
  base = jnp.exp(flow_lib.standard_normal_log_prob(grid))
  assert float(jnp.abs(density - base).sum() * cell) > 0.2  # not just the base density


def test_sample_inverts_base_draws():
  flow, params, _ = _random_flow(dim=2)
  x = flow_lib.sample(flow, params, jax.random.PRNGKey(9), 64)
  z, _ = flow.forward(params, x)
  np.testing.assert_allclose(z, jax.random.normal(jax.random.PRNGKey(9), (64, 2)), atol=1e-5)


# ----------------------------------------------------------------------- dequantisation


def test_dequantize_stays_in_the_pixel_cell():
  k = jnp.arange(256.0)
  x = flow_lib.dequantize(jax.random.PRNGKey(0), k / 255.0)
  np.testing.assert_array_equal(jnp.floor(256.0 * x), k)


def test_logit_log_det_matches_autodiff():
  x = jnp.array([[0.0, 0.3, 0.999]])
  y, log_det = flow_lib.logit_transform(x, alpha=0.05)
  derivative = jax.vmap(jax.grad(lambda v: flow_lib.logit_transform(v[None, None], 0.05)[0][0, 0]))(x[0])
  np.testing.assert_allclose(log_det[0], jnp.log(derivative).sum(), rtol=1e-5)
  np.testing.assert_allclose(y[0, 0], jnp.log(0.05 / 0.95), rtol=1e-6)


def test_bits_per_dim_of_uniform_pixels_is_eight():
  # The uniform density on [0, 1)^D has log p = 0, which spreads 8 bits per pixel.
  np.testing.assert_allclose(flow_lib.bits_per_dim(jnp.zeros(()), 784), 8.0, rtol=1e-6)


# ------------------------------------------------------------------------------ Task


def _config(**model):
  """A flow's config.model, resolved: every field of flow_lib.default_model_config()."""
  m = flow_lib.default_model_config()
  m.update(dict(num_coupling_layers=4, hidden_sizes=(16,)))
  m.update(model)
  return m


def test_task_loss_is_nll_per_dimension():
  info = task_lib.DataInfo(input_shape=(2,), num_classes=0, num_train=10)
  task = flow_lib.make_task(_config(), info)
  batch = {"x": jnp.array([[0.0, 0.0], [1.0, -1.0]]), "y": jnp.zeros(2)}
  params = task.init(jax.random.PRNGKey(0), batch)
  loss, metrics = jax.jit(task.loss)(params, jax.random.PRNGKey(1), batch, 0)
  # Untrained = identity, so the density is N(0, I): NLL = log(2 pi) + mean(|x|^2) / 2.
  expected_nll = np.log(2 * np.pi) + 0.5 * (0.0 + 2.0) / 2
  np.testing.assert_allclose(metrics["nll"], expected_nll, rtol=1e-6)
  np.testing.assert_allclose(loss, expected_nll / 2, rtol=1e-6)


def test_task_bits_per_dim_of_identity_flow_on_images():
  info = task_lib.DataInfo(input_shape=(2, 2, 1), num_classes=10, num_train=10)
  task = flow_lib.make_task(_config(preprocess="dequantize_logit"), info)
  batch = {"x": jnp.full((3, 2, 2, 1), 0.5), "y": jnp.zeros(3, jnp.int32)}
  params = task.init(jax.random.PRNGKey(0), batch)
  rng = jax.random.PRNGKey(1)
  metrics = task.evaluate(params, rng, batch)
  x = flow_lib.dequantize(rng, batch["x"].reshape(3, 4))
  y, log_det = flow_lib.logit_transform(x, 0.05)
  log_p = flow_lib.standard_normal_log_prob(y) + log_det
  expected = (-(log_p - 4 * np.log(256.0)) / (4 * np.log(2.0))).mean()
  np.testing.assert_allclose(metrics["bits_per_dim"], expected, rtol=1e-5)


# ------------------------------------------------------------------------- bad input


def test_zero_coupling_layers_is_an_error():
  with pytest.raises(ValueError, match="at least one coupling layer"):
    flow_lib.alternating_masks((2,), 0)
  with pytest.raises(ValueError, match="num_coupling_layers"):
    flow_lib.make_task(_config(num_coupling_layers=0), task_lib.DataInfo((2,), 0, 10))


def test_odd_mask_dimension_is_an_error():
  with pytest.raises(ValueError, match="must be even"):
    flow_lib.alternating_masks((3,), 2)
  with pytest.raises(ValueError, match="keep half"):
    flow_lib.make_flow(np.array([[1.0, 1.0, 0.0, 1.0]]), (8,))


def test_data_of_the_wrong_dimension_is_an_error():
  flow = flow_lib.make_flow(flow_lib.alternating_masks((2,), 2), (8,))
  params = flow.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match="models 2-dimensional data"):
    jax.jit(flow.log_prob)(params, jnp.zeros((5, 3)))
  task = flow_lib.make_task(_config(), task_lib.DataInfo((2,), 0, 10))
  with pytest.raises(ValueError, match="built for inputs of shape"):
    jax.jit(task.evaluate)(params, jax.random.PRNGKey(0), {"x": jnp.zeros((5, 3)), "y": jnp.zeros(5)})


# ------------------------------------------------------------------- the declared Density


def test_flow_declares_its_model_and_density():
  assert bnnjax.models.get("flow") is flow_lib.MODEL and bnnjax.models.get("vae_flow") is vae_flow.MODEL
  info = task_lib.DataInfo(input_shape=(2,), num_classes=0, num_train=10)
  task = flow_lib.make_task(_config(), info)
  assert task.density is not None and task.generative is None and task.predictor is None
  assert not task.density.discrete
  batch = {"x": jnp.array([[0.0, 0.0], [1.0, -1.0]]), "y": jnp.zeros(2)}
  params = task.init(jax.random.PRNGKey(0), batch)
  log_p = task.density.log_prob(params, jax.random.PRNGKey(1), batch["x"])
  np.testing.assert_allclose(
    -log_p.mean(), task.evaluate(params, jax.random.PRNGKey(1), batch)["nll"], rtol=1e-6
  )
  assert task.density.sample(params, jax.random.PRNGKey(2), 5).shape == (5, 2)


def test_image_density_samples_are_images_in_the_unit_interval():
  info = task_lib.DataInfo(input_shape=(2, 2, 1), num_classes=10, num_train=10)
  task = flow_lib.make_task(_config(preprocess="dequantize_logit"), info)
  params = task.init(jax.random.PRNGKey(0), {"x": jnp.full((1, 2, 2, 1), 0.5)})
  images = task.density.sample(params, jax.random.PRNGKey(1), 6)
  assert task.density.discrete and images.shape == (6, 2, 2, 1)
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  # the inverse of the logit transform: y -> x -> y
  y = jnp.array([[-2.0, 0.0, 1.5]])
  np.testing.assert_allclose(
    flow_lib.logit_transform(flow_lib.inverse_logit_transform(y, 0.05), 0.05)[0], y, rtol=1e-5
  )


# ------------------------------------------------------------------------ planar flows


def _planar_params(num_flows, batch, dim, seed=0, scale=1.0):
  ku, kw, kb = jax.random.split(jax.random.PRNGKey(seed), 3)
  shape = (num_flows, batch, dim)
  return vae_flow.PlanarParams(
    scale * jax.random.normal(ku, shape),
    scale * jax.random.normal(kw, shape),
    jax.random.normal(kb, (num_flows, batch, 1)),
  )


def test_constrained_u_satisfies_invertibility_condition():
  w = jnp.array([[1.0, 2.0, -1.0]])
  for wu in (-20.0, -1.0, 0.0, 3.0):
    u = wu * w / jnp.sum(w * w)  # w . u = wu
    u_hat = vae_flow.invertible_u(u, w)
    # w . u_hat = -1 + softplus(w . u), always > -1; identity-like for large w . u.
    np.testing.assert_allclose(jnp.sum(w * u_hat), -1.0 + jax.nn.softplus(wu), rtol=1e-5, atol=1e-6)
    assert float(jnp.sum(w * u_hat)) >= -1.0


def test_planar_log_det_matches_autodiff_jacobian():
  params = _planar_params(num_flows=4, batch=5, dim=3, seed=1)
  z = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
  _, log_det = vae_flow.planar_flow(z, params)

  def one_example(z_i, i):
    per_example = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, i, 1, axis=1), params)
    return vae_flow.planar_flow(z_i[None], per_example)[0][0]

  jacobians = jax.jit(jax.vmap(jax.jacfwd(one_example)))(z, jnp.arange(5))
  sign, expected = jnp.linalg.slogdet(jacobians)
  assert np.all(np.asarray(sign) > 0)  # orientation preserved: the map stays invertible
  assert float(jnp.abs(expected).max()) > 0.1
  np.testing.assert_allclose(log_det, expected, atol=1e-5)


def _invert_planar(z_out, u_hat, w, b):
  """f^{-1} by bisection on a = w . z, where w . f(z) = a + (w . u_hat) tanh(a + b) is increasing."""
  target = jnp.sum(w * z_out, -1)
  wu = jnp.sum(w * u_hat)
  low, high = target - jnp.abs(wu) - 1.0, target + jnp.abs(wu) + 1.0
  for _ in range(60):
    mid = 0.5 * (low + high)
    above = mid + wu * jnp.tanh(mid + b) > target
    low, high = jnp.where(above, low, mid), jnp.where(above, mid, high)
  a = 0.5 * (low + high)
  return z_out - u_hat * jnp.tanh(a + b)[..., None]


def test_planar_posterior_density_integrates_to_one():
  # One planar map with w . u = -1.5 before the constraint: unconstrained, the map
  # would fold the plane. Constrained (w . u_hat = -0.80), q_1(z') = q_0(f^{-1}(z')) / |det|
  # must integrate to 1 on a grid.
  w = jnp.array([1.5, -0.5])
  u = -1.5 * w / jnp.sum(w * w)
  b = 0.3
  u_hat = vae_flow.invertible_u(u, w)
  mean, std = jnp.array([0.5, -0.2]), jnp.array([0.8, 1.2])
  ticks = jnp.linspace(-8.0, 8.0, 401)
  grid = jnp.stack(jnp.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
  z0 = _invert_planar(grid, u_hat, w, b)
  params = vae_flow.PlanarParams(u[None, None], w[None, None], jnp.full((1, 1, 1), b))
  z_back, log_det = vae_flow.planar_flow(z0, params)
  np.testing.assert_allclose(z_back, grid, atol=1e-4)
  log_q = gaussian_log_prob(z0, mean, std).sum(-1) - log_det
  total = float(jnp.exp(log_q).sum() * (ticks[1] - ticks[0]) ** 2)
  assert abs(total - 1.0) < 2e-3, total
  assert float(jnp.abs(log_det).max()) > 0.5  # the map really changes volume


def _vae_flow_config(**model):
  """A flow VAE's config.model, resolved: every field of vae_flow.default_model_config()."""
  m = vae_flow.default_model_config()
  m.update(dict(latent_size=2, encoder_sizes=(8,), decoder_sizes=(8,), num_flows=3, eval_iwae_samples=4))
  m.update(model)
  return m


@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_flow_vae_kl_term_is_log_q_minus_log_prior_by_change_of_variables(flow):
  info = task_lib.DataInfo(input_shape=(2, 2, 1), num_classes=10, num_train=10)
  model = vae_flow.FlowVAE(_vae_flow_config(flow=flow), info.input_shape)
  networks = model.networks
  x = jnp.array([[[[1.0], [0.0]], [[0.0], [1.0]]]] * 3)
  params = jax.jit(networks.init)(jax.random.PRNGKey(0), x)

  @jax.jit
  def terms_and_by_hand(params, rng):
    _, kl = model.elbo_terms(params, rng, x, x)
    mean, std, flow_inputs = networks.encode(params, x)
    z0 = mean + std * jax.random.normal(rng, mean.shape)  # the draw elbo_terms makes
    z, log_det = networks.flow(params, z0, flow_inputs)
    log_q = gaussian_log_prob(z0, mean, std).sum(-1) - log_det
    return kl, log_q - gaussian_log_prob(z, 0.0, 1.0).sum(-1), log_det

  kl, expected, log_det = terms_and_by_hand(params, jax.random.PRNGKey(1))
  assert float(jnp.abs(log_det).min()) > 1e-3  # the flow changes the density
  np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-5)


def test_flow_vae_bad_config_is_an_error():
  info = task_lib.DataInfo(input_shape=(4,), num_classes=10, num_train=10)
  with pytest.raises(ValueError, match="num_flows"):
    vae_flow.make_task(_vae_flow_config(num_flows=0), info)
  with pytest.raises(ValueError, match="plain VAE only"):
    vae_flow.make_task(_vae_flow_config(conditional=True), info)
  with pytest.raises(ValueError, match="unknown flow 'maf'; choose one of planar, iaf"):
    vae_flow.make_task(_vae_flow_config(flow="maf"), info)
  with pytest.raises(ValueError, match="iaf_hidden_size must be >= 1"):
    vae_flow.make_task(_vae_flow_config(flow="iaf", iaf_hidden_size=0), info)


# ---------------------------------------------------------------- inverse autoregressive flow


@pytest.mark.parametrize("dim, hidden", [(5, 12), (2, 3), (1, 4)])
def test_made_masks_let_output_i_see_exactly_the_earlier_inputs(dim, hidden):
  to_hidden, to_output = vae_flow.made_masks(dim, hidden)
  paths = to_hidden @ to_output  # [input j, output i]: number of hidden units linking them
  earlier = np.tril(np.ones((dim, dim)), -1).T  # j < i
  np.testing.assert_array_equal(paths > 0, earlier > 0)


def _iaf_jacobian(num_steps, dim=4, hidden=10, reverse_only=False, seed=0):
  """(z0, context, z_T, log_det, jacobian dz_T/dz0 per example) of a random IAF."""

  def forward(z, context):
    if reverse_only:
      z, log_det = vae_flow.IAFStep(hidden, reverse=True)(z, context)
      return z, log_det
    return vae_flow.iaf(z, context, num_steps, hidden)

  net = hk.without_apply_rng(hk.transform(forward))
  z0 = jax.random.normal(jax.random.PRNGKey(seed), (3, dim))
  context = jax.random.normal(jax.random.PRNGKey(seed + 1), (3, 6))
  params = _perturbed(net.init(jax.random.PRNGKey(seed + 2), z0, context), jax.random.PRNGKey(seed + 3), 0.3)
  z, log_det = net.apply(params, z0, context)
  one = lambda z_i, c_i: net.apply(params, z_i[None], c_i[None])[0][0]
  jacobian = jax.vmap(jax.jacfwd(one))(z0, context)
  return z, log_det, jacobian


def test_iaf_step_is_triangular_with_diagonal_sigma():
  _, log_det, jacobian = _iaf_jacobian(num_steps=1)
  # Output i depends on inputs <= i only: dz_i/dz_j = 0 for j > i, and the diagonal is sigma.
  np.testing.assert_allclose(np.triu(jacobian, 1), 0.0, atol=1e-7)
  assert float(np.abs(np.tril(jacobian, -1)).max()) > 1e-3  # ... and it does depend on them
  np.testing.assert_allclose(log_det, np.log(np.diagonal(jacobian, axis1=1, axis2=2)).sum(-1), rtol=1e-5)
  # A reversed step is autoregressive in the reverse order: upper triangular.
  _, _, reversed_jacobian = _iaf_jacobian(num_steps=1, reverse_only=True)
  np.testing.assert_allclose(np.tril(reversed_jacobian, -1), 0.0, atol=1e-7)


def test_iaf_log_det_matches_autodiff_jacobian():
  _, log_det, jacobian = _iaf_jacobian(num_steps=3)
  sign, expected = np.linalg.slogdet(np.asarray(jacobian, np.float64))
  assert np.all(sign > 0)
  assert float(np.abs(np.triu(jacobian, 1)).max()) > 1e-3  # alternating orders: a full Jacobian
  np.testing.assert_allclose(log_det, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- through the loop


def _read_final_metrics(workdir):
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  return {k: v for line in lines for k, v in line.items()}  # later lines win


def _run_script(script, workdir, report_name, *flags):
  """Runs scripts/<script> --workdir=workdir *flags and returns the JSON report it wrote there."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", script)
  result = subprocess.run(
    [sys.executable, path, f"--workdir={workdir}", *flags],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  with open(os.path.join(workdir, report_name), encoding="utf-8") as f:
    return json.load(f)


@pytest.mark.slow
def test_fit_moons_beats_a_gaussian_fit(tmp_path):
  config = bnnjax.base_config()
  config.data.name = "moons"
  config.model = flow_lib.default_model_config()
  config.model.num_coupling_layers, config.model.hidden_sizes = 6, (64, 64)
  config.batch_size, config.num_steps, config.eval_every = 256, 600, 600
  config.checkpoint_every, config.log_every = 600, 600
  config.optimizer.lr = 3e-3
  config.progress_bar = False
  bnnjax.fit(config, str(tmp_path))
  test_log_lik = _read_final_metrics(str(tmp_path))["test/log_lik"]
  train_x, test_x = bnnjax.data.load("moons", "train")["x"], bnnjax.data.load("moons", "test")["x"]
  mean, cov = train_x.mean(0), np.cov(train_x, rowvar=False, bias=True)
  centred = test_x - mean
  gaussian_log_lik = np.mean(
    -0.5
    * (
      np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
      + np.linalg.slogdet(cov)[1]
      + 2 * np.log(2 * np.pi)
    )
  )
  print(f"moons after 600 steps: flow {test_log_lik:.3f}, Gaussian fit {gaussian_log_lik:.3f} nats")
  assert test_log_lik > gaussian_log_lik + 0.5, (test_log_lik, gaussian_log_lik)

  # scripts/flow_plots.py on the same run: the same figures, a grid that holds the mass, PNGs.
  report = _run_script("flow_plots.py", tmp_path, "flow_eval.json", "--grid_size=200", "--num_samples=300")
  assert report["log_lik"] == pytest.approx(test_log_lik, abs=1e-4)
  assert report["gaussian_fit_log_lik"] == pytest.approx(gaussian_log_lik, abs=1e-4)
  assert report["grid_mass"] == pytest.approx(1.0, abs=0.02)
  for name in ("flow_density.png", "flow_samples.png"):
    assert (tmp_path / name).stat().st_size > 10_000

  # The script is a thin caller of the library: Run.evaluate gives the same figures, and the
  # test log-likelihood equals the one computed directly from the model's Density.
  run = bnnjax.load(str(tmp_path))
  figures = run.evaluate(grid_size=200)["density"]
  for key in ("log_lik", "nll", "gaussian_fit_log_lik", "grid_mass", "num_test"):
    assert figures[key] == report[key], key
  direct = run.task.density.log_prob(run.params, jax.random.PRNGKey(0), jnp.asarray(test_x))
  assert figures["log_lik"] == pytest.approx(float(direct.mean()), rel=1e-5)
  np.testing.assert_allclose(run.log_prob(test_x[:5]), direct[:5], rtol=1e-5)
  assert run.sample(11).shape == (11, 2)


@pytest.mark.slow
@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_fit_flow_vae_on_digits_iwae_above_elbo(tmp_path, flow):
  config = bnnjax.base_config()
  config.data.name = "digits"
  config.model = vae_flow.default_model_config()
  config.model.update(
    dict(
      latent_size=2,
      encoder_sizes=(32,),
      decoder_sizes=(32,),
      num_flows=2,
      eval_iwae_samples=8,
      flow=flow,
      iaf_hidden_size=16,
    )
  )
  config.batch_size, config.num_steps, config.eval_every = 64, 40, 40
  config.checkpoint_every, config.log_every = 40, 40
  config.progress_bar = False
  bnnjax.fit(config, str(tmp_path))
  metrics = _read_final_metrics(str(tmp_path))
  assert np.isfinite(metrics["train/loss"])
  # IWAE_8 >= ELBO in expectation; averaged over the test split the gap exceeds the noise.
  assert metrics["test/log_px_iwae8"] > metrics["test/elbo"], metrics

  # scripts/sample.py evaluates a flow VAE run too: its own IWAE, the same identities, pictures.
  report = _run_script("sample.py", tmp_path, "vae_eval.json", "--k=20")
  assert report["model"]["flow"] == flow and report["k"] == 20
  np.testing.assert_allclose(report["elbo"], report["reconstruction"] - report["kl"], rtol=1e-5)
  assert report["elbo"] < report["log_px_iwae"] < 0, report
  for picture in ("samples.png", "reconstructions.png", "latent_scatter.png"):
    assert (tmp_path / picture).stat().st_size > 1000
  figures = bnnjax.load(str(tmp_path)).evaluate(k=20)["generative"]
  for key in ("reconstruction", "kl", "elbo", "log_px_iwae", "num_test"):
    assert figures[key] == report[key], key
