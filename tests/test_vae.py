"""Bernoulli VAE family: closed forms, bound orderings on a trained model, bad input, the loop."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import bnnjax
from bnnjax import data, models
from bnnjax.config import base_config, load_config_file, with_overrides
from bnnjax.distributions import bernoulli_log_prob
from bnnjax.evaluation import generative as generative_eval
from bnnjax.models import vae
from bnnjax.task import DataInfo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**model_overrides) -> ml_collections.ConfigDict:
  c = base_config()
  c.data.name = "digits"
  c.data.flatten = True
  c.model = vae.default_model_config()
  c.model.latent_size = 2
  c.model.encoder_sizes = (32,)
  c.model.decoder_sizes = (32,)
  c.model.update(model_overrides)
  return c


def toy_binary_data(num=512, pixels=16, seed=0):
  """Four binary prototypes with 5% of pixels flipped: a density a 1-D latent can fit."""
  rng = np.random.default_rng(seed)
  prototypes = rng.random((4, pixels)) < 0.5
  labels = rng.integers(0, 4, num)
  flips = rng.random((num, pixels)) < 0.05
  return (prototypes[labels] ^ flips).astype(np.float32), labels.astype(np.int32)


@pytest.fixture(scope="module")
def trained_toy_vae():
  """A 1-D-latent VAE fitted for 1500 Adam steps to the toy data (about 5 s)."""
  x, y = toy_binary_data()
  config = tiny_config(
    latent_size=1, encoder_sizes=(32,), decoder_sizes=(32,), binarize_train="none", activation="tanh"
  )
  info = DataInfo((x.shape[1],), 4, len(x), binary=True)  # as data.binarize="static" gives
  task = vae.make_task(config.model, info)
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  params = task.init(jax.random.PRNGKey(0), batch)
  optimizer = optax.adam(3e-3)

  @jax.jit
  def train(params, rng):
    def step(carry, rng):
      params, opt_state = carry
      grads = jax.grad(lambda p: task.loss(p, rng, batch, 0)[0])(params)
      updates, opt_state = optimizer.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(rng, 1500))
    return params

  params = train(params, jax.random.PRNGKey(1))
  model = vae.BernoulliVAE(config.model, info.input_shape, info.num_classes)
  return model, params, jnp.asarray(x[:64])


# ------------------------------------------------------------------ closed forms and bounds


def test_kl_to_prior_matches_closed_form_and_monte_carlo():
  # KL(N(1, 2^2) || N(0, 1)) = (4 + 1 - 1 - log 4) / 2 per dimension.
  mean, std = jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 1.0]])
  np.testing.assert_allclose(vae.kl_to_prior(mean, std), [0.5 * (4.0 - np.log(4.0))], rtol=1e-6)
  # Monte Carlo E_q[log q(z) - log p(z)] agrees with the closed form to its standard error.
  mean = jnp.array([[0.3, -1.2, 2.0]])
  std = jnp.array([[0.5, 1.5, 0.2]])
  z = vae.sample_posterior(jax.random.PRNGKey(0), mean, std, 200_000)
  estimates = vae.posterior_log_prob(z, mean, std) - vae.prior_log_prob(z)
  closed = float(vae.kl_to_prior(mean, std)[0])
  stderr = float(estimates.std() / np.sqrt(estimates.shape[0]))
  assert abs(float(estimates.mean()) - closed) < 4 * stderr + 1e-3, (estimates.mean(), closed)


def test_iwae_bound_is_a_stable_log_mean_exp():
  # log((e^a + 3 e^a) / 2) = a + log 2, at scales where exp under- or overflows in float32.
  for a in (-5000.0, 0.0, 5000.0):
    log_w = jnp.array([[a], [a + np.log(3.0)]])
    np.testing.assert_allclose(vae.iwae_bound(log_w), [a + np.log(2.0)], rtol=1e-6, atol=1e-4)
  equal = jnp.full((7, 3), -123.0)
  np.testing.assert_allclose(vae.iwae_bound(equal), [-123.0] * 3, rtol=1e-6)


def test_posterior_sample_moments():
  mean, std = jnp.array([1.0, -2.0]), jnp.array([0.5, 3.0])
  z = vae.sample_posterior(jax.random.PRNGKey(3), mean, std, 100_000)
  assert z.shape == (100_000, 2)
  np.testing.assert_allclose(z.mean(0), mean, atol=0.03)
  np.testing.assert_allclose(z.std(0), std, rtol=0.02)


def test_log_likelihood_sums_bernoulli_over_pixels():
  logits = jnp.zeros((2, 4, 4))  # p = 1/2 per pixel: log p(x) = 16 log(1/2) for any binary x
  x = jnp.stack([jnp.zeros((4, 4)), jnp.ones((4, 4))])
  np.testing.assert_allclose(vae.log_likelihood(logits, x, 2), [16 * np.log(0.5)] * 2, rtol=1e-6)
  np.testing.assert_allclose(vae.log_likelihood(logits, x, 2), bernoulli_log_prob(logits, x).sum((1, 2)))


@pytest.fixture(scope="module")
def toy_log_weights(trained_toy_vae):
  """4000 log importance weights per example, [4000, 64]: split into disjoint groups
  of k they give 4000/k independent IWAE_k estimates each."""
  model, params, x = trained_toy_vae
  return jax.jit(lambda rng: model.log_weights(params, rng, x, k=4000, chunk_size=500))(jax.random.PRNGKey(5))


def iwae_mean(log_weights, k):
  groups = log_weights.reshape((-1, k) + log_weights.shape[1:])
  return float(vae.iwae_bound(groups, axis=1).mean())


def test_iwae_one_sample_averages_to_the_analytic_elbo(trained_toy_vae, toy_log_weights):
  """E[IWAE_1] = E_q[log p(x|z)] - KL: the two estimators of one ELBO agree."""
  model, params, x = trained_toy_vae
  rec, kl = jax.jit(jax.vmap(lambda r: model.elbo_terms(params, r, x, x)))(
    jax.random.split(jax.random.PRNGKey(6), 4000)
  )
  np.testing.assert_allclose(iwae_mean(toy_log_weights, 1), vae.elbo(rec, kl).mean(), atol=0.03)


def test_iwae_grows_with_k_and_approaches_the_exact_log_likelihood(trained_toy_vae, toy_log_weights):
  """ELBO <= IWAE_5 <= IWAE_50 <= IWAE_2000 ~= log p(x), with log p(x) by quadrature in 1-D."""
  model, params, x = trained_toy_vae
  # Means over 64 examples x (4000 / k) independent groups: MC error far below the gaps.
  bound = {k: iwae_mean(toy_log_weights, k) for k in (1, 5, 50, 2000)}
  # log p(x) = log int p(x|z) N(z; 0, 1) dz on a fine grid (the latent is 1-D).
  grid = jnp.linspace(-8.0, 8.0, 4001)[:, None]
  decode = jax.jit(jax.vmap(lambda z: model.networks.decode(params, jnp.broadcast_to(z, (len(x), 1)))))
  log_joint = vae.log_likelihood(decode(grid), x, 1) + vae.prior_log_prob(grid)[:, None]
  exact = float((jax.nn.logsumexp(log_joint, axis=0) + jnp.log(grid[1, 0] - grid[0, 0])).mean())

  assert bound[1] + 0.01 < bound[5] < bound[50] <= exact + 0.01, (bound, exact)
  assert bound[50] - bound[1] > 0.05, bound  # the trained posterior is not exact: a real gap
  assert abs(bound[2000] - exact) < 0.02, (bound, exact)


def test_chunked_log_weights_match_one_vmap(trained_toy_vae):
  model, params, x = trained_toy_vae
  rng = jax.random.PRNGKey(11)
  a = model.log_weights(params, rng, x, k=30, chunk_size=30)
  b = model.log_weights(params, rng, x, k=30, chunk_size=7)  # 5 chunks, the last one cut
  assert a.shape == b.shape == (30, len(x))
  np.testing.assert_allclose(a, b, rtol=1e-5)


# ------------------------------------------------------------------------------ samples


def test_generated_samples_shapes_and_ranges():
  config = tiny_config(conditional=True)
  model = vae.BernoulliVAE(config.model, (8, 8, 1), num_classes=10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32))
  labels = np.arange(10).repeat(3)
  probs = model.generate(params, jax.random.PRNGKey(1), 30, labels)
  draws = model.generate(params, jax.random.PRNGKey(1), 30, labels, binary=True)
  assert probs.shape == draws.shape == (30, 8, 8, 1)
  assert float(probs.min()) > 0.0 and float(probs.max()) < 1.0
  assert set(np.unique(draws)) <= {0.0, 1.0}
  # Different labels give different images from the same codes: the label is used.
  shifted = model.generate(params, jax.random.PRNGKey(1), 30, (labels + 1) % 10)
  assert float(jnp.abs(probs - shifted).max()) > 1e-4


@pytest.mark.parametrize("label", [10, -1])
def test_cvae_rejects_labels_outside_the_classes(label):
  config = tiny_config(conditional=True)
  model = vae.BernoulliVAE(config.model, (64,), num_classes=10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)), jnp.zeros((1,), jnp.int32))
  with pytest.raises(ValueError, match=f"label {label} outside the classes 0..9"):
    model.generate(params, jax.random.PRNGKey(1), 2, [3, label])


def test_unconditional_generation_needs_no_labels_and_conditional_does():
  model = vae.BernoulliVAE(tiny_config(conditional=True).model, (64,), num_classes=10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)), jnp.zeros((1,), jnp.int32))
  with pytest.raises(ValueError, match="needs labels"):
    model.generate(params, jax.random.PRNGKey(1), 2)


def test_mask_corruption_drops_the_asked_fraction_and_only_drops():
  model = vae.BernoulliVAE(tiny_config(corruption="mask", corruption_level=0.3).model, (1000,))
  x = jnp.ones((100, 1000))
  noisy = model.corrupt(jax.random.PRNGKey(0), x)
  assert set(np.unique(noisy)) <= {0.0, 1.0}
  np.testing.assert_allclose(1.0 - float(noisy.mean()), 0.3, atol=0.005)  # 1e5 pixels
  x = (jax.random.uniform(jax.random.PRNGKey(1), (100, 1000)) < 0.2).astype(jnp.float32)
  assert float((model.corrupt(jax.random.PRNGKey(2), x) * (1 - x)).max()) == 0.0


def test_dynamic_binarisation_draws_pixels_with_their_grey_level():
  grey = jnp.full((200_000, 1), 0.3)
  drawn = vae.dynamic_binarize(jax.random.PRNGKey(0), grey)
  assert set(np.unique(drawn)) == {0.0, 1.0}
  np.testing.assert_allclose(float(drawn.mean()), 0.3, atol=0.005)


def test_denoiser_loss_is_reconstruction_only():
  config = tiny_config(variational=False, corruption="mask", corruption_level=0.5)
  task = vae.make_task(config.model, DataInfo((16,), 4, 100))
  x, y = toy_binary_data(num=32)
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  params = task.init(jax.random.PRNGKey(0), batch)
  loss, metrics = task.loss(params, jax.random.PRNGKey(1), batch, 0)
  np.testing.assert_allclose(loss, -metrics["reconstruction"], rtol=1e-6)
  assert "kl" not in metrics and "elbo" not in metrics
  evaluated = task.evaluate(params, jax.random.PRNGKey(1), batch)
  assert set(evaluated) == {"reconstruction", "reconstruction_clean_input"}


def test_kl_warmup_scales_only_the_kl_term():
  config = tiny_config(kl_warmup_steps=100)
  task = vae.make_task(config.model, DataInfo((16,), 4, 100))
  x, y = toy_binary_data(num=32)
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  params = task.init(jax.random.PRNGKey(0), batch)
  loss, m = task.loss(params, jax.random.PRNGKey(1), batch, jnp.asarray(49))
  np.testing.assert_allclose(m["kl_weight"], 0.5)
  np.testing.assert_allclose(loss, -(m["reconstruction"] - 0.5 * m["kl"]), rtol=1e-5)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(latent_size=0), "config.model.latent_size must be positive, got 0"),
    (dict(latent_size=-3), "config.model.latent_size must be positive, got -3"),
    (dict(encoder_sizes=(32, 0)), "config.model.encoder_sizes must be positive"),
    (dict(activation="swish"), "config.model.activation: unknown activation 'swish'"),
    (dict(corruption="blur"), "config.model.corruption must be one of"),
    (dict(corruption="mask", corruption_level=1.0), "corruption_level must be < 1"),
    (dict(binarize_train="static"), "config.model.binarize_train must be one of"),
  ],
)
def test_bad_model_config_is_a_one_line_error(overrides, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    vae.make_task(tiny_config(**overrides).model, DataInfo((64,), 10, 100))


def test_grey_data_without_binarisation_is_rejected():
  config = tiny_config(binarize_train="none")
  with pytest.raises(ValueError, match="Bernoulli decoder needs binary data"):
    vae.make_task(config.model, DataInfo((64,), 10, 100, binary=False))
  vae.make_task(config.model, DataInfo((64,), 10, 100, binary=True))
  with pytest.raises(ValueError, match="Bernoulli decoder needs binary data"):
    vae.check_binary(np.array([0.0, 0.5, 1.0]))
  vae.check_binary(np.array([0.0, 1.0, 1.0]))


def test_conditional_needs_labelled_data():
  with pytest.raises(ValueError, match="conditional needs labelled data"):
    vae.make_task(tiny_config(conditional=True).model, DataInfo((2,), 0, 100))


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_number_of_importance_samples_must_be_a_positive_integer(k, trained_toy_vae):
  model, params, x = trained_toy_vae
  with pytest.raises(ValueError, match="must be an integer >= 1"):
    model.iwae(params, jax.random.PRNGKey(0), x, k=k)


# ------------------------------------------------------------------ through the one loop

_TINY_OVERRIDES = {
  "data.name": "digits",
  "model.latent_size": 2,
  "model.encoder_sizes": (32,),
  "model.decoder_sizes": (32,),
  "batch_size": 32,
  "num_steps": 20,
  "eval_every": 10,
  "checkpoint_every": 10,
  "progress_bar": False,
  "optimizer.schedule": "constant",
}


def tiny_loop_config(config_file="vae_mnist.py", **overrides):
  """A config of configs/ shrunk to 20 steps on sklearn digits (8x8, no download)."""
  config = load_config_file(os.path.join(REPO, "configs", config_file)).get_config()
  return with_overrides(config, {**_TINY_OVERRIDES, **overrides})


def run_script(script, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  result = subprocess.run(
    [sys.executable, os.path.join(REPO, "scripts", script), *args],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  return result


@pytest.mark.slow
def test_fit_resumed_is_bit_identical_and_sample_script_reports(tmp_path):
  config = tiny_loop_config()
  straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
  bnnjax.fit(config, straight)
  bnnjax.fit(config, interrupted, stop_after=10)
  bnnjax.fit(config, interrupted)  # resumes at step 10
  a, _ = bnnjax.restore_params(straight)
  b, _ = bnnjax.restore_params(interrupted)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)

  with open(os.path.join(straight, "metrics.jsonl"), encoding="utf-8") as f:
    test_rows = [row for row in map(json.loads, f) if "test/elbo" in row]
  assert [row["step"] for row in test_rows] == [10, 20]
  for row in test_rows:  # the loop's means keep ELBO = reconstruction - KL, KL >= 0
    assert row["test/kl"] > 0
    np.testing.assert_allclose(row["test/elbo"], row["test/reconstruction"] - row["test/kl"], rtol=1e-5)

  run_script("sample.py", f"--workdir={straight}", "--k=20")
  with open(os.path.join(straight, "vae_eval.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert report["k"] == 20 and report["num_test"] == len(data.load("digits", "test")["y"])
  np.testing.assert_allclose(report["elbo"], report["reconstruction"] - report["kl"], rtol=1e-5)
  assert report["nll_iwae"] == -report["log_px_iwae"] and 0 < report["nll_iwae"] < 64 * np.log(2)
  for picture in ("samples.png", "reconstructions.png", "latent_scatter.png"):
    assert os.path.getsize(os.path.join(straight, picture)) > 1000
  # The script is a thin caller of the library: Run.evaluate gives the same figures.
  figures = bnnjax.load(straight).evaluate(k=20)["generative"]
  for key in ("reconstruction", "kl", "elbo", "log_px_iwae", "nll_iwae", "num_test", "k"):
    assert figures[key] == report[key], key


# ------------------------------------------------------------ the declared model, through Run


def test_the_vae_family_declares_its_model_and_generative_capability():
  assert models.get("vae") is vae.MODEL and vae.MODEL.default_config().name == "vae"
  task = vae.make_task(tiny_config(conditional=True).model, DataInfo((64,), 10, 100))
  assert task.predictor is None and task.density is None
  cvae = task.generative
  assert cvae.conditional and cvae.variational and cvae.latent_size == 2
  x, y = jnp.asarray(toy_binary_data(num=8, pixels=64)[0]), jnp.arange(8) % 10
  params = task.init(jax.random.PRNGKey(0), {"x": x, "y": y})
  assert cvae.sample(params, jax.random.PRNGKey(1), 3, [0, 1, 2]).shape == (3, 64)
  assert cvae.log_likelihood(params, jax.random.PRNGKey(1), x, y, k=4).shape == (8,)
  assert cvae.reconstruct(params, jax.random.PRNGKey(1), x, y).shape == cvae.encode(params, x, y).shape[
    :1
  ] + (64,)
  with pytest.raises(ValueError, match="label 10 outside the classes 0..9"):
    cvae.log_likelihood(params, jax.random.PRNGKey(1), x, y + 3, k=4)


def test_a_deterministic_autoencoder_has_no_samples_and_no_log_likelihood():
  m = tiny_config(variational=False, corruption="mask", corruption_level=0.5).model
  task = vae.make_task(m, DataInfo((16,), 4, 100))
  x = jnp.asarray(toy_binary_data(num=8)[0])
  params = task.init(jax.random.PRNGKey(0), {"x": x, "y": jnp.zeros(8, jnp.int32)})
  dae = task.generative
  assert not dae.variational
  for call in (
    lambda: dae.sample(params, jax.random.PRNGKey(1), 2),
    lambda: dae.log_likelihood(params, jax.random.PRNGKey(1), x, k=2),
  ):
    with pytest.raises(ValueError, match="needs a variational model; this is a deterministic autoencoder"):
      call()
  # reconstruct applies the model's corruption (drawn with rng); elbo_terms scores the clean x.
  model = vae.BernoulliVAE(m, (16,))
  rng = jax.random.PRNGKey(2)
  np.testing.assert_allclose(
    dae.reconstruct(params, rng, x), model.reconstruct(params, model.corrupt(rng, x)), rtol=1e-6
  )
  clean, _ = dae.elbo_terms(params, rng, x)
  np.testing.assert_allclose(clean, model.elbo_terms(params, rng, x, x)[0], rtol=1e-6)


def figures_by_hand(run, k: int, seed: int = 0, batch_size: int = 100) -> dict:
  """scripts/sample.py's figures as it always computed them, from BernoulliVAE's methods, on
  the test split of the run's *data* seed, binarised with default_rng(seed)."""
  model = vae.BernoulliVAE(run.config.model, run.info.input_shape, run.info.num_classes)
  test = data.load("digits", "test", flatten=True, seed=run.config.data.seed)
  x = (np.random.default_rng(seed).random(test["x"].shape, dtype=np.float32) < test["x"]).astype(np.float32)
  metrics_rng = jax.random.split(jax.random.PRNGKey(seed), 3)[0]
  sums = np.zeros(4)
  for i, start in enumerate(range(0, len(x), batch_size)):
    xb = jnp.asarray(x[start : start + batch_size])
    term_rng, _, iwae_rng = jax.random.split(jax.random.fold_in(metrics_rng, i), 3)
    rec, kl = model.elbo_terms(run.params, term_rng, xb, xb)
    log_px = model.iwae(run.params, iwae_rng, xb, k=k)
    sums += [float(rec.sum()), float(kl.sum()), float((rec - kl).sum()), float(log_px.sum())]
  return dict(zip(("reconstruction", "kl", "elbo", "log_px_iwae"), sums / len(x)), num_test=len(x))


