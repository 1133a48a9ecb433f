"""SWAG: running moments equal those of the snapshots; draws have the SWAG covariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ml_collections

from bnnjax.methods import swag


def snapshots(num=6, size=4):
  return np.random.default_rng(0).normal(size=(num, size)).astype(np.float32)


def collected(weights, rank, take):
  moments = swag.empty_moments({"w": jnp.zeros(weights.shape[1])}, rank)
  for w, t in zip(weights, take):
    moments = swag.add_snapshot(moments, {"w": jnp.asarray(w)}, jnp.asarray(t))
  return moments


def test_moments_are_those_of_the_snapshots_taken_and_deviations_the_last_rank_ones():
  weights, take = snapshots(), [True, False, True, True, True, True]
  moments = collected(weights, rank=3, take=take)
  kept = weights[np.array(take)]  # 5 snapshots
  assert int(moments["count"]) == 5
  np.testing.assert_allclose(moments["mean"]["w"], kept.mean(0), rtol=1e-5)
  np.testing.assert_allclose(moments["sq_mean"]["w"], (kept**2).mean(0), rtol=1e-5)
  # column of snapshot i: w_i minus the mean after it; ring slot (i - 1) % 3
  running = np.cumsum(kept, 0) / np.arange(1, 6)[:, None]
  expected = {(i - 1) % 3: kept[i - 1] - running[i - 1] for i in range(1, 6)}  # later ones overwrite
  for slot, column in expected.items():
    np.testing.assert_allclose(moments["deviations"]["w"][slot], column, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rank", [0, 3])
def test_draws_have_the_swag_covariance(rank):
  """Σ = ½ diag(w̄² − w̄²) + D Dᵀ / (2 (R − 1)) (rank ≥ 1), diag(w̄² − w̄²) (rank 0)."""
  weights = snapshots()
  moments = collected(weights, rank, [True] * 6)
  draws = jax.vmap(lambda k: swag.sample_weights(moments, {"w": jnp.zeros(4)}, k, rank))(
    jax.random.split(jax.random.PRNGKey(0), 40000)
  )["w"]
  diag = np.diag(weights.var(0))
  if rank:
    d = np.asarray(moments["deviations"]["w"]).T  # [P, R]
    expected = 0.5 * diag + d @ d.T / (2 * (rank - 1))
  else:
    expected = diag
  np.testing.assert_allclose(np.asarray(draws).mean(0), weights.mean(0), atol=0.03)
  np.testing.assert_allclose(np.cov(np.asarray(draws).T), expected, atol=0.04 * np.abs(expected).max())


def test_before_the_first_snapshot_the_draw_is_the_current_weights():
  moments = swag.empty_moments({"w": jnp.zeros(4)}, 3)
  draw = swag.sample_weights(moments, {"w": jnp.arange(4.0)}, jax.random.PRNGKey(0), 3)
  np.testing.assert_array_equal(draw["w"], np.arange(4.0))


def test_rank_and_snapshot_errors_are_one_line():
  m = ml_collections.ConfigDict({**swag.DEFAULTS, "rank": 21})
  with pytest.raises(ValueError, match=r"config.model.rank must be an integer in \[0, 20\]"):
    swag.validate(m)
  m.rank, m.collect_every = 5, 100
  with pytest.raises(ValueError, match=r"rank=5 needs at least 5 snapshots, but 300 steps with collect_ev"):
    swag.check_snapshots(m, 300)
