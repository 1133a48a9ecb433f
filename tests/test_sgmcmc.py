"""SG-MCMC against the exact posterior of conjugate Bayesian linear regression; its schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bnnjax.methods import sgmcmc


def conjugate_problem(n=200, sigma=1.0, prior_std=1.0):
  """y = X w + N(0, sigma²) with correlated features; prior N(0, prior_std² I).
  Returns X, y and the exact posterior mean and covariance."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 3)) @ np.array([[1, 0.8, 0.3], [0, 0.6, 0.5], [0, 0, 0.8]])
  y = x @ np.array([1.0, -2.0, 0.5]) + sigma * rng.normal(size=n)
  precision = x.T @ x / sigma**2 + np.eye(3) / prior_std**2
  cov = np.linalg.inv(precision)
  return x, y, cov @ x.T @ y / sigma**2, cov


def method_config(**fields):
  return ml_collections.ConfigDict({**sgmcmc.DEFAULTS, **fields})


def final_positions(m, x, y, steps, chains, sigma=1.0):
  """The last weights of `chains` independent chains of the sampler on the per-example loss
  L(w) = mean_i (y_i - x_i w)² / (2 sigma²) + |w|² / (2 prior_std² N), full batch."""
  n = len(y)
  tx = sgmcmc.langevin(m, n, steps)
  xtx, xty = jnp.asarray(x.T @ x, jnp.float32), jnp.asarray(x.T @ y, jnp.float32)

  def grad(w):
    return ((xtx @ w - xty) / sigma**2 + w / m.prior_std**2) / n

  def chain(key):
    w = jax.random.normal(key, (3,))
    state = tx.init(w)._replace(rng=key)

    def body(carry, _):
      w, state = carry
      updates, state = tx.update(grad(w), state, w)
      return (w + updates, state), None

    return jax.lax.scan(body, (w, state), None, length=steps)[0][0]

  keys = jax.random.split(jax.random.PRNGKey(1), chains)
  return np.asarray(jax.jit(jax.vmap(chain))(keys), np.float64)


@pytest.mark.parametrize(
  "sampler, step_size, steps, temperature",
  [("sgld", 0.03, 3000, 1.0), ("sghmc", 0.01, 1000, 0.5)],
)
def test_the_sampler_draws_the_exact_posterior_of_bayesian_linear_regression(
  sampler, step_size, steps, temperature
):
  """Mean within 4 Monte Carlo standard errors, variances within 12 %, the full covariance
  (correlations included) within 10 % in Frobenius norm; T scales the covariance."""
  x, y, mean, cov = conjugate_problem()
  m = method_config(
    sampler=sampler,
    step_size=step_size,
    schedule="constant",
    num_cycles=1,
    exploration=0.0,
    samples_per_cycle=1,
    temperature=temperature,
  )
  chains = 2000
  w = final_positions(m, x, y, steps, chains)
  target = temperature * cov
  standard_errors = np.sqrt(np.diag(target) / chains)
  assert np.all(np.abs(w.mean(0) - mean) < 4 * standard_errors), (w.mean(0), mean)
  sample_cov = np.cov(w.T)
  np.testing.assert_allclose(np.diag(sample_cov), np.diag(target), rtol=0.12)
  assert np.linalg.norm(sample_cov - target) < 0.1 * np.linalg.norm(target)


def test_the_cyclical_schedule_keeps_samples_at_each_cycles_end_and_explores_without_noise():
  m = method_config(num_cycles=2, exploration=0.5, samples_per_cycle=2, step_size=0.1)
  layout = sgmcmc.schedule(m, 40)  # C = 20, sampling from position 10, a sample every 5 steps
  assert layout == sgmcmc.Schedule(20, 10, 5, 4)
  slots = {s: int(sgmcmc.sample_slot(m, layout, s)) for s in range(1, 41)}
  assert {s: k for s, k in slots.items() if k >= 0} == {15: 0, 20: 1, 35: 2, 40: 3}
  etas, temps = zip(*(sgmcmc.step_size_and_temperature(m, layout, t) for t in (0, 10, 19, 20, 30)))
  np.testing.assert_allclose(etas, [0.1, 0.05, 0.05 * (np.cos(np.pi * 19 / 20) + 1), 0.1, 0.05], rtol=1e-5)
  assert [float(t) for t in temps] == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_bad_sampler_settings_are_one_line_errors():
  with pytest.raises(ValueError, match=r"config.model.sampler: unknown 'sgd'; choose one of sgld, sghmc"):
    sgmcmc.validate(method_config(sampler="sgd"))
  with pytest.raises(ValueError, match=r"config.model.momentum must lie in \[0, 1\)"):
    sgmcmc.validate(method_config(momentum=1.0))
  with pytest.raises(ValueError, match=r"leave 2 sampling steps per cycle, fewer than samples_per_cycle=3"):
    sgmcmc.schedule(method_config(num_cycles=2, exploration=0.5, samples_per_cycle=3), 8)


@pytest.mark.parametrize("sampler", ["sgld", "sghmc"])
def test_a_bfloat16_network_keeps_its_dtypes_through_a_scanned_step(sampler):
  """The sampler's state and the weights keep bfloat16 across steps (a lax.scan carry must)."""
  m = method_config(sampler=sampler, step_size=0.5, num_cycles=1, samples_per_cycle=1)
  tx = sgmcmc.langevin(m, 10, 4)
  w = jnp.ones(3, jnp.bfloat16)

  def body(carry, _):
    w, state = carry
    updates, state = tx.update(w * 0.5, state, w)
    return (w + updates.astype(w.dtype), state), None

  (w_end, state), _ = jax.jit(lambda w: jax.lax.scan(body, (w, tx.init(w)), None, length=4))(w)
  assert w_end.dtype == state.momentum.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(w_end, np.float32))) and not np.allclose(
    np.asarray(w_end, np.float32), 1.0
  )