@pytest.fixture(scope="module")
def seeded_vae_run(tmp_path_factory):
  """A tiny digits VAE trained with seed 1 and data seed 0: the two seeds draw different splits."""
  workdir = str(tmp_path_factory.mktemp("vae_seed1"))
  bnnjax.fit(tiny_loop_config(seed=1), workdir)
  return bnnjax.load(workdir)


@pytest.mark.slow
def test_run_evaluate_equals_the_figures_of_the_model_functions_on_the_data_seeds_split(seeded_vae_run):
  run = seeded_vae_run
  assert run.config.seed == 1 and run.config.data.seed == 0
  # The training seed's split is another split (scripts/sample.py used to load it).
  assert not np.array_equal(data.load("digits", "test", seed=1, flatten=True)["x"], run.test_data()["x"])
  report = run.evaluate(k=5)
  figures = report["generative"]
  expected = figures_by_hand(run, k=5)
  assert report["num_examples"] == figures["num_test"] == expected.pop("num_test")
  for key, value in expected.items():
    np.testing.assert_allclose(figures[key], value, rtol=1e-5, err_msg=key)
  assert figures["nll_iwae"] == -figures["log_px_iwae"] and figures["k"] == 5
  assert "plots" not in figures  # no out_dir, no pictures


@pytest.mark.slow
def test_run_sample_and_log_prob_of_a_vae(seeded_vae_run):
  run = seeded_vae_run
  images = run.sample(7, rng=3)
  assert images.shape == (7, 64) and 0.0 < images.min() and images.max() < 1.0
  x = run.test_data()["x"][:3]
  x = (x > 0.5).astype(np.float32)
  model = vae.BernoulliVAE(run.config.model, run.info.input_shape, run.info.num_classes)
  np.testing.assert_allclose(
    run.log_prob(x, k=4, rng=2), model.iwae(run.params, jax.random.PRNGKey(2), jnp.asarray(x), k=4), rtol=1e-5
  )


@pytest.mark.slow
def test_a_classifier_run_has_no_samples_one_line_errors(tmp_path):
  config = with_overrides(
    base_config(),
    {
      "data.name": "digits",
      "model.name": "mlp",
      "model.hidden_sizes": (16,),
      "num_steps": 20,
      "batch_size": 32,
      "eval_every": 20,
      "checkpoint_every": 20,
      "progress_bar": False,
    },
  )
  run = bnnjax.fit(config, str(tmp_path))
  for call in (lambda: run.sample(4), lambda: run.log_prob(np.zeros((2, 8, 8, 1)))):
    with pytest.raises(ValueError) as error:
      call()
    assert "\n" not in str(error.value) and "'mlp'" in str(error.value), str(error.value)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  result = subprocess.run(
    [sys.executable, os.path.join(REPO, "scripts", "sample.py"), f"--workdir={tmp_path}"],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert result.returncode != 0
  assert (
    result.stderr.strip().splitlines()[-1].startswith("error: ") and "not a generative model" in result.stderr
  )


@pytest.mark.slow
def test_the_denoiser_reports_both_reconstructions_and_draws_pictures(tmp_path):
  config = tiny_loop_config("dae_mnist.py")
  run = bnnjax.fit(config, str(tmp_path))
  figures = generative_eval.evaluate(
    run.task.generative,
    run.params,
    run.test_data(),
    seed=0,
    out_dir=str(tmp_path),
    info=run.info,
    num_test=50,
  )
  assert set(figures) == {
    "reconstruction",
    "reconstruction_clean_input",
    "num_test",
    "test_binarization",
    "plots",
  }
  assert figures["reconstruction"] < figures["reconstruction_clean_input"] < 0  # noise costs
  assert [os.path.basename(p) for p in figures["plots"]] == ["reconstructions.png", "latent_scatter.png"]
  # The denoiser declares its corruption, so its pictures show the corrupted row too.
  x = jnp.asarray(run.test_data()["x"][:4])
  noisy = run.task.generative.corrupt(jax.random.PRNGKey(0), x)
  assert noisy.shape == x.shape and not np.array_equal(np.asarray(noisy), np.asarray(x))
