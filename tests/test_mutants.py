"""Known-answer tests written to kill the mutants that survived the rest of the suite (issue 19).

Each test pins values that a one-line change of the code would move: closed forms worked
by hand or with numpy at float64, exact error messages, exact draws. They are small and
eager (no training), so that `mutmut run` (docs/mutation.md) can afford them per mutant.
"""

import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import optax
import scipy.special
import scipy.stats

from bnnjax import (
  checkpoint,
  data,
  distributions,
  estimators,
  metrics,
  objectives,
  posterior,
  predictive,
  priors,
)
from bnnjax.methods import dropout, ensemble, fisher, laplace, laplace_layers, sgmcmc, swag
from bnnjax.models import lenet as lenet_module
from bnnjax.task import DataInfo

LOG_2PI = math.log(2 * math.pi)


def _normal_log_pdf(x, m, s):
  return -0.5 * ((x - m) / s) ** 2 - np.log(s) - 0.5 * LOG_2PI


# --- distributions ---------------------------------------------------------------------------------------


def test_standard_normal_draws_are_standard_normal_in_the_requested_shape_and_dtype():
  draws = distributions.standard_normal(jax.random.PRNGKey(0), (200_000,))
  assert draws.shape == (200_000,) and draws.dtype == jnp.float32
  x = np.asarray(draws, np.float64)
  assert abs(x.mean()) < 0.01 and abs(x.std() - 1.0) < 0.01
  # symmetric tails at the right mass: P(|z| > 1.96) = 0.05, P(z > 1.96) = 0.025
  assert abs((np.abs(x) > 1.96).mean() - 0.05) < 0.003
  assert abs((x > 1.96).mean() - 0.025) < 0.002
  assert np.isfinite(x).all()
  half = distributions.standard_normal(jax.random.PRNGKey(0), (3, 2), jnp.bfloat16)
  assert half.shape == (3, 2) and half.dtype == jnp.bfloat16


def test_standard_normal_is_threefry_bits_through_the_documented_transform():
  key = jax.random.PRNGKey(9)
  state = jax.random.bits(key, (4,), jnp.uint32)
  _, bits = jax.lax.rng_bit_generator(
    state, (1000,), dtype=jnp.uint32, algorithm=jax.lax.RandomAlgorithm.RNG_THREE_FRY
  )
  unit = ((np.asarray(bits) >> 9) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1.0)
  lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
  uniform = np.maximum(lo, unit * (1 - lo) + lo)
  draws = distributions.standard_normal(key, (1000,))
  np.testing.assert_allclose(
    draws, np.sqrt(2.0) * scipy.special.erfinv(uniform.astype(np.float64)), rtol=1e-4, atol=1e-5
  )
  # bit for bit: the same float32 steps through XLA's erf_inv
  np.testing.assert_array_equal(draws, np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(jnp.asarray(uniform)))


def test_standard_normal_is_a_pure_function_of_the_key():
  a = distributions.standard_normal(jax.random.PRNGKey(3), (5,))
  b = distributions.standard_normal(jax.random.PRNGKey(3), (5,))
  c = distributions.standard_normal(jax.random.PRNGKey(4), (5,))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_gaussian_log_prob_kl_cross_entropy_and_entropy_against_float64_formulas():
  x, m, s = 0.7, -0.4, 1.7
  np.testing.assert_allclose(distributions.gaussian_log_prob(x, m, s), _normal_log_pdf(x, m, s), rtol=1e-6)
  mq, sq, mp, sp = 0.3, 0.5, -0.2, 1.5
  kl = np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5
  np.testing.assert_allclose(distributions.gaussian_kl(mq, sq, mp, sp), kl, rtol=1e-6)
  np.testing.assert_allclose(distributions.gaussian_kl(mq, sq, mp, sp, log_std_q=jnp.log(sq)), kl, rtol=1e-6)
  # the log std passed in is the one used (not recomputed from std_q)
  np.testing.assert_allclose(
    distributions.gaussian_kl(mq, sq, mp, sp, log_std_q=np.log(sq) + 1.0), kl - 1.0, rtol=1e-6
  )
  cross = 0.5 * LOG_2PI + np.log(sp) + ((mq - mp) ** 2 + sq**2) / (2 * sp**2)
  np.testing.assert_allclose(distributions.gaussian_cross_entropy(mq, sq, mp, sp), cross, rtol=1e-6)
  entropy = 0.5 * (1 + LOG_2PI) + np.log(sq)
  np.testing.assert_allclose(distributions.gaussian_entropy(std=sq), entropy, rtol=1e-6)
  np.testing.assert_allclose(distributions.gaussian_entropy(log_std=np.log(sq)), entropy, rtol=1e-6)
  with pytest.raises(ValueError, match=r"^gaussian_entropy takes exactly one of std and log_std$"):
    distributions.gaussian_entropy()
  with pytest.raises(ValueError, match=r"^gaussian_entropy takes exactly one of std and log_std$"):
    distributions.gaussian_entropy(std=1.0, log_std=0.0)


def test_bernoulli_and_categorical_log_probs_against_hand_values():
  logits = jnp.array([0.4, -1.3])
  p = 1 / (1 + np.exp(-np.array([0.4, -1.3])))
  x = jnp.array([0.25, 1.0])
  expected = 0.25 * np.log(p[0]) + 0.75 * np.log(1 - p[0]), np.log(p[1])
  np.testing.assert_allclose(distributions.bernoulli_log_prob(logits, x), expected, rtol=1e-6)
  logits = jnp.array([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]])
  probs = np.exp(np.asarray(logits, np.float64))
  probs /= probs.sum(-1, keepdims=True)
  np.testing.assert_allclose(
    distributions.categorical_log_prob(logits, jnp.array([2, 1])),
    [np.log(probs[0, 2]), np.log(probs[1, 1])],
    rtol=1e-6,
  )
  # [K, B, C] logits: the label indexes the last axis
  stacked = jnp.stack([logits, logits[::-1]])
  np.testing.assert_allclose(
    distributions.categorical_log_prob(stacked, jnp.array([[2, 1], [0, 0]])),
    np.log([[probs[0, 2], probs[1, 1]], [probs[1, 0], probs[0, 0]]]),
    rtol=1e-6,
  )


# --- objectives ------------------------------------------------------------------------------------------


def test_kl_weight_is_a_product_of_its_factors_and_rises_as_step_over_warmup():
  assert float(objectives.kl_weight(30, beta=2.0, warmup_steps=40, temperature=0.5)) == pytest.approx(0.75)
  assert float(objectives.kl_weight(30, beta=3.0, temperature=0.5)) == pytest.approx(1.5)
  assert float(objectives.kl_weight(1, warmup_steps=1)) == 1.0
  assert float(objectives.kl_weight(0, warmup_steps=1)) == 0.0
  # no warm-up at step 0: the full weight (a warm-up of 0 steps must not divide 0 by 0)
  assert float(objectives.kl_weight(0, beta=2.0)) == 2.0


def test_predictive_nlls_of_unequal_samples_use_log_k():
  # Three samples, p(y) = 0.2, 0.5, 0.8 for the one example: -log(0.5).
  logits = jnp.log(jnp.array([[[0.2, 0.8]], [[0.5, 0.5]], [[0.8, 0.2]]]))
  np.testing.assert_allclose(
    objectives.categorical_predictive_nll(logits, jnp.array([0])), [np.log(2)], rtol=1e-6
  )
  np.testing.assert_allclose(
    objectives.categorical_nll(logits, jnp.array([0])), -np.log([0.2, 0.5, 0.8]).mean()
  )
  # two examples: one predictive NLL each, each the log of its own mixture
  two = jnp.log(jnp.array([[[0.2, 0.8], [0.6, 0.4]], [[0.4, 0.6], [0.1, 0.9]]]))
  np.testing.assert_allclose(
    objectives.categorical_predictive_nll(two, jnp.array([1, 0])), -np.log([0.7, 0.35]), rtol=1e-6
  )
  predictions = jnp.array([[0.0], [1.0], [3.0]])
  mix = np.mean([np.exp(_normal_log_pdf(1.0, m, 0.5)) for m in (0.0, 1.0, 3.0)])
  np.testing.assert_allclose(
    objectives.gaussian_predictive_nll(predictions, jnp.array([1.0]), 0.5), [-np.log(mix)], rtol=1e-5
  )


# --- priors ----------------------------------------------------------------------------------------------


def test_prior_constructors_return_the_fields_and_reject_bad_values_in_one_line():
  assert priors.gaussian_prior(2) == priors.GaussianPrior(2.0)
  assert isinstance(priors.gaussian_prior(2).scale, float)
  assert priors.gaussian_prior(0.5) == priors.GaussianPrior(0.5)
  mixture = priors.scale_mixture_prior(0.25, 1, 0.5, kl="bound")
  assert mixture == priors.ScaleMixturePrior(0.25, 1.0, 0.5, "bound")
  assert priors.scale_mixture_prior(0.5, 1.0, 2.0).kl == "mc"
  with pytest.raises(ValueError, match=r"^prior scale must be positive, got 0$"):
    priors.gaussian_prior(0)
  with pytest.raises(ValueError, match=r"^mixture weight pi must lie in \(0, 1\), got 1$"):
    priors.scale_mixture_prior(1, 1.0, 2.0)
  with pytest.raises(ValueError, match=r"^mixture weight pi must lie in \(0, 1\), got 0$"):
    priors.scale_mixture_prior(0, 1.0, 2.0)
  with pytest.raises(ValueError, match=r"^mixture scale1 must be positive, got 0$"):
    priors.scale_mixture_prior(0.5, 0, 2.0)
  with pytest.raises(ValueError, match=r"^mixture scale2 must be positive, got -1$"):
    priors.scale_mixture_prior(0.5, 1.0, -1)
  with pytest.raises(ValueError, match=r"^mixture kl must be one of mc, bound, got 'exact'$"):
    priors.scale_mixture_prior(0.5, 1.0, 2.0, kl="exact")


def test_layerwise_prior_sorts_its_modules_and_names_a_bad_one():
  g, m = priors.GaussianPrior(1.0), priors.ScaleMixturePrior(0.5, 1.0, 0.1)
  assert priors.layerwise_prior({"b": g, "a": m}) == priors.LayerwisePrior((("a", m), ("b", g)))
  q = priors.PosteriorPrior({"mean": {}, "rho": {}})
  assert priors.layerwise_prior({"a": q}).by_module == (("a", q),)
  with pytest.raises(
    ValueError,
    match=r"^layerwise prior for 'x' must be a Gaussian, scale-mixture or posterior prior, got float$",
  ):
    priors.layerwise_prior({"x": 1.0})


def test_prior_log_prob_sums_every_leaf_against_float64_formulas():
  params = {"a": {"w": jnp.array([0.5, -1.0])}, "b": {"w": jnp.array([[3.0]])}}
  values = np.array([0.5, -1.0, 3.0])
  np.testing.assert_allclose(
    priors.log_prob(params, priors.GaussianPrior(1.5)), _normal_log_pdf(values, 0, 1.5).sum(), rtol=1e-6
  )
  mixture = priors.ScaleMixturePrior(0.25, 2.0, 0.3)
  density = 0.25 * np.exp(_normal_log_pdf(values, 0, 2.0)) + 0.75 * np.exp(_normal_log_pdf(values, 0, 0.3))
  np.testing.assert_allclose(priors.log_prob(params, mixture), np.log(density).sum(), rtol=1e-6)
  np.testing.assert_allclose(
    priors.scale_mixture_log_prob(jnp.asarray(values), mixture), np.log(density), rtol=1e-6
  )
  with pytest.raises(ValueError, match=r"^log_prob: unsupported prior PosteriorPrior$"):
    priors.log_prob(params, priors.PosteriorPrior({}))


# --- posterior -------------------------------------------------------------------------------------------


def _params():
  return {"lin": {"w": jnp.array([[0.5, -1.0]]), "b": jnp.array([0.25])}, "out": {"w": jnp.array([[2.0]])}}


def test_init_posterior_sets_every_std_exactly_in_both_scales():
  q = posterior.init_posterior(_params(), 0.3)
  assert sorted(q) == ["mean", "rho"]
  np.testing.assert_allclose(q["rho"]["lin"]["w"], np.log(np.expm1(0.3)) * np.ones((1, 2)), rtol=1e-6)
  np.testing.assert_allclose(posterior.stds(q)["out"]["w"], [[0.3]], rtol=1e-6)
  q = posterior.init_posterior(_params(), 0.3, bayesian="all", scale="log_std")
  assert sorted(q) == ["log_std", "mean"]
  np.testing.assert_allclose(q["log_std"]["lin"]["b"], [np.log(0.3)], rtol=1e-6)
  assert q["log_std"]["lin"]["b"].dtype == jnp.float32
  np.testing.assert_allclose(posterior.inverse_softplus(jnp.float32(2.0)), np.log(np.expm1(2.0)), rtol=1e-6)


def test_init_posterior_errors_name_the_bad_value():
  with pytest.raises(ValueError, match=r"^init_std must be positive, got 0.0$"):
    posterior.init_posterior(_params(), 0.0)
  with pytest.raises(ValueError, match=r"^unknown posterior scale 'exp'; choose one of softplus, log_std$"):
    posterior.init_posterior(_params(), 0.1, scale="exp")
  with pytest.raises(ValueError, match=r"^bayesian must be None, 'all' or a predicate, got 'some'$"):
    posterior.init_posterior(_params(), 0.1, bayesian="some")
  with pytest.raises(ValueError, match=r"^bayesian predicate selected no parameters$"):
    posterior.init_posterior(_params(), 0.1, bayesian=lambda m, n, v: False)


def test_scale_keys_and_posterior_recognition():
  q = posterior.init_posterior(_params(), 0.1, bayesian=lambda m, n, v: m == "lin")
  assert posterior.is_posterior(q) and posterior.scale_key(q) == "rho"
  assert not posterior.is_posterior({"mean": {}, "rho": {}, "log_std": {}})
  assert not posterior.is_posterior({"mean": {}})
  assert not posterior.is_posterior({"rho": {}})
  assert not posterior.is_posterior([("mean", {}), ("rho", {})])
  with pytest.raises(
    ValueError, match=r"^a posterior holds 'mean' and one of \['rho', 'log_std'\]; got keys \['mean'\]$"
  ):
    posterior.scale_key({"mean": {}})
  assert sorted(posterior.bayesian_means(q)) == ["lin"]
  assert posterior.mean_params(q) is q["mean"]


def _posterior(scale):
  """Two Bayesian leaves with hand-chosen stds; the "out" module is a point estimate."""
  std = {"lin": {"w": np.array([[0.5, 2.0]]), "b": np.array([0.25])}}
  to_param = (lambda s: np.log(np.expm1(s))) if scale == "rho" else np.log
  return {
    "mean": _params(),
    scale: jax.tree_util.tree_map(lambda s: jnp.asarray(to_param(s), jnp.float32), std),
  }


@pytest.mark.parametrize("scale", ["rho", "log_std"])
def test_stds_log_prob_entropy_and_kl_against_float64_formulas(scale):
  q = _posterior(scale)
  m = np.array([0.5, -1.0, 0.25])
  s = np.array([0.5, 2.0, 0.25])
  np.testing.assert_allclose(posterior.stds(q)["lin"]["w"], [[0.5, 2.0]], rtol=1e-5)
  np.testing.assert_allclose(posterior.log_stds(q)["lin"]["b"], [np.log(0.25)], rtol=1e-5)
  params = {"lin": {"w": jnp.array([[1.0, 0.0]]), "b": jnp.array([0.0])}, "out": {"w": jnp.array([[9.0]])}}
  x = np.array([1.0, 0.0, 0.0])
  np.testing.assert_allclose(posterior.log_prob(q, params), _normal_log_pdf(x, m, s).sum(), rtol=1e-5)
  np.testing.assert_allclose(posterior.entropy(q), (0.5 * (1 + LOG_2PI) + np.log(s)).sum(), rtol=1e-5)
  sp = 1.5
  kl = (np.log(sp / s) + (s**2 + m**2) / (2 * sp**2) - 0.5).sum()
  np.testing.assert_allclose(posterior.kl(q, priors.GaussianPrior(sp)), kl, rtol=1e-5)
  # a previous posterior as prior: KL to itself is 0, to a shifted copy the mean term only
  np.testing.assert_allclose(posterior.kl(q, priors.PosteriorPrior(q)), 0.0, atol=1e-6)
  shifted = {"mean": jax.tree_util.tree_map(lambda w: w + 1.0, q["mean"]), scale: q[scale]}
  np.testing.assert_allclose(
    posterior.kl(q, priors.PosteriorPrior(shifted)), (1 / (2 * s**2)).sum(), rtol=1e-5
  )
  # the mixture bound: closed form of -H[q] - logsumexp_k(log pi_k - CE(q, N(0, s_k^2)))
  mix = priors.ScaleMixturePrior(0.3, 1.0, 0.2, "bound")
  ce = lambda sk: 0.5 * LOG_2PI + np.log(sk) + (m**2 + s**2) / (2 * sk**2)
  bound = -(0.5 * (1 + LOG_2PI) + np.log(s)) - np.logaddexp(np.log(0.3) - ce(1.0), np.log(0.7) - ce(0.2))
  np.testing.assert_allclose(posterior.kl(q, mix), bound.sum(), rtol=1e-5)


def test_sample_params_is_mean_plus_std_times_the_documented_normals():
  q = _posterior("log_std")
  key = jax.random.PRNGKey(5)
  draw = posterior.sample_params(q, key)
  means = posterior.bayesian_means(q)
  leaves, treedef = jax.tree_util.tree_flatten(means)
  keys = jax.random.split(key, len(leaves))
  eps = jax.tree_util.tree_unflatten(
    treedef, [distributions.standard_normal(k, w.shape, w.dtype) for k, w in zip(keys, leaves)]
  )
  np.testing.assert_allclose(
    draw["lin"]["w"], means["lin"]["w"] + np.array([[0.5, 2.0]]) * eps["lin"]["w"], rtol=1e-5
  )
  np.testing.assert_allclose(draw["lin"]["b"], means["lin"]["b"] + 0.25 * eps["lin"]["b"], rtol=1e-5)
  assert draw["out"]["w"] is q["mean"]["out"]["w"]
  # every Bayesian leaf gets its own key (three leaves), and keeps its dtype
  q3 = posterior.init_posterior(
    {"a": {"w": jnp.zeros(2, jnp.bfloat16)}, "b": {"w": jnp.zeros(3)}, "c": {"w": jnp.zeros(1)}},
    1.0,
    scale="log_std",
  )
  draw3 = posterior.sample_params(q3, key)
  assert draw3["a"]["w"].dtype == jnp.bfloat16 and draw3["b"]["w"].dtype == jnp.float32
  k3 = jax.random.split(key, 3)
  np.testing.assert_allclose(draw3["c"]["w"], distributions.standard_normal(k3[2], (1,)), rtol=1e-6)
  # the Monte Carlo mixture KL is -H[q] - log p(w) at exactly that draw
  mix = priors.ScaleMixturePrior(0.3, 1.0, 0.2, "mc")
  w = {"lin": {"w": draw["lin"]["w"], "b": draw["lin"]["b"]}}
  np.testing.assert_allclose(
    posterior.kl(q, mix, key), -posterior.entropy(q) - priors.log_prob(w, mix), rtol=1e-5
  )
  with pytest.raises(
    ValueError, match=r"^kl to a scale-mixture prior is a Monte Carlo estimate: pass rng or weights$"
  ):
    posterior.kl(q, mix)
  with pytest.raises(ValueError, match=r"^kl: unknown prior float$"):
    posterior.kl(q, 1.0)


def test_layerwise_kl_is_each_modules_kl_with_its_own_key_and_errors_name_the_modules():
  q = posterior.init_posterior(_params(), 0.4, scale="log_std")
  only = lambda module: {"mean": {module: q["mean"][module]}, "log_std": {module: q["log_std"][module]}}
  g, mix = priors.GaussianPrior(1.0), priors.ScaleMixturePrior(0.5, 1.0, 0.1)
  prior = priors.layerwise_prior({"lin": mix, "out": g})
  key = jax.random.PRNGKey(2)
  expected = posterior.kl(only("lin"), mix, jax.random.fold_in(key, 0)) + posterior.kl(only("out"), g)
  np.testing.assert_allclose(posterior.kl(q, prior, key), expected, rtol=1e-5)
  prior = priors.layerwise_prior({"lin": priors.PosteriorPrior(q), "out": g})
  np.testing.assert_allclose(posterior.kl(q, prior), posterior.kl(only("out"), g), rtol=1e-5)
  with pytest.raises(
    ValueError,
    match=r"^layerwise prior covers modules \['lin'\] but the Bayesian modules are \['lin', 'out'\]$",
  ):
    posterior.kl(q, priors.layerwise_prior({"lin": g}))


@pytest.mark.parametrize("scale", ["rho", "log_std"])
def test_variances_feed_the_gaussian_kls_and_the_local_draw_as_the_squared_stds(scale):
  q = _posterior(scale)
  var = posterior.variances(q)
  assert sorted(var) == ["lin"] and var["lin"]["w"].dtype == jnp.float32
  np.testing.assert_allclose(var["lin"]["w"], [[0.25, 4.0]], rtol=1e-5)
  np.testing.assert_allclose(var["lin"]["b"], [0.0625], rtol=1e-5)
  # gaussian_kl with the variance alone (std_q=None) against float64, std_p != 1
  mq, sq, mp, sp = 0.3, 0.5, -0.2, 1.5
  kl = np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5
  np.testing.assert_allclose(
    distributions.gaussian_kl(mq, None, mp, sp, log_std_q=np.log(sq), var_q=sq**2), kl, rtol=1e-6
  )
  # the variance passed in is the one used (std_q, given too, is ignored)
  np.testing.assert_allclose(
    distributions.gaussian_kl(mq, 9.0, mp, sp, log_std_q=np.log(sq), var_q=sq**2 + 0.45), kl + 0.1, rtol=1e-6
  )
  # the KL to a previous posterior with other stds: the variance ratio term
  s = np.array([0.5, 2.0, 0.25])
  other = {"mean": q["mean"], scale: jax.tree_util.tree_map(lambda r: r + 0.5, q[scale])}
  sp_ = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(posterior.stds(other))])
  sp_ = np.array([sp_[1], sp_[2], sp_[0]])  # leaves in order b, w: reorder to (w0, w1, b)
  expected = (np.log(sp_ / s) + s**2 / (2 * sp_**2) - 0.5).sum()
  np.testing.assert_allclose(posterior.kl(q, priors.PosteriorPrior(other)), expected, rtol=1e-5)


@pytest.mark.parametrize("scale", ["softplus", "log_std"])
def test_init_posterior_and_with_stds_round_the_float32_scale_once_to_each_leafs_dtype(scale):
  key = posterior.SCALE_KEYS[scale]
  to_param = (lambda s: np.log(np.expm1(s))) if scale == "softplus" else np.log
  params = {"lin": {"w": jnp.zeros((1, 2), jnp.bfloat16), "b": jnp.zeros((1,), jnp.float32)}}
  # each rounds to another bfloat16 rho / log std when computed in bfloat16: the case discriminates
  std = {"softplus": 0.005, "log_std": 0.012}[scale]
  half_std = jnp.asarray(std, jnp.bfloat16)
  in_bf16 = posterior.inverse_softplus(half_std) if scale == "softplus" else jnp.log(half_std)
  rounded = jnp.asarray(to_param(std), jnp.bfloat16)
  assert in_bf16 != rounded
  q = posterior.init_posterior(params, std, scale=scale)
  assert sorted(q) == sorted(["mean", key]) and q["mean"] is params
  assert q[key]["lin"]["w"].dtype == jnp.bfloat16 and q[key]["lin"]["b"].dtype == jnp.float32
  np.testing.assert_array_equal(q[key]["lin"]["w"], jnp.full((1, 2), rounded))
  np.testing.assert_allclose(q[key]["lin"]["b"], [to_param(std)], rtol=1e-6)
  # with_stds: new stds in the posterior's own parameterisation and dtypes, the means untouched
  new = {"lin": {"w": jnp.array([[std, 0.5]]), "b": jnp.array([2.0])}}
  replaced = posterior.with_stds({**q, "extra": 7}, new)
  assert sorted(replaced) == sorted(["mean", key, "extra"]) and replaced["mean"] is params
  assert replaced[key]["lin"]["w"].dtype == jnp.bfloat16 and replaced[key]["lin"]["b"].dtype == jnp.float32
  np.testing.assert_array_equal(
    replaced[key]["lin"]["w"], jnp.asarray([[to_param(std), to_param(0.5)]], jnp.bfloat16)
  )
  np.testing.assert_allclose(replaced[key]["lin"]["b"], [to_param(2.0)], rtol=1e-6)
  np.testing.assert_allclose(posterior.stds(replaced)["lin"]["b"], [2.0], rtol=1e-6)
  # bfloat16 new stds too are mapped in float32 (rho = log(expm1(s)) rounds otherwise at 0.005)
  half = jnp.asarray([[0.005, 0.5]], jnp.bfloat16)
  replaced = posterior.with_stds(q, {"lin": {"w": half, "b": jnp.array([2.0])}})
  expected = jnp.asarray(to_param(np.asarray(half, np.float64)), jnp.bfloat16)
  np.testing.assert_array_equal(replaced[key]["lin"]["w"], expected)


def test_the_mixture_kl_scores_given_weight_draws_and_bayesian_leaves_pick_the_posteriors_leaves():
  q, key = _posterior("log_std"), jax.random.PRNGKey(9)
  params = posterior.sample_params(q, key)
  leaves = posterior.bayesian_leaves(q, params)
  assert sorted(leaves) == ["lin"] and sorted(leaves["lin"]) == ["b", "w"]
  assert leaves["lin"]["w"] is params["lin"]["w"] and leaves["lin"]["b"] is params["lin"]["b"]
  # K = 3 draws of the Bayesian leaves score the prior: -H[q] - mean_k log p(w_k), by hand in float64
  weights = {
    "lin": {
      "w": jnp.asarray([[[0.5, -1.0]], [[0.1, 0.3]], [[-2.0, 0.0]]]),
      "b": jnp.asarray([[0.2], [-0.4], [1.0]]),
    }
  }
  mix = priors.ScaleMixturePrior(0.3, 1.0, 0.2, "mc")
  mix_log_pdf = lambda w: np.logaddexp(
    np.log(0.3) + _normal_log_pdf(w, 0.0, 1.0), np.log(0.7) + _normal_log_pdf(w, 0.0, 0.2)
  )
  w64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), weights["lin"])
  cross = np.mean([mix_log_pdf(w64["w"][k]).sum() + mix_log_pdf(w64["b"][k]).sum() for k in range(3)])
  s = np.array([0.5, 2.0, 0.25])
  expected = -(0.5 * (1 + LOG_2PI) + np.log(s)).sum() - cross
  np.testing.assert_allclose(posterior.kl(q, mix, weights=weights), expected, rtol=1e-5)
  np.testing.assert_allclose(posterior.kl(q, mix, key, weights), expected, rtol=1e-5)  # rng unused
  g = priors.GaussianPrior(1.5)
  np.testing.assert_allclose(posterior.kl(q, g, weights=weights), posterior.kl(q, g), rtol=1e-6)
  with pytest.raises(
    ValueError, match=r"^kl to a scale-mixture prior is a Monte Carlo estimate: pass rng or weights$"
  ):
    posterior.kl(q, mix)
  # layer by layer: each module's prior scores that module's draws
  q2 = posterior.init_posterior(_params(), 0.4, scale="log_std")
  only = lambda module: {"mean": {module: q2["mean"][module]}, "log_std": {module: q2["log_std"][module]}}
  both = {**weights, "out": {"w": jnp.asarray([[[1.0]], [[2.0]], [[0.5]]])}}
  prior = priors.layerwise_prior({"lin": mix, "out": mix})
  expected = posterior.kl(only("lin"), mix, weights={"lin": both["lin"]}) + posterior.kl(
    only("out"), mix, weights={"out": both["out"]}
  )
  np.testing.assert_allclose(posterior.kl(q2, prior, weights=both), expected, rtol=1e-5)
  np.testing.assert_allclose(
    posterior.kl(only("out"), mix, weights={"out": both["out"]}),
    -(0.5 * (1 + LOG_2PI) + np.log(0.4)) - np.mean([mix_log_pdf(v) for v in (1.0, 2.0, 0.5)]),
    rtol=1e-5,
  )
  # reparameterisation's K outputs and the K draws that made them
  net_fn = lambda x: hk.Linear(1, name="lin")(x) * 2.0  # noqa: E731
  net = hk.transform(net_fn)
  q3 = {
    "mean": {"lin": {"w": jnp.asarray([[0.5], [-1.0]]), "b": jnp.asarray([0.25])}},
    "log_std": {"lin": {"w": jnp.log(jnp.asarray([[0.5], [2.0]]))}},
  }
  xs = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32)
  outputs, draws = estimators.sample_outputs_and_weights(net, q3, key, xs, 3)
  assert outputs.shape == (3, 2, 1) and sorted(draws["lin"]) == ["w"] and draws["lin"]["w"].shape == (3, 2, 1)
  same = estimators.sample_outputs(estimators.bayesian_transform(net_fn, "reparam"), q3, key, xs, 3)
  np.testing.assert_allclose(outputs, same, rtol=1e-6)
  for k in range(3):  # each output is the network at its own draw (the bias is a point estimate)
    np.testing.assert_allclose(outputs[k], 2.0 * (xs @ draws["lin"]["w"][k] + 0.25), rtol=1e-5)
  assert not np.allclose(draws["lin"]["w"][0], draws["lin"]["w"][1])
  one, one_draw = estimators.sample_outputs_and_weights(net, q3, key, xs, 1)  # K = 1 is allowed
  assert one.shape == (1, 2, 1) and one_draw["lin"]["w"].shape == (1, 2, 1)
  with pytest.raises(ValueError, match=r"^num_samples must be >= 1, got 0$"):
    estimators.sample_outputs_and_weights(net, q3, key, xs, 0)


def test_another_architecture_is_named_leaf_by_leaf():
  q = posterior.init_posterior(_params(), 0.4)
  other = posterior.init_posterior({"lin": {"w": jnp.zeros((2, 2))}}, 0.4)
  with pytest.raises(
    ValueError,
    match=r"^prior posterior comes from another architecture: Bayesian leaves lin/w\(2, 2\) "
    r"differ from lin/b\(1,\), lin/w\(1, 2\), out/w\(1, 1\)$",
  ):
    posterior.check_same_architecture(q, other)


# --- metrics ---------------------------------------------------------------------------------------------


def test_accuracy_nll_brier_on_a_hand_case():
  probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.0, 1.0, 0.0], [0.5, 0.25, 0.25]])
  labels = np.array([0, 1, 0, 0])
  assert metrics.accuracy(probs, labels) == 0.5
  tiny = np.finfo(np.float64).tiny
  expected_nll = -(np.log(0.7) + np.log(0.3) + np.log(tiny) + np.log(0.5)) / 4
  assert metrics.nll(probs, labels) == pytest.approx(expected_nll, rel=1e-12)
  brier = ((0.09 + 0.04 + 0.01) + (0.01 + 0.49 + 0.36) + (1 + 1) + (0.25 + 0.0625 + 0.0625)) / 4
  assert metrics.brier(probs, labels) == pytest.approx(brier, rel=1e-12)
  # float32 probabilities are scored in float64
  p32 = np.array([[0.1, 0.9], [0.3, 0.7], [0.55, 0.45]], np.float32)
  p64, y2 = p32.astype(np.float64), np.array([1, 0, 1])
  exact = np.mean(np.sum((p64 - np.eye(2)[y2]) ** 2, -1))
  assert metrics.brier(p32, y2) == pytest.approx(exact, rel=1e-14)
  out = metrics.classification_metrics(probs, labels)
  assert out == {
    "accuracy": 0.5,
    "nll": pytest.approx(expected_nll),
    "brier": pytest.approx(brier),
    "ece": pytest.approx(metrics.ece(probs, labels)),
  }
  with pytest.raises(
    ValueError, match=r"^expected probs \[N, C\] and labels \[N\], got shapes \(4, 3\) and \(3,\)$"
  ):
    metrics.accuracy(probs, labels[:3])
  with pytest.raises(
    ValueError, match=r"^expected probs \[N, C\] and labels \[N\], got shapes \(3,\) and \(3,\)$"
  ):
    metrics.accuracy(np.ones(3), labels[:3])


def test_reliability_bins_counts_and_ece_on_a_hand_case():
  # 4 bins of width 0.25; confidences 0.3 (bin 1), 0.5 (edge: bin 1), 0.9, 0.95 (bin 3); 1.0 in bin 3
  probs = np.array([[0.3, 0.3, 0.4], [0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.05, 0.95, 0.0], [1.0, 0.0, 0.0]])
  labels = np.array([2, 0, 1, 1, 0])
  # confidences 0.4, 0.5, 0.9, 0.95, 1.0; correct 1, 1, 0, 1, 1
  r = metrics.reliability(probs, labels, num_bins=4)
  np.testing.assert_allclose(r.bin_edges, [0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_array_equal(r.count, [0, 2, 0, 3])
  np.testing.assert_allclose(r.confidence[[1, 3]], [0.45, (0.9 + 0.95 + 1.0) / 3])
  np.testing.assert_allclose(r.accuracy[[1, 3]], [1.0, 2 / 3])
  assert np.isnan(r.confidence[0]) and np.isnan(r.accuracy[2])
  expected = (2 * 0.55 + 3 * abs(2 / 3 - 2.85 / 3)) / 5
  assert r.ece == pytest.approx(expected, rel=1e-12)
  assert metrics.ece(probs, labels, num_bins=4) == pytest.approx(expected, rel=1e-12)
  # default: 15 bins
  assert len(metrics.reliability(probs, labels).count) == metrics.NUM_ECE_BINS == 15
  # a one-hot zero-confidence case cannot happen; a single bin is the accuracy gap
  assert metrics.ece(probs, labels, num_bins=1) == pytest.approx(abs(0.8 - 3.75 / 5), rel=1e-12)
  with pytest.raises(ValueError, match=r"^num_bins must be >= 1, got 0$"):
    metrics.reliability(probs, labels, num_bins=0)
  # a confidence of 1/4 sits on the first interior edge: bin 0; empty bins give NaN quietly
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    r = metrics.reliability(np.full((1, 4), 0.25), np.array([3]), num_bins=4)
  np.testing.assert_array_equal(r.count, [1, 0, 0, 0])
  assert r.ece == pytest.approx(0.25)
  # the documented convention: a confidence of 0 (no distribution, but harmless) falls in bin 0
  zero = np.zeros((2, 3))
  np.testing.assert_array_equal(metrics.reliability(zero, np.array([0, 1]), num_bins=4).count, [2, 0, 0, 0])
  assert metrics.ece_interval(zero, np.array([1, 2]), num_resamples=3, num_bins=4) == (0.0, 0.0)


def test_ece_interval_is_the_documented_percentile_bootstrap():
  probs = np.array([[0.3, 0.3, 0.4], [0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.05, 0.95, 0.0], [1.0, 0.0, 0.0]])
  labels = np.array([2, 0, 1, 1, 0])
  rng = np.random.default_rng(7)
  eces = []
  for _ in range(50):
    i = rng.integers(0, 5, 5)
    eces.append(metrics.ece(probs[i], labels[i], num_bins=4))
  expected = np.percentile(eces, 10.0), np.percentile(eces, 90.0)
  got = metrics.ece_interval(probs, labels, num_resamples=50, level=0.8, seed=7, num_bins=4)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  # defaults: 1000 resamples, level 0.95, seed 0, 15 bins
  rng = np.random.default_rng(0)
  eces = [metrics.ece(probs[i], labels[i]) for i in (rng.integers(0, 5, 5) for _ in range(1000))]
  np.testing.assert_allclose(
    metrics.ece_interval(probs, labels), (np.percentile(eces, 2.5), np.percentile(eces, 97.5)), rtol=1e-12
  )
  # many distinct confidences over 5 classes, some in the first bin: every bin boundary matters
  rng = np.random.default_rng(1)
  many = rng.dirichlet(np.full(5, 0.7), size=60)
  many_labels = rng.integers(0, 5, 60)
  many[:3] = 0.2  # confidence 0.2: the first of 4 bins
  rng = np.random.default_rng(3)
  eces = [
    metrics.ece(many[i], many_labels[i], num_bins=4) for i in (rng.integers(0, 60, 60) for _ in range(40))
  ]
  np.testing.assert_allclose(
    metrics.ece_interval(many, many_labels, num_resamples=40, level=0.5, seed=3, num_bins=4),
    (np.percentile(eces, 25.0), np.percentile(eces, 75.0)),
    rtol=1e-12,
  )
  with pytest.raises(ValueError, match=r"^need num_resamples >= 1 and level in \(0, 1\), got 0 and 0.9$"):
    metrics.ece_interval(probs, labels, num_resamples=0, level=0.9)
  for level in (0.0, 1.0):
    with pytest.raises(ValueError, match=r"^need num_resamples >= 1"):
      metrics.ece_interval(probs, labels, num_resamples=1, level=level)
  assert metrics.ece_interval(probs, labels, num_resamples=1)[0] >= 0.0
  # a confidence of exactly 0 (an all-zero row) falls in bin 0, as in `reliability`: |0 - 1| (argmax 0 right)
  zero_row = np.array([[0.0, 0.0], [0.0, 0.0]])
  assert metrics.ece_interval(zero_row, np.array([0, 0]), num_resamples=2, num_bins=3) == (1.0, 1.0)


def test_average_ranks_auroc_aupr_and_fpr_on_hand_cases():
  np.testing.assert_allclose(metrics.average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]), [4.0, 1.0, 4.0, 2.0, 4.0])
  np.testing.assert_allclose(metrics.average_ranks([2.0, 2.0, 1.0]), [2.5, 2.5, 1.0])
  score_in, score_out = [0.1, 0.4, 0.5, 0.5], [0.5, 0.8, 0.3]
  # pairs out > in: 0.5: 2 wins + 2 ties; 0.8: 4 wins; 0.3: 1 win -> (7 + 1) / 12
  assert metrics.auroc(score_in, score_out) == pytest.approx(8 / 12, rel=1e-12)
  # thresholds 0.8 (tp 1, fp 0), 0.5 (tp 2, fp 2), 0.4 (2, 3), 0.3 (3, 3), 0.1 (3, 4)
  aupr = (1 / 3) * 1.0 + (1 / 3) * 0.5 + (1 / 3) * 0.5
  assert metrics.aupr(score_in, score_out) == pytest.approx(aupr, rel=1e-12)
  # tpr 2/3 needs threshold 0.5: in-flagged 2/4; tpr 1 needs 0.3: 3/4
  assert metrics.fpr_at_tpr(score_in, score_out, 2 / 3) == 0.5
  assert metrics.fpr_at_tpr(score_in, score_out, 1.0) == 0.75
  assert metrics.fpr_at_tpr(score_in, score_out, 0.5) == 0.5
  assert metrics.fpr_at_tpr(score_in, score_out, 0.3) == 0.0
  out = metrics.ood_metrics(score_in, score_out)
  assert out == {"auroc": pytest.approx(8 / 12), "aupr": pytest.approx(aupr), "fpr95": 0.75}
  with pytest.raises(ValueError, match=r"^tpr must be in \(0, 1\], got 0.0$"):
    metrics.fpr_at_tpr(score_in, score_out, 0.0)
  with pytest.raises(ValueError, match=r"^tpr must be in \(0, 1\], got 1.5$"):
    metrics.fpr_at_tpr(score_in, score_out, 1.5)
  with pytest.raises(ValueError, match=r"^need in- and out-of-distribution scores, got 0 and 3$"):
    metrics.auroc([], score_out)
  with pytest.raises(ValueError, match=r"^need in- and out-of-distribution scores, got 4 and 0$"):
    metrics.auroc(score_in, [])
  with pytest.raises(ValueError, match=r"^OOD scores must be finite$"):
    metrics.auroc(score_in, [np.nan])
  with pytest.raises(ValueError, match=r"^OOD scores must be finite$"):
    metrics.auroc([np.inf], score_out)


def test_rejection_rule_and_ood_report_on_a_hand_case():
  score_in, score_out = np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.5, 5.0])
  rule = metrics.rejection_rule(score_in, score_out, 50.0)
  assert rule == metrics.Rejection(2.0, 0.4, 2 / 3)
  assert metrics.rejection_rule(score_in, score_out).threshold == pytest.approx(3.96)
  assert metrics.rejection_rule(score_in, score_out, 0.0) == metrics.Rejection(0.0, 0.8, 1.0)
  assert metrics.rejection_rule(score_in, score_out, 100.0) == metrics.Rejection(4.0, 0.0, 1 / 3)
  # float32 scores are thresholded in float64: the midpoint of 0.1f and 0.2f, not its float32 rounding
  low = np.array([0.1, 0.2], np.float32)
  assert metrics.rejection_rule(low, low, 50.0).threshold == (float(low[0]) + float(low[1])) / 2
  for bad in (-1.0, 101.0):
    with pytest.raises(ValueError, match=rf"^percentile must be in \[0, 100\], got {bad}$"):
      metrics.rejection_rule(score_in, score_out, bad)
  report = metrics.ood_report({"a": score_in, "b": score_in}, {"a": score_out, "c": score_out}, 50.0)
  assert list(report) == ["a"]
  assert report["a"] == {
    **metrics.ood_metrics(score_in, score_out),
    "rejection_threshold": 2.0,
    "rejected_in": 0.4,
    "rejected_out": pytest.approx(2 / 3),
    "mean_in": 2.0,
    "mean_out": pytest.approx(10.5 / 3),
  }
  assert metrics.ood_report({"a": score_in}, {"a": score_out})["a"]["rejection_threshold"] == pytest.approx(
    3.96
  )


def test_regression_metrics_on_a_hand_case():
  y, mean, std = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0]), np.array([0.5, 1.0, 2.0])
  lower, upper = np.array([1.0, 2.5, 0.0]), np.array([1.0, 3.0, 4.0])
  assert metrics.interval_coverage(y, lower, upper) == pytest.approx(2 / 3)
  assert metrics.rmse(y, mean) == pytest.approx(np.sqrt(1.25 / 3), rel=1e-12)
  nll = -np.mean(_normal_log_pdf(y, mean, std))
  assert metrics.gaussian_nll(y, mean, std) == pytest.approx(nll, rel=1e-6)
  assert metrics.regression_metrics(y, mean, std, lower, upper) == {
    "rmse": pytest.approx(np.sqrt(1.25 / 3)),
    "nll": pytest.approx(nll, rel=1e-6),
    "coverage": pytest.approx(2 / 3),
    "mean_interval_width": pytest.approx(1.5),
  }
  # float32 inputs are computed in float64
  y32, mean32 = np.array([0.1, 0.7, 0.3], np.float32), np.array([0.2, 0.25, 0.9], np.float32)
  exact = np.sqrt(np.mean((y32.astype(np.float64) - mean32.astype(np.float64)) ** 2))
  assert metrics.rmse(y32, mean32) == pytest.approx(exact, rel=1e-14)
  with pytest.raises(ValueError, match=r"^predictive std must be positive$"):
    metrics.gaussian_nll(y, mean, np.array([0.5, 0.0, 1.0]))
  with pytest.raises(ValueError, match=r"^shapes differ: \{'y': \(3,\), 'mean': \(2,\)\}$"):
    metrics.rmse(y, mean[:2])


# --- estimators ------------------------------------------------------------------------------------------


def _first_key(rng):
  """The first hk.next_rng_key() of an apply called with `rng`."""
  return hk.transform(lambda: hk.next_rng_key()).apply(None, rng)


def _linear_posterior():
  mean = {"linear": {"w": jnp.array([[0.5, -1.0], [2.0, 0.25], [0.0, 1.5]]), "b": jnp.array([0.1, -0.2])}}
  log_std = {
    "linear": {
      "w": jnp.log(jnp.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])),
      "b": jnp.log(jnp.array([0.7, 0.8])),
    }
  }
  return {"mean": mean, "log_std": log_std}


# numpy, not jnp: a module-level JAX array would start XLA in mutmut's fork server (its forks then hang)
_X = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], np.float32)


def test_local_reparameterisation_of_a_dense_layer_is_the_documented_draw():
  q, rng = _linear_posterior(), jax.random.PRNGKey(11)
  out = estimators.bayesian_transform(lambda x: hk.Linear(2)(x), "local").apply(q, rng, _X)
  m, s = q["mean"]["linear"], posterior.stds(q)["linear"]
  mean = _X @ m["w"] + m["b"]
  std = jnp.sqrt((_X * _X) @ s["w"] ** 2 + s["b"] ** 2)
  eps = distributions.standard_normal(_first_key(rng), (2, 2))
  np.testing.assert_allclose(out, mean + std * eps, rtol=1e-5, atol=1e-6)
  # no bias: the variance is the weights' alone
  q_nb = {"mean": {"linear": {"w": m["w"]}}, "log_std": {"linear": {"w": q["log_std"]["linear"]["w"]}}}
  out = estimators.bayesian_transform(lambda x: hk.Linear(2, with_bias=False)(x), "local").apply(
    q_nb, rng, _X
  )
  np.testing.assert_allclose(out, _X @ m["w"] + jnp.sqrt((_X * _X) @ s["w"] ** 2) * eps, rtol=1e-5, atol=1e-6)
  # an all-zero input row: the mean, exactly, with a finite gradient of the scale
  zero = jnp.zeros((1, 3))
  out = estimators.bayesian_transform(lambda x: hk.Linear(2, with_bias=False)(x), "local").apply(
    q_nb, rng, zero
  )
  np.testing.assert_allclose(out, 0.0, atol=1e-12)


def test_flipout_of_a_dense_layer_is_the_documented_draw():
  q, rng = _linear_posterior(), jax.random.PRNGKey(12)
  out = estimators.bayesian_transform(lambda x: hk.Linear(2)(x), "flipout").apply(q, rng, _X)
  m, s = q["mean"]["linear"], posterior.stds(q)["linear"]
  k_w, k_in, k_out, k_b = jax.random.split(_first_key(rng), 4)
  delta_w = s["w"] * distributions.standard_normal(k_w, (3, 2))
  sign_in = jax.random.rademacher(k_in, (2, 3), jnp.float32)
  sign_out = jax.random.rademacher(k_out, (2, 2), jnp.float32)
  expected = _X @ m["w"] + m["b"] + ((_X * sign_in) @ delta_w) * sign_out
  expected = expected + s["b"] * distributions.standard_normal(k_b, (2,))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_reparam_runs_the_network_at_one_posterior_draw():
  q, rng = _linear_posterior(), jax.random.PRNGKey(13)
  net = estimators.bayesian_transform(lambda x: hk.Linear(2)(x), "reparam")
  w = posterior.sample_params(q, rng)["linear"]
  np.testing.assert_allclose(net.apply(q, rng, _X), _X @ w["w"] + w["b"], rtol=1e-5)
  params = net.init(jax.random.PRNGKey(0), _X)
  assert params["linear"]["w"].shape == (3, 2)
  for estimator in ("local", "flipout"):
    params = estimators.bayesian_transform(lambda x: hk.Linear(2)(x), estimator).init(
      jax.random.PRNGKey(0), _X
    )
    assert jax.tree_util.tree_map(jnp.shape, params) == {"linear": {"w": (3, 2), "b": (2,)}}


def _conv_posterior(mask=None):
  w = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3) / 10 - 1.0
  mean = {"conv2_d": {"w": w, "b": jnp.array([0.1, -0.2, 0.3])}}
  std_w = 0.05 + jnp.arange(24, dtype=jnp.float32).reshape(2, 2, 2, 3) / 50
  log_std = {"conv2_d": {"w": jnp.log(std_w), "b": jnp.log(jnp.array([0.2, 0.3, 0.4]))}}
  return {"mean": mean, "log_std": log_std}


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


_XC = np.linspace(-1.0, 1.0, 2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
_MASK = np.array([1.0, 0.0, 1.0, 1.0], np.float32).reshape(2, 2, 1, 1) * np.ones((2, 2, 2, 3), np.float32)


@pytest.mark.parametrize("masked", [False, True])
def test_local_reparameterisation_of_a_convolution_is_the_documented_draw(masked):
  q, rng = _conv_posterior(), jax.random.PRNGKey(14)
  mask = _MASK if masked else None
  net = estimators.bayesian_transform(lambda x: hk.Conv2D(3, 2, mask=mask)(x), "local")
  m, s = q["mean"]["conv2_d"], posterior.stds(q)["conv2_d"]
  mk = 1.0 if mask is None else mask
  mean = _conv(_XC, m["w"] * mk) + m["b"]
  std = jnp.sqrt(_conv(_XC**2, s["w"] ** 2 * mk) + s["b"] ** 2)
  eps = distributions.standard_normal(_first_key(rng), (2, 3, 3, 3))
  np.testing.assert_allclose(net.apply(q, rng, _XC), mean + std * eps, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_flipout_of_a_convolution_is_the_documented_draw_batched_and_unbatched(masked):
  q, rng = _conv_posterior(), jax.random.PRNGKey(15)
  mask = _MASK if masked else None
  net = estimators.bayesian_transform(lambda x: hk.Conv2D(3, 2, mask=mask)(x), "flipout")
  m, s = q["mean"]["conv2_d"], posterior.stds(q)["conv2_d"]
  mk = 1.0 if mask is None else mask
  k_w, k_in, k_out, k_b = jax.random.split(_first_key(rng), 4)
  delta_w = s["w"] * distributions.standard_normal(k_w, (2, 2, 2, 3))
  eps_b = s["b"] * distributions.standard_normal(k_b, (3,))
  for x in (_XC, _XC[0]):
    xb = x if x.ndim == 4 else x[None]
    n = xb.shape[0]
    sign_in = jax.random.rademacher(k_in, (n, 1, 1, 2), jnp.float32)
    sign_out = jax.random.rademacher(k_out, (n, 1, 1, 3), jnp.float32)
    expected = _conv(xb, m["w"] * mk) + m["b"] + _conv(xb * sign_in, delta_w * mk) * sign_out + eps_b
    expected = expected if x.ndim == 4 else expected[0]
    np.testing.assert_allclose(net.apply(q, rng, x), expected, rtol=1e-4, atol=1e-5)


def test_estimator_names_and_unhandled_layers_are_one_line_errors():
  with pytest.raises(ValueError, match=r"^unknown estimator 'exact'; choose one of reparam, local, flipout$"):
    estimators.check_estimator("exact")
  for name in estimators.ESTIMATORS:
    estimators.check_estimator(name)

  def forward(x):
    x = hk.Linear(3, name="dense")(x)
    return hk.LayerNorm(-1, True, True, name="norm")(x)

  params = hk.transform(forward).init(jax.random.PRNGKey(0), _X)
  q = posterior.init_posterior(params, 0.1)
  for estimator in ("local", "flipout"):
    with pytest.raises(
      ValueError,
      match=rf"^estimator '{estimator}' handles hk.Linear and hk.ConvND \(hk.Conv2D\) layers only; "
      r"Bayesian layer norm \(LayerNorm\) is neither; use estimator 'reparam'$",
    ):
      estimators.bayesian_transform(forward, estimator).apply(q, jax.random.PRNGKey(0), _X)
  # a Bayesian module the network never calls is named as such
  q = {"mean": params, "rho": {**q["rho"], "ghost": {"w": jnp.zeros(1)}}}
  with pytest.raises(ValueError, match=r"Bayesian layer ghost \(no module\), norm \(LayerNorm\) is neither"):
    estimators.bayesian_transform(forward, "local").apply(q, jax.random.PRNGKey(0), _X)


class _NeedsFactor(hk.Module):
  """Neither hk.Linear nor hk.ConvND; its call has a required keyword-only argument."""

  def __call__(self, x, *, factor):
    return factor * x * hk.get_parameter("w", x.shape[-1:], x.dtype, jnp.ones)


def test_the_estimators_pass_a_layers_extra_arguments_on_bayesian_or_not():
  """A Bayesian hk.Linear subclass called with (x, shift, scale=...) and a point-estimate one after it: the
  local draw's mean is the layer's own call with every argument (the variance is (x*x) @ var_W); the
  point layer is called as written; an unhandled Bayesian layer is named even if its call needs a keyword."""
  shift1, shift2 = np.array([0.5, -0.5], np.float32), np.array([1.0, 2.0], np.float32)

  def forward(x):
    h = _ShiftedLinear(2, name="bayes")(x, shift1, scale=2.0)
    return _ShiftedLinear(2, name="point")(h, shift2, scale=0.5)

  params = hk.transform(forward).init(jax.random.PRNGKey(0), _X)  # w = 0.5 everywhere (no bias)
  q = _linear_posterior()
  q = {
    "mean": {"bayes": {"w": q["mean"]["linear"]["w"]}, "point": params["point"]},
    "log_std": {"bayes": {"w": q["log_std"]["linear"]["w"]}},
  }
  rng = jax.random.PRNGKey(16)
  m, s, p = q["mean"]["bayes"]["w"], posterior.stds(q)["bayes"]["w"], params["point"]["w"]
  eps = distributions.standard_normal(_first_key(rng), (2, 2))
  h = 2.0 * (_X @ m + shift1) + jnp.sqrt((_X * _X) @ s**2) * eps
  expected = 0.5 * (h @ p + shift2)
  out = estimators.bayesian_transform(forward, "local").apply(q, rng, _X)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  def unhandled(x):
    return _NeedsFactor(name="weird")(hk.Linear(3, name="dense")(x), factor=2.0)

  params = hk.transform(unhandled).init(jax.random.PRNGKey(0), _X)
  for estimator in ("local", "flipout"):
    with pytest.raises(
      ValueError, match=r"Bayesian layer weird \(_NeedsFactor\) is neither; use estimator 'reparam'$"
    ):
      estimators.bayesian_transform(unhandled, estimator).apply(
        posterior.init_posterior(params, 0.1), rng, _X
      )


def test_sample_outputs_is_apply_vmapped_over_split_keys():
  q, rng = _linear_posterior(), jax.random.PRNGKey(16)
  net = estimators.bayesian_transform(lambda x: hk.Linear(2)(x), "local")
  out = estimators.sample_outputs(net, q, rng, _X, 3)
  assert out.shape == (3, 2, 2)
  # one draw per split key, batched by vmap (which draws the batch as one larger draw)
  expected = jax.vmap(net.apply, in_axes=(None, 0, None))(q, jax.random.split(rng, 3), _X)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(out[0], out[1])
  assert estimators.sample_outputs(net, q, rng, _X, 1).shape == (1, 2, 2)
  with pytest.raises(ValueError, match=r"^num_samples must be >= 1, got 0$"):
    estimators.sample_outputs(net, q, rng, _X, 0)


# --- predictive ------------------------------------------------------------------------------------------


def test_check_num_samples_accepts_positive_ints_only():
  assert predictive.check_num_samples(1) == 1 and predictive.check_num_samples(7) == 7
  for bad in (0, -2, True, 2.0, "3"):
    with pytest.raises(
      ValueError, match=rf"^num_samples \(K\) must be an integer >= 1, got {re.escape(repr(bad))}$"
    ):
      predictive.check_num_samples(bad)


def test_sample_predictions_stacks_one_output_per_split_key():
  rng = jax.random.PRNGKey(4)
  out = predictive.sample_predictions(lambda key, x: x + jax.random.uniform(key), rng, jnp.arange(2.0), 3)
  u = jax.vmap(jax.random.uniform)(jax.random.split(rng, 3))
  np.testing.assert_allclose(out, jnp.arange(2.0)[None] + u[:, None], rtol=1e-6)


def test_map_batches_calls_fn_per_batch_with_its_index_and_pads_the_last_one():
  x = np.arange(10.0).reshape(5, 2)
  calls = []

  def fn(i, batch):
    calls.append((i, batch.shape))
    return {"sum": batch.sum(-1), "index": np.full(len(batch), i)}

  out = predictive.map_batches(fn, x, 2)
  assert calls == [(0, (2, 2)), (1, (2, 2)), (2, (1, 2))]
  np.testing.assert_array_equal(out["sum"], [1, 5, 9, 13, 17])
  np.testing.assert_array_equal(out["index"], [0, 0, 1, 1, 2])
  calls.clear()
  seen = []
  out = predictive.map_batches(lambda i, b: seen.append(b.copy()) or b[:, 0], x, 3, pad=True)
  np.testing.assert_array_equal(out, [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(seen[1], [[6, 7], [8, 9], [8, 9]])
  out = predictive.map_batches(lambda i, b: b[:, 1], x, 5, pad=True)
  np.testing.assert_array_equal(out, [1, 3, 5, 7, 9])
  out = predictive.map_batches(lambda i, b: b[:, 1], x, 7)
  np.testing.assert_array_equal(out, [1, 3, 5, 7, 9])
  # batches of one row; 2-D outputs stay 2-D; a last batch of one row padded by three copies of it
  np.testing.assert_array_equal(predictive.map_batches(lambda i, b: b, x, 1), x)
  seen.clear()
  np.testing.assert_array_equal(
    predictive.map_batches(lambda i, b: seen.append(b.copy()) or b, x, 4, pad=True), x
  )
  np.testing.assert_array_equal(seen[1], [[8, 9]] * 4)
  with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
    predictive.map_batches(fn, x, 0)
  with pytest.raises(ValueError, match=r"^map_batches needs at least one input row$"):
    predictive.map_batches(fn, x[:0], 2)


def _entropy(p):
  p = np.asarray(p, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def test_classification_predictive_and_scores_on_a_hand_case():
  probs_k = np.array([[[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]], [[0.1, 0.7, 0.2], [0.4, 0.4, 0.2]]])  # [K, B, C]
  pred = predictive.classification_predictive(jnp.log(jnp.asarray(probs_k, jnp.float32)))
  mean = probs_k.mean(0)
  np.testing.assert_allclose(pred.probs, mean, rtol=1e-5)
  np.testing.assert_allclose(pred.std, probs_k.std(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(pred.predictive_entropy, _entropy(mean), rtol=1e-5)
  np.testing.assert_allclose(pred.expected_entropy, _entropy(probs_k).mean(0), rtol=1e-5)
  np.testing.assert_allclose(pred.mutual_information, _entropy(mean) - _entropy(probs_k).mean(0), rtol=1e-4)
  # three samples: the mean divides by K = 3
  pred3 = predictive.classification_predictive(jnp.log(jnp.asarray(np.concatenate([probs_k, probs_k[:1]]))))
  np.testing.assert_allclose(pred3.probs, (2 * probs_k[0] + probs_k[1]) / 3, rtol=1e-5)
  # a zero probability contributes 0 to the entropy
  pred0 = predictive.classification_predictive(jnp.array([[[0.0, -jnp.inf]]]).at[..., 1].set(-1e4))
  np.testing.assert_allclose(pred0.predictive_entropy, [0.0], atol=1e-6)
  scores = predictive.uncertainty_scores(pred, 2)
  assert sorted(scores) == ["class_std", "mutual_information", "one_minus_max_prob", "predictive_entropy"]
  np.testing.assert_allclose(scores["one_minus_max_prob"], [0.55, 0.6], rtol=1e-5)
  np.testing.assert_allclose(scores["predictive_entropy"], pred.predictive_entropy)
  np.testing.assert_allclose(scores["mutual_information"], pred.mutual_information)
  # predicted classes 1 (0.45) and 2 (0.4): std over samples of that class's probability
  np.testing.assert_allclose(scores["class_std"], [0.25, 0.2], rtol=1e-4)
  one = predictive.uncertainty_scores(pred, 1)
  assert sorted(one) == ["one_minus_max_prob", "softmax_entropy"]
  np.testing.assert_allclose(one["softmax_entropy"], pred.predictive_entropy)
  with pytest.raises(ValueError, match=r"^expected sampled logits \[K, B, C\], got shape \(2, 3\)$"):
    predictive.classification_predictive(jnp.zeros((2, 3)))


def test_mutual_information_is_clipped_at_zero_not_negative():
  logits = jnp.tile(jnp.array([[[0.3, -1.2, 2.0]]]), (4, 1, 1))
  mi = predictive.classification_predictive(logits).mutual_information
  assert float(mi[0]) == 0.0


def test_regression_predictive_and_central_interval_on_a_hand_case():
  means = jnp.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
  noise = jnp.array([[1.0, 2.0], [2.0, 2.0], [2.0, 2.0]])
  pred = predictive.regression_predictive(means, noise)
  np.testing.assert_allclose(pred.mean, [2.0, 0.0])
  np.testing.assert_allclose(pred.aleatoric_std, [np.sqrt(3.0), 2.0], rtol=1e-6)
  np.testing.assert_allclose(pred.epistemic_std, [np.sqrt(2 / 3), 0.0], rtol=1e-6)
  np.testing.assert_allclose(pred.std, [np.sqrt(3 + 2 / 3), 2.0], rtol=1e-6)
  with pytest.raises(ValueError, match=r"^means \(3, 2\) and noise_stds \(3,\) must have one shape$"):
    predictive.regression_predictive(means, noise[:, 0])
  lo, hi = predictive.central_interval(jnp.array([1.0]), jnp.array([2.0]), 0.8)
  z = 1.2815515655446004
  np.testing.assert_allclose([lo[0], hi[0]], [1 - 2 * z, 1 + 2 * z], rtol=1e-5)
  lo, hi = predictive.central_interval(jnp.array([0.0]), jnp.array([1.0]))
  np.testing.assert_allclose([lo[0], hi[0]], [-1.959964, 1.959964], rtol=1e-5)
  for bad in (0.0, 1.0):
    with pytest.raises(ValueError, match=rf"^interval level must be in \(0, 1\), got {bad}$"):
      predictive.central_interval(0.0, 1.0, bad)


# --- the batch order in data -----------------------------------------------------------------------------


def test_steps_per_epoch_drops_the_remainder_and_names_a_bad_batch_size():
  assert data.steps_per_epoch(10, 3) == 3 and data.steps_per_epoch(10, 10) == 1
  assert data.steps_per_epoch(10, 1) == 10
  assert data.steps_per_epoch(10, np.int64(5)) == 2
  for bad in (0, -1, 2.0, None):
    with pytest.raises(
      ValueError, match=rf"^batch_size must be a positive integer, got {re.escape(repr(bad))}$"
    ):
      data.steps_per_epoch(10, bad)
  with pytest.raises(ValueError, match=r"^batch_size 11 exceeds the 10 examples of the split$"):
    data.steps_per_epoch(10, 11)


def test_batch_at_walks_the_documented_permutation_of_each_epoch():
  split = {"x": jnp.arange(20.0).reshape(10, 2), "y": jnp.arange(10) * 10}
  assert data.num_examples(split) == 10
  orders = [
    np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(3), e), 10)) for e in range(2)
  ]
  np.testing.assert_array_equal(data.epoch_order(3, 1, 10), orders[1])
  assert sorted(orders[0]) == list(range(10)) and not np.array_equal(orders[0], orders[1])
  # 3 steps per epoch of 3 (one example dropped); step 4 is epoch 1, position 1
  for step, (e, pos) in {0: (0, 0), 2: (0, 2), 3: (1, 0), 4: (1, 1)}.items():
    batch = data.batch_at(split, 3, step, 3)
    idx = orders[e][3 * pos : 3 * pos + 3]
    np.testing.assert_array_equal(batch["y"], idx * 10)
    np.testing.assert_array_equal(batch["x"], np.arange(20.0).reshape(10, 2)[idx])
  given = data.batch_at(split, 3, 4, 3, order=jnp.arange(10)[::-1])
  np.testing.assert_array_equal(given["y"], [60, 50, 40])


def test_eval_batches_cover_the_split_once_in_order():
  split = {"x": np.arange(7), "y": np.arange(7) + 10}
  batches = list(data.eval_batches(split, 3))
  assert [list(b["x"]) for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
  assert [list(b["y"]) for b in batches] == [[10, 11, 12], [13, 14, 15], [16]]
  assert [list(b["x"]) for b in data.eval_batches(split, np.int32(7))] == [list(range(7))]
  assert [list(b["y"]) for b in data.eval_batches(split, 1)] == [[10 + i] for i in range(7)]
  for bad in (0, 1.5):
    with pytest.raises(ValueError, match=rf"^batch_size must be a positive integer, got {bad!r}$"):
      list(data.eval_batches(split, bad))


# --- swag ------------------------------------------------------------------------------------------------


def test_swag_empty_moments_and_add_snapshot_by_hand():
  moments = swag.empty_moments({"w": jnp.ones((2,))}, 0)
  assert moments["deviations"]["w"].shape == (1, 2) and int(moments["count"]) == 0
  assert moments["count"].dtype == jnp.int32 and moments["mean"]["w"].shape == (2,)
  np.testing.assert_array_equal(moments["sq_mean"]["w"], [0.0, 0.0])
  moments = swag.empty_moments({"w": jnp.ones((2,))}, 2)
  skipped = swag.add_snapshot(moments, {"w": jnp.array([5.0, 5.0])}, jnp.asarray(False))
  assert int(skipped["count"]) == 0
  np.testing.assert_array_equal(skipped["mean"]["w"], [0.0, 0.0])
  np.testing.assert_array_equal(skipped["deviations"]["w"], np.zeros((2, 2)))
  m1 = swag.add_snapshot(moments, {"w": jnp.array([1.0, 2.0])}, jnp.asarray(True))
  m2 = swag.add_snapshot(m1, {"w": jnp.array([3.0, -2.0])}, jnp.asarray(True))
  m3 = swag.add_snapshot(m2, {"w": jnp.array([5.0, 3.0])}, jnp.asarray(True))
  assert int(m3["count"]) == 3
  np.testing.assert_allclose(m2["mean"]["w"], [2.0, 0.0])
  np.testing.assert_allclose(m2["sq_mean"]["w"], [5.0, 4.0])
  np.testing.assert_allclose(m3["mean"]["w"], [3.0, 1.0])
  # slot 0: snapshot 1 (w - mean after it = 0), slot 1: snapshot 2 ([1, -2]); snapshot 3 overwrites slot 0
  np.testing.assert_allclose(m2["deviations"]["w"], [[0.0, 0.0], [1.0, -2.0]])
  np.testing.assert_allclose(m3["deviations"]["w"], [[2.0, 2.0], [1.0, -2.0]])


@pytest.mark.parametrize("rank", [0, 3])
def test_swag_draw_is_the_documented_formula_on_hand_moments(rank):
  moments = {
    "mean": {"a": jnp.array([1.0, -1.0]), "b": jnp.array([2.0])},
    "sq_mean": {"a": jnp.array([5.0, 1.0]), "b": jnp.array([3.0])},  # variances 4, 0 (clipped), -1 -> 0
    "deviations": {
      "a": jnp.array([[1.0, 0.0], [0.0, 2.0], [7.0, 7.0]]),
      "b": jnp.array([[1.0], [1.0], [9.0]]),
    },
    "count": jnp.asarray(2, jnp.int32),
  }
  if not rank:
    moments["deviations"] = {"a": jnp.zeros((1, 2)), "b": jnp.zeros((1, 1))}
  weights = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
  rng = jax.random.PRNGKey(8)
  draw = swag.sample_weights(moments, weights, rng, rank)
  keys = jax.random.split(rng, 3)
  diag = np.sqrt(0.5) if rank else 1.0
  z_a = jax.random.normal(keys[0], (2,))
  expected_a = np.array([1.0, -1.0]) + diag * np.array([2.0, 0.0]) * z_a
  expected_b = np.array([2.0])
  if rank:
    z2 = jax.random.normal(keys[-1], (3,)) * np.array([1.0, 1.0, 0.0])  # two columns so far
    expected_a = expected_a + (z2[0] * np.array([1.0, 0.0]) + z2[1] * np.array([0.0, 2.0])) / np.sqrt(2.0)
    expected_b = expected_b + (z2[0] + z2[1]) / np.sqrt(2.0)
  np.testing.assert_allclose(draw["a"], expected_a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(draw["b"], expected_b, rtol=1e-5, atol=1e-6)
  # three columns: the low-rank part is scaled by 1 / sqrt(2 (3 - 1))
  if rank:
    draw3 = swag.sample_weights({**moments, "count": jnp.asarray(3, jnp.int32)}, weights, rng, rank)
    z2 = jax.random.normal(keys[-1], (3,))
    low = (z2[0] * np.array([1.0, 0.0]) + z2[1] * np.array([0.0, 2.0]) + z2[2] * np.array([7.0, 7.0])) / 2.0
    np.testing.assert_allclose(
      draw3["a"], np.array([1.0, -1.0]) + diag * np.array([2.0, 0.0]) * z_a + low, rtol=1e-5
    )
  # one snapshot: the low-rank scale's denominator is floored at 1, the one column kept
  if rank:
    draw1 = swag.sample_weights({**moments, "count": jnp.asarray(1, jnp.int32)}, weights, rng, rank)
    z2 = jax.random.normal(keys[-1], (3,))
    one = (
      np.array([1.0, -1.0]) + diag * np.array([2.0, 0.0]) * z_a + z2[0] * np.array([1.0, 0.0]) / np.sqrt(2.0)
    )
    np.testing.assert_allclose(draw1["a"], one, rtol=1e-5, atol=1e-6)


def assert_one_line_errors(validate, make_config, cases):
  """Each (field, value, message) of `cases`: validate(make_config(field=value)) raises exactly
  the one-line ValueError `message` (a regular expression)."""
  for field, value, message in cases:
    with pytest.raises(ValueError, match=f"^{message}$"):
      validate(make_config(**{field: value}))


def _swag_config(**fields):
  return ml_collections.ConfigDict({**swag.DEFAULTS, **fields})


def test_swag_config_errors_are_exact_one_liners():
  assert dict(swag.DEFAULTS) == dict(rank=10, collect_every=100, eval_samples=16, init_from="")
  swag.validate(_swag_config(rank=0))
  swag.validate(_swag_config(rank=20, collect_every=1, eval_samples=1))
  cases = [
    ("rank", 21, r"config.model.rank must be an integer in \[0, 20\] \(0: diagonal\), got 21"),
    ("rank", -1, r"config.model.rank must be an integer in \[0, 20\] \(0: diagonal\), got -1"),
    ("rank", True, r"config.model.rank must be an integer in \[0, 20\] \(0: diagonal\), got True"),
    ("rank", 2.0, r"config.model.rank must be an integer in \[0, 20\] \(0: diagonal\), got 2.0"),
    ("collect_every", 0, r"config.model.collect_every must be an integer >= 1, got 0"),
    ("collect_every", True, r"config.model.collect_every must be an integer >= 1, got True"),
    ("collect_every", 1.0, r"config.model.collect_every must be an integer >= 1, got 1.0"),
    ("eval_samples", 0, r"config.model.eval_samples must be an integer >= 1, got 0"),
  ]
  assert_one_line_errors(swag.validate, _swag_config, cases)
  m = _swag_config(rank=5, collect_every=100)
  swag.check_snapshots(m, 500)
  with pytest.raises(
    ValueError,
    match=r"^config.model.rank=5 needs at least 5 snapshots, but 499 steps with collect_every=100 take 4$",
  ):
    swag.check_snapshots(m, 499)
  m.rank = 1
  swag.check_snapshots(m, 200)
  with pytest.raises(ValueError, match=r"^config.model.rank=1 needs at least 2 snapshots, but 199 steps"):
    swag.check_snapshots(m, 199)
  m.rank = 0
  swag.check_snapshots(m, 1)


# --- sgmcmc ----------------------------------------------------------------------------------------------


def _sgmcmc_config(**fields):
  return ml_collections.ConfigDict({**sgmcmc.DEFAULTS, **fields})


def test_sgmcmc_config_errors_are_exact_one_liners():
  assert sgmcmc.DEFAULTS["sampler"] == "sgld" and sgmcmc.DEFAULTS["schedule"] == "cyclical"
  sgmcmc.validate(_sgmcmc_config())
  sgmcmc.validate(
    _sgmcmc_config(sampler="sghmc", schedule="constant", temperature=0.0, momentum=0.0, exploration=0.0)
  )
  cases = [
    ("sampler", "hmc", r"config.model.sampler: unknown 'hmc'; choose one of sgld, sghmc"),
    ("schedule", "linear", r"config.model.schedule: unknown 'linear'; choose one of cyclical, constant"),
    ("step_size", 0.0, r"config.model.step_size must be positive and finite, got 0.0"),
    ("step_size", math.inf, r"config.model.step_size must be positive and finite, got inf"),
    ("prior_std", -1.0, r"config.model.prior_std must be positive and finite, got -1.0"),
    ("noise_std", math.nan, r"config.model.noise_std must be positive and finite, got nan"),
    ("temperature", -0.5, r"config.model.temperature must be >= 0 and finite, got -0.5"),
    ("temperature", math.inf, r"config.model.temperature must be >= 0 and finite, got inf"),
    ("momentum", 1.0, r"config.model.momentum must lie in \[0, 1\), got 1.0"),
    ("momentum", -0.1, r"config.model.momentum must lie in \[0, 1\), got -0.1"),
    ("exploration", 1.0, r"config.model.exploration must lie in \[0, 1\), got 1.0"),
    ("exploration", -0.1, r"config.model.exploration must lie in \[0, 1\), got -0.1"),
    ("num_cycles", 0, r"config.model.num_cycles must be an integer >= 1, got 0"),
    ("num_cycles", True, r"config.model.num_cycles must be an integer >= 1, got True"),
    ("samples_per_cycle", 2.0, r"config.model.samples_per_cycle must be an integer >= 1, got 2.0"),
  ]
  assert_one_line_errors(sgmcmc.validate, _sgmcmc_config, cases)


def test_sgmcmc_schedule_step_sizes_and_slots_by_hand():
  m = _sgmcmc_config(num_cycles=2, exploration=0.5, samples_per_cycle=2, step_size=0.4, temperature=0.7)
  layout = sgmcmc.schedule(m, 21)  # cycles of 10 steps, sampling from position 5, a sample every 2 steps
  assert layout == sgmcmc.Schedule(10, 5, 2, 4)
  assert sgmcmc.schedule(_sgmcmc_config(num_cycles=1, exploration=0.3, samples_per_cycle=3), 10) == (
    10,
    3,
    2,
    3,
  )
  with pytest.raises(
    ValueError,
    match=r"^config.model: 7 steps in num_cycles=2 cycles leave 2 sampling steps per cycle, "
    r"fewer than samples_per_cycle=3$",
  ):
    sgmcmc.schedule(_sgmcmc_config(num_cycles=2, exploration=0.4, samples_per_cycle=3), 7)
  with pytest.raises(ValueError, match=r"leave 0 sampling steps per cycle, fewer than samples_per_cycle=1$"):
    sgmcmc.schedule(_sgmcmc_config(num_cycles=4, exploration=0.5, samples_per_cycle=1), 3)
  for t, position in ((0, 0), (4, 4), (5, 5), (13, 3), (19, 9)):
    eta, temperature = sgmcmc.step_size_and_temperature(m, layout, jnp.asarray(t))
    assert eta.dtype == jnp.float32
    assert float(eta) == pytest.approx(0.2 * (np.cos(np.pi * position / 10) + 1), rel=1e-5)
    assert float(temperature) == pytest.approx(0.7 if position >= 5 else 0.0)
  constant = _sgmcmc_config(**{**m.to_dict(), "schedule": "constant"})
  eta = sgmcmc.step_size_and_temperature(constant, layout, jnp.asarray(13))[0]
  assert float(eta) == pytest.approx(0.4)
  # a strong float32 under either schedule (not JAX's weakly typed float of a Python number): a
  # bfloat16 network's SGHMC step is computed in float32 with the constant schedule too
  assert eta.dtype == jnp.float32 and not eta.weak_type
  # kept: the last step of each cycle (slot 1, 3) and two before it (slot 0, 2); nothing in cycle 3
  slots = [int(sgmcmc.sample_slot(m, layout, jnp.asarray(s))) for s in range(1, 22)]
  assert slots == [-1] * 7 + [0, -1, 1] + [-1] * 7 + [2, -1, 3] + [-1]
  # a sampling phase starting late: a slot needs position >= sampling_start
  late = _sgmcmc_config(num_cycles=1, exploration=0.8, samples_per_cycle=1)
  lay = sgmcmc.schedule(late, 10)
  assert [int(sgmcmc.sample_slot(late, lay, jnp.asarray(s))) for s in range(1, 11)] == [-1] * 9 + [0]
  # every sampling step kept (spacing 1): the first sampling position too
  dense = _sgmcmc_config(num_cycles=1, exploration=0.5, samples_per_cycle=5)
  lay = sgmcmc.schedule(dense, 10)
  assert [int(sgmcmc.sample_slot(dense, lay, jnp.asarray(s))) for s in range(1, 11)] == [-1] * 5 + [
    0,
    1,
    2,
    3,
    4,
  ]
  # 15 steps in 4 cycles of 3: the 3 steps left over after the last cycle keep nothing
  short = _sgmcmc_config(num_cycles=4, exploration=0.0, samples_per_cycle=1)
  lay = sgmcmc.schedule(short, 15)
  assert [int(sgmcmc.sample_slot(short, lay, jnp.asarray(s))) for s in (3, 12, 13, 14, 15)] == [
    0,
    3,
    -1,
    -1,
    -1,
  ]


def test_kept_samples_fill_the_unwritten_slots_with_the_current_weights():
  collected = {"samples": {"w": jnp.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])}, "count": jnp.asarray(2)}
  out = sgmcmc.kept_samples(collected, {"w": jnp.array([9.0, 8.0])})
  np.testing.assert_array_equal(out["w"], [[1.0, 1.0], [2.0, 2.0], [9.0, 8.0]])


def test_langevin_steps_are_gradient_steps_without_noise_and_add_the_documented_noise_with_it():
  n = 50
  g = jnp.linspace(-1.0, 1.0, 20_000)
  w = jnp.zeros(20_000)
  # position 0 of a cycle: exploration, no noise; the cyclical step size is eta there
  m = _sgmcmc_config(
    sampler="sgld", step_size=0.1, num_cycles=1, exploration=0.5, samples_per_cycle=1, temperature=2.0
  )
  tx = sgmcmc.langevin(m, n, 100)
  state = tx.init(w)
  assert int(state.count) == 0 and state.count.dtype == jnp.int32
  structure = jax.tree_util.tree_structure(state)
  updates, state = tx.update(g, state, w)
  np.testing.assert_allclose(updates, -0.1 * g, rtol=1e-5, atol=1e-7)
  assert int(state.count) == 1 and state.count.dtype == jnp.int32
  assert jax.tree_util.tree_structure(state) == structure  # SGLD keeps SGHMC's (zero) momentum slot
  np.testing.assert_array_equal(state.momentum, np.zeros(20_000))
  # in the sampling phase (constant step): w - eta g + sqrt(2 eta T / N) xi
  m = _sgmcmc_config(**{**m.to_dict(), "schedule": "constant", "exploration": 0.0})
  tx = sgmcmc.langevin(m, n, 100)
  updates, _ = tx.update(g, tx.init(w), w)
  noise = np.asarray(updates + 0.1 * g, np.float64)
  assert abs(noise.mean()) < 0.05 * np.sqrt(2 * 0.1 * 2.0 / n)
  assert noise.std() == pytest.approx(np.sqrt(2 * 0.1 * 2.0 / n), rel=0.03)
  # SGHMC without noise (exploration): w <- w + eps v, then v <- (1 - alpha eps) v - eps N g; v starts at 0
  m = _sgmcmc_config(
    sampler="sghmc", momentum=0.8, step_size=0.1, schedule="constant", num_cycles=1, exploration=0.9
  )
  tx = sgmcmc.langevin(m, n, 100)
  state = tx.init(w)
  eps = np.sqrt(0.1 / n)
  alpha = 0.2 / eps
  v1 = -eps * n * np.asarray(g)
  v2 = (1 - alpha * eps) * v1 - eps * n * np.asarray(g)
  for expected in (np.zeros(20_000), eps * v1, eps * v2):
    updates, state = tx.update(g, state, w)
    np.testing.assert_allclose(updates, expected, rtol=1e-4, atol=1e-7)
    w = w + updates
  # a bfloat16 network's momentum stays bfloat16 (a scanned step's carry must keep its dtype)
  half = jnp.ones(4, jnp.bfloat16)
  _, state = tx.update(half * 0.5, tx.init(half), half)
  assert state.momentum.dtype == jnp.bfloat16


_XS = np.array([[1.0, 0.0], [0.5, -1.0], [-2.0, 1.5]], np.float32)
_YS = np.array([1.0, -0.5, 2.0], np.float32)


def _sg_linear(outputs):
  return lambda x: hk.Linear(outputs, name="linear")(x)


def _sg_weights(scale, outputs):
  w = scale * np.arange(1.0, 2 * outputs + 1, dtype=np.float32).reshape(2, outputs) / 4
  return {"linear": {"w": jnp.asarray(w), "b": jnp.full((outputs,), 0.5 * scale, jnp.float32)}}


def test_sgmcmc_task_regression_loss_slots_predictive_and_sampler_by_hand():
  m = _sgmcmc_config(num_cycles=1, exploration=0.5, samples_per_cycle=2, prior_std=2.0, noise_std=0.5)
  info = DataInfo((2,), 0, 10)
  task = sgmcmc.make_task(_sg_linear(1), m, info)
  batch = {"x": jnp.asarray(_XS), "y": jnp.asarray(_YS[:, None])}
  rng = jax.random.PRNGKey(3)
  params = task.init(rng, batch)
  collect = jax.jit(task.trajectory.collect, static_argnums=(2, 3))
  fresh = hk.without_apply_rng(hk.transform(_sg_linear(1))).init(rng, batch["x"])
  np.testing.assert_array_equal(params["weights"]["linear"]["w"], fresh["linear"]["w"])
  assert params["collected"]["samples"]["linear"]["w"].shape == (2, 2, 1)
  assert params["collected"]["samples"]["linear"]["b"].dtype == jnp.float32
  np.testing.assert_array_equal(params["collected"]["samples"]["linear"]["b"], np.zeros((2, 1)))
  assert params["collected"]["count"].dtype == jnp.int32 and int(params["collected"]["count"]) == 0
  w1, w2, w3 = (_sg_weights(s, 1) for s in (1.0, 2.0, -1.0))
  started = sgmcmc.make_task(_sg_linear(1), m, info, initial_weights=w1).init(rng, batch)["weights"]
  np.testing.assert_array_equal(started["linear"]["w"], w1["linear"]["w"])
  half = jax.tree_util.tree_map(
    lambda a: a.astype(jnp.bfloat16), w1
  )  # the sample slots take the weights' dtype
  slots = sgmcmc.make_task(_sg_linear(1), m, info, initial_weights=half).init(rng, batch)["collected"][
    "samples"
  ]
  assert slots["linear"]["w"].dtype == jnp.bfloat16 and slots["linear"]["w"].shape == (2, 2, 1)
  # loss: mean Gaussian NLL (std 0.5) + |w|² / (2 prior_std² N)
  w = np.asarray(w1["linear"]["w"], np.float64)
  mean = _XS @ w[:, 0] + 0.5
  nll = -np.mean(_normal_log_pdf(_YS, mean, 0.5))
  loss, aux = jax.jit(task.loss)({**params, "weights": w1}, None, batch, 0)
  assert float(aux["nll"]) == pytest.approx(nll, rel=1e-5)
  assert float(loss) == pytest.approx(nll + 0.5 * (np.sum(w**2) + 0.25) / 4.0 / 10, rel=1e-5)
  # 8 steps: sampling from position 4, slots after steps 6 (slot 0) and 8 (slot 1)
  collected = params["collected"]
  collected = collect(collected, w1, 6, 8)
  assert int(collected["count"]) == 1
  collected = collect(collected, w2, 7, 8)  # not kept
  assert int(collected["count"]) == 1
  np.testing.assert_array_equal(collected["samples"]["linear"]["w"][0], w1["linear"]["w"])
  np.testing.assert_array_equal(collected["samples"]["linear"]["w"][1], np.zeros((2, 1)))
  # the predictive: slot 0 and, not yet filled, slot 1 holding the current weights
  means, stds = jax.jit(task.predictor.sample, static_argnums=3)(
    {"weights": w3, "collected": collected}, rng, batch["x"], 5
  )
  assert task.predictor.kind == "regressor"
  w3_mean = _XS @ np.asarray(w3["linear"]["w"])[:, 0] - 0.5
  np.testing.assert_allclose(means, np.stack([mean, w3_mean]), rtol=1e-6)
  np.testing.assert_array_equal(stds, np.full((2, 3), 0.5, np.float32))
  collected = collect(collected, w2, 8, 8)
  assert int(collected["count"]) == 2
  np.testing.assert_array_equal(collected["samples"]["linear"]["b"], [[0.5], [1.0]])
  metrics_ = jax.jit(task.evaluate)({"weights": w3, "collected": collected}, rng, batch)
  w2_mean = _XS @ np.asarray(w2["linear"]["w"])[:, 0] + 1.0
  both = np.stack([mean, w2_mean])
  assert float(metrics_["rmse"]) == pytest.approx(np.sqrt(np.mean((both.mean(0) - _YS) ** 2)), rel=1e-5)
  mixture = scipy.special.logsumexp(_normal_log_pdf(_YS, both, 0.5), axis=0) - np.log(2)
  assert float(metrics_["nll"]) == pytest.approx(-np.mean(mixture), rel=1e-5)
  # the sampler: langevin(m, N = 10, total steps); its first step explores (no noise): - eta g
  tx = task.trajectory.optimizer(8)
  updates, _ = tx.update(w2, tx.init(w1), w1)
  jax.tree_util.tree_map(lambda u, g: np.testing.assert_allclose(u, -0.05 * g, rtol=1e-6), updates, w2)


def test_sgmcmc_task_of_a_classifier_and_its_method_start_from_a_trained_run():
  m = _sgmcmc_config(num_cycles=2, exploration=0.0, samples_per_cycle=1, prior_std=0.5)
  info = DataInfo((2,), 3, 6)
  labels = np.array([0, 2, 1])
  batch = {"x": jnp.asarray(_XS), "y": jnp.asarray(labels)}
  w1, w2 = _sg_weights(1.0, 3), _sg_weights(-0.5, 3)
  task = sgmcmc.METHOD.make_task(
    _sg_linear(3), ml_collections.ConfigDict({**m, "init_from": "/run"}), info, {"init_from": w1}
  )
  params = task.init(jax.random.PRNGKey(0), batch)
  collect = jax.jit(task.trajectory.collect, static_argnums=(2, 3))
  np.testing.assert_array_equal(params["weights"]["linear"]["w"], w1["linear"]["w"])
  fresh = sgmcmc.METHOD.make_task(_sg_linear(3), m, info, {}).init(jax.random.PRNGKey(0), batch)["weights"]
  assert not np.array_equal(fresh["linear"]["w"], w1["linear"]["w"])
  logits = [_XS @ np.asarray(w["linear"]["w"], np.float64) + np.asarray(w["linear"]["b"]) for w in (w1, w2)]
  log_probs = [scipy.special.log_softmax(z, axis=1) for z in logits]
  nll = -np.mean(log_probs[0][np.arange(3), labels])
  loss, aux = jax.jit(task.loss)(params, None, batch, 0)
  assert float(aux["nll"]) == pytest.approx(nll, rel=1e-5)
  sq = sum(float(np.sum(np.square(leaf))) for leaf in jax.tree_util.tree_leaves(w1))
  assert float(loss) == pytest.approx(nll + 0.5 * sq / 0.25 / 6, rel=1e-5)
  # 4 steps in 2 cycles of 2: a sample at the end of each
  collected = collect(params["collected"], w1, 2, 4)
  collected = collect(collected, w2, 4, 4)
  assert int(collected["count"]) == 2
  metrics_ = jax.jit(task.evaluate)({"weights": w1, "collected": collected}, None, batch)
  probs = np.mean([np.exp(lp) for lp in log_probs], axis=0)
  assert float(metrics_["accuracy"]) == pytest.approx(np.mean(probs.argmax(1) == labels))
  assert float(metrics_["nll"]) == pytest.approx(-np.mean(np.log(probs[np.arange(3), labels])), rel=1e-5)
  outputs = jax.jit(task.predictor.sample, static_argnums=3)(
    {"weights": w1, "collected": collected}, None, batch["x"], 1
  )
  assert task.predictor.kind == "classifier" and outputs.shape == (2, 3, 3)
  np.testing.assert_allclose(outputs, np.stack(logits), rtol=1e-5, atol=1e-6)
  assert sgmcmc.METHOD.name == "sgmcmc" and sgmcmc.METHOD.workdir_fields == ("init_from",)
  assert sgmcmc.METHOD.default_config() == sgmcmc.DEFAULTS


# --- checkpoint: checksums, compatibility, one-line reasons ----------------------------------------------


class _Pair(NamedTuple):
  first: object
  second: object


def test_checksums_are_sha256_of_each_arrays_bytes_under_its_path():
  state = {
    "params": {"lin": {"w": jnp.arange(3.0)}},
    "step": np.int32(4),
    "pair": _Pair(jnp.ones(2), [jnp.zeros(1)]),
  }
  sums = checkpoint.checksums(state)
  sha = lambda a: hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()
  assert sums == {
    "pair/first": sha(np.ones(2, np.float32)),
    "pair/second/0": sha(np.zeros(1, np.float32)),
    "params/lin/w": sha(np.arange(3.0, dtype=np.float32)),
    "step": sha(np.int32(4)),
  }
  assert checkpoint._path_name(("params", 2, None)) == "params/2/None"  # keys of no jax key type
  key = jax.random.key(3)
  assert checkpoint.checksums({"rng": key}) == {"rng": sha(jax.random.key_data(key))}
  checkpoint.verify(state, {checkpoint.CHECKSUMS: sums}, "step 4")
  checkpoint.verify(state, None, "step 4")
  checkpoint.verify(state, {}, "step 4")
  flipped = {**state, "params": {"lin": {"w": jnp.array([0.0, 1.0, 2.5])}}}
  with pytest.raises(
    checkpoint.CorruptCheckpoint,
    match=r"^checksum mismatch in params/lin/w: step 4 does not hold what was saved$",
  ):
    checkpoint.verify(flipped, {checkpoint.CHECKSUMS: sums}, "step 4")
  with pytest.raises(checkpoint.CorruptCheckpoint, match=r"^checksum mismatch in extra: "):
    checkpoint.verify({**state, "extra": np.zeros(1)}, {checkpoint.CHECKSUMS: sums}, "step 4")


def test_check_compatible_names_the_first_parameter_that_differs():
  saved = {"a": {"w": np.zeros((2, 3))}, "b": {"w": np.zeros(4)}}
  checkpoint.check_compatible(saved, {"a": {"w": jnp.ones((2, 3))}, "b": {"w": jnp.ones(4)}}, "/run")
  listed = {"a": [np.zeros(2), np.zeros((1, 3))]}  # a list of leaves is a container, not a leaf
  checkpoint.check_compatible(listed, {"a": [jnp.ones(2), jnp.ones((1, 3))]}, "/run")
  with pytest.raises(checkpoint.CheckpointError, match=r"parameter \['a'\]\[1\] has shape \(1, 3\) there"):
    checkpoint.check_compatible(listed, {"a": [jnp.ones(2), jnp.ones(3)]}, "/run")
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"^checkpoint /run holds another model: parameter \['a'\]\['w'\] has shape \(2, 3\) there, "
    r"this config expects \(3, 2\)$",
  ):
    checkpoint.check_compatible(saved, {"a": {"w": np.zeros((3, 2))}, "b": {"w": np.zeros(4)}}, "/run")
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"parameter \['c'\]\['w'\] has shape missing there, this config expects \(1,\)$",
  ):
    checkpoint.check_compatible(saved, {**saved, "c": {"w": np.zeros(1)}}, "/run")
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"parameter \['b'\]\['w'\] has shape \(4,\) there, this config expects missing$",
  ):
    checkpoint.check_compatible(saved, {"a": saved["a"]}, "/run")


def test_reason_is_one_short_line_and_the_holder_record_is_read_back(tmp_path):
  assert checkpoint._reason(ValueError("a\n  b\tc")) == "ValueError: a b c"
  assert checkpoint._reason(OSError("x" * 200)) == "OSError: " + "x" * 160 + " ..."
  assert checkpoint._reason(OSError("x" * 160)) == "OSError: " + "x" * 160
  assert checkpoint._reason(KeyError("y" * 12), limit=10) == "KeyError: 'yyyyyyyyy ..."
  path = str(tmp_path / "run.lock")
  checkpoint._write_json_atomic(path + ".json", {"host": "h", "pid": 7, "started": "t0"})
  assert json.loads((tmp_path / "run.lock.json").read_text()) == {"host": "h", "pid": 7, "started": "t0"}
  assert (tmp_path / "run.lock.json").read_text() == json.dumps(
    {"host": "h", "pid": 7, "started": "t0"}, indent=2
  )
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lock.json"]
  assert checkpoint._holder(path) == "host h, pid 7, since t0"
  (tmp_path / "run.lock.json").write_text("{")
  assert checkpoint._holder(path) == f"holder unknown: {path}.json unreadable"
  assert checkpoint.config_to_json(ml_collections.ConfigDict({"a": (1, 2), "b": {"c": "d"}})) == {
    "a": [1, 2],
    "b": {"c": "d"},
  }


class _State(NamedTuple):
  params: object
  rng: object
  step: object


_INFO = {"input_shape": [3], "num_classes": 2, "num_train": 5, "binary": False, "preprocessing": ""}
_META = {"config": {"lr": 0.5, "sizes": [2, 1]}, "data_info": _INFO}
_CORRUPT = "CorruptCheckpoint: checksum mismatch in params/lin/w: {} does not hold what was saved"


def _saved_state(step):
  rng = jnp.asarray(np.array([0, step], np.uint32))
  return _State({"lin": {"w": jnp.asarray(np.arange(3.0, dtype=np.float32) + step)}}, rng, jnp.int32(step))


def _assert_state(got, step):
  assert isinstance(got, _State)  # restored into the target's structure, not the saved dicts
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(_saved_state(step))):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def _saved_run(workdir, steps, broken=()):
  """A manager of <workdir>/checkpoints holding `steps` (the default max_to_keep), the `broken`
  ones with a wrong checksum of params/lin/w in their meta."""
  manager = checkpoint.make_manager(workdir)
  for step in steps:
    checkpoint.save(manager, step, _saved_state(step), _META)
  for step in broken:
    path = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(step), "meta", "metadata")
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
    meta[checkpoint.CHECKSUMS]["params/lin/w"] = "0" * 64
    with open(path, "w", encoding="utf-8") as f:
      json.dump(meta, f)
  return manager


def test_checkpoints_keep_the_last_three_steps_and_restore_the_newest_with_its_meta(tmp_path):
  workdir = str(tmp_path / "run")
  directory = os.path.join(workdir, "checkpoints")
  with pytest.raises(
    checkpoint.CheckpointError, match=f"^no checkpoints in {workdir} \\(looked for {directory}\\)$"
  ):
    checkpoint.restore_run(workdir)
  manager = _saved_run(workdir, ())
  assert os.listdir(workdir) == ["checkpoints"]  # created before any save
  with pytest.raises(checkpoint.CheckpointError, match=f"^no checkpoints in {directory}$"):
    checkpoint.restore_run(workdir)
  assert checkpoint.restore(manager, _saved_state(0)) is None
  manager = _saved_run(workdir, (1, 2, 3, 4))
  assert manager.all_steps() == [2, 3, 4]  # max_to_keep 3
  with open(os.path.join(directory, "4", "meta", "metadata"), encoding="utf-8") as f:
    assert json.load(f) == {**_META, checkpoint.CHECKSUMS: checkpoint.checksums(_saved_state(4))}
  state, step = checkpoint.restore(manager, _saved_state(0))
  assert step == 4
  _assert_state(state, 4)
  run = checkpoint.restore_run(workdir)
  assert run.step == 4 and run.config == ml_collections.ConfigDict(_META["config"])
  assert run.info == DataInfo((3,), 2, 5, False, "") and isinstance(run.info.input_shape, tuple)
  np.testing.assert_array_equal(run.params["lin"]["w"], [4.0, 5.0, 6.0])
  assert run.params["lin"]["w"].dtype == jnp.float32
  params, config = checkpoint.restore_params(workdir, 2)
  np.testing.assert_array_equal(params["lin"]["w"], [2.0, 3.0, 4.0])
  assert config.lr == 0.5
  other = _State({"lin": {"w": jnp.zeros(4)}}, _saved_state(0).rng, jnp.int32(0))
  with pytest.raises(
    checkpoint.CheckpointError,
    match=f"^checkpoint {directory}/4 holds another model: parameter \\['lin'\\]\\['w'\\] has shape \\(3,\\)",
  ):
    checkpoint.restore(manager, other)


def test_a_failed_save_names_the_step_kept_or_none_and_holds_back_its_stderr(tmp_path, monkeypatch, capsys):
  workdir = str(tmp_path / "run")
  directory = os.path.join(workdir, "checkpoints")
  manager = _saved_run(workdir, ())

  def failing(error):
    def save(*args, **kwargs):
      print("Traceback: Event loop is closed", file=sys.stderr)  # as TensorStore's callbacks print
      raise error

    return save

  waited = []

  def settling():
    waited.append(True)
    print("another write's traceback", file=sys.stderr)

  monkeypatch.setattr(manager, "save", failing(OSError(28, "disk\nfull")))
  monkeypatch.setattr(manager, "wait_until_finished", settling)
  with pytest.raises(
    checkpoint.CheckpointError,
    match=f"^saving checkpoint step 7 in {directory} failed \\(OSError: \\[Errno 28\\] disk full\\); "
    "the last good checkpoint: none was saved$",
  ):
    checkpoint.save(manager, 7, _saved_state(7), {})
  assert capsys.readouterr() == ("", "") and waited == [True]  # the other writes waited for, held back
  monkeypatch.undo()
  real_save = manager.save

  def printing_save(*args, **kwargs):
    print("a line from a save that succeeded", file=sys.stderr)
    return real_save(*args, **kwargs)

  monkeypatch.setattr(manager, "save", printing_save)
  checkpoint.save(manager, 2, _saved_state(2), _META)
  assert capsys.readouterr() == ("", "a line from a save that succeeded\n")  # passed on
  monkeypatch.setattr(manager, "save", failing(OSError("gone")))
  with pytest.raises(
    checkpoint.CheckpointError, match=r"\(OSError: gone\); the last good checkpoint: step 2 is kept$"
  ):
    checkpoint.save(manager, 5, _saved_state(5), _META)
  monkeypatch.undo()
  checkpoint.save(manager, 1, _saved_state(1), _META)  # a step below the newest is saved too
  assert sorted(manager.all_steps()) == [1, 2]


def test_restore_run_skips_steps_that_fail_their_checksums_and_moves_nothing(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  directory = os.path.join(workdir, "checkpoints")
  _saved_run(workdir, (2, 3, 4), broken=(3, 4))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    run = checkpoint.restore_run(workdir)
  assert run.step == 2
  np.testing.assert_array_equal(run.params["lin"]["w"], [2.0, 3.0, 4.0])
  assert [r.getMessage() for r in caplog.records] == [
    f"using checkpoint step 2 of {directory}, not the newest: "
    f"step 4: {_CORRUPT.format(directory + '/4')}; step 3: {_CORRUPT.format(directory + '/3')}"
  ]
  _saved_run(workdir, (), broken=(2,))
  with pytest.raises(
    checkpoint.CheckpointError,
    match=f"^no readable checkpoint in {directory}: step 4: {re.escape(_CORRUPT.format(directory + '/4'))}; "
    f"step 3: {re.escape(_CORRUPT.format(directory + '/3'))}; step 2: ",
  ):
    checkpoint.restore_run(workdir)
  assert sorted(os.listdir(directory)) == ["2", "3", "4"]


def test_restore_sets_unreadable_steps_aside_one_line_each_and_resumes_from_the_newest_readable(
  tmp_path, caplog
):
  workdir = str(tmp_path / "run")
  directory = os.path.join(workdir, "checkpoints")
  manager = _saved_run(workdir, (2, 3, 4), broken=(3, 4))
  caplog.clear()
  start = int(time.time())
  with caplog.at_level(logging.WARNING):
    state, step = checkpoint.restore(manager, _saved_state(0))
  assert step == 2
  _assert_state(state, 2)
  aside = os.path.join(workdir, "unreadable_checkpoints")
  names = sorted(os.listdir(aside))
  assert [n.split("-")[0] for n in names] == ["3", "4"]
  assert all(start <= int(n.split("-")[1]) <= time.time() for n in names)
  assert [r.getMessage() for r in caplog.records] == [
    f"checkpoint step 4 is unreadable ({_CORRUPT.format(directory + '/4')}); moved to {aside}",
    f"checkpoint step 3 is unreadable ({_CORRUPT.format(directory + '/3')}); moved to {aside}",
    f"resuming from checkpoint step 2 in {directory}, the newest readable one",
  ]
  assert manager.all_steps() == [2] and os.listdir(directory) == ["2"]
  # every step broken: an error naming each, and they stay in place
  manager = _saved_run(workdir, (6,), broken=(2, 6))
  with pytest.raises(
    checkpoint.CheckpointError,
    match=f"^no readable checkpoint in {directory}: step 6: {re.escape(_CORRUPT.format(directory + '/6'))}; "
    f"step 2: {re.escape(_CORRUPT.format(directory + '/2'))}$",
  ):
    checkpoint.restore(manager, _saved_state(0))
  assert sorted(os.listdir(directory)) == ["2", "6"]


def test_restore_run_reads_a_checkpoint_of_another_topology_onto_this_processs_first_device(tmp_path):
  workdir = str(tmp_path / "run")
  manager = checkpoint.make_manager(workdir)
  state = _State({"lin": [jnp.ones(2), jnp.arange(3.0)]}, _saved_state(0).rng, jnp.int32(1))
  checkpoint.save(manager, 1, state, _META)
  path = os.path.join(workdir, "checkpoints", "1", "state", "_sharding")
  with open(path, encoding="utf-8") as f:
    shardings = f.read()
  assert shardings.count('\\"cpu:0\\"') == 4
  with open(path, "w", encoding="utf-8") as f:  # as if written on device 7 of another host
    f.write(shardings.replace("cpu:0", "cpu:7"))
  leaves = checkpoint.restore_run(workdir).params["lin"]
  np.testing.assert_array_equal(leaves[1], [0.0, 1.0, 2.0])
  assert leaves[1].sharding == jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def test_set_aside_moves_on_process_0_only_and_waits_for_every_process(tmp_path, monkeypatch):
  directory = tmp_path / "checkpoints"
  (directory / "3").mkdir(parents=True)
  (directory / "5").mkdir()
  calls = []
  monkeypatch.setattr(checkpoint.ocp.multihost, "sync_global_processes", calls.append)
  manager = ml_collections.ConfigDict({"directory": str(directory)})
  aside = str(tmp_path / "unreadable_checkpoints")
  assert checkpoint._set_aside(manager, 3) == aside  # one process: moved, no barrier
  assert calls == [] and os.listdir(directory) == ["5"] and os.listdir(aside)[0].startswith("3-")
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert checkpoint._set_aside(manager, 5) == aside  # process 1 of 2: waits for process 0's move
  assert calls == ["bnnjax_set_aside_5"] and os.listdir(directory) == ["5"]


def test_conv_estimators_keep_a_bfloat16_layer_in_bfloat16_and_an_all_zero_patch_exact():
  q = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), _conv_posterior())
  x = jnp.asarray(_XC, jnp.bfloat16)
  for estimator in ("local", "flipout"):
    net = estimators.bayesian_transform(lambda x: hk.Conv2D(3, 2)(x), estimator)
    out = net.apply(q, jax.random.PRNGKey(1), x)
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 3, 3, 3)
  # no bias, zero input: the variance is 0 and the draw the mean, 0 (not NaN)
  q = _conv_posterior()
  q = {
    "mean": {"conv2_d": {"w": q["mean"]["conv2_d"]["w"]}},
    "log_std": {"conv2_d": {"w": q["log_std"]["conv2_d"]["w"]}},
  }
  net = estimators.bayesian_transform(lambda x: hk.Conv2D(3, 2, with_bias=False)(x), "local")
  out = net.apply(q, jax.random.PRNGKey(1), np.zeros((1, 3, 3, 2), np.float32))
  assert np.isfinite(out).all() and np.abs(out).max() < 1e-13  # the 1e-30 variance floor: std 1e-15


def test_dense_estimators_keep_a_bfloat16_layer_in_bfloat16():
  q = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), _linear_posterior())
  x = jnp.asarray(_X, jnp.bfloat16)
  for estimator in ("local", "flipout"):
    net = estimators.bayesian_transform(lambda x: hk.Linear(2)(x), estimator)
    out = net.apply(q, jax.random.PRNGKey(1), x)
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 2), (estimator, out.dtype)


def test_local_reparameterisation_of_an_unbatched_convolution_is_the_documented_draw():
  q, rng = _conv_posterior(), jax.random.PRNGKey(14)
  net = estimators.bayesian_transform(lambda x: hk.Conv2D(3, 2)(x), "local")
  m, s = q["mean"]["conv2_d"], posterior.stds(q)["conv2_d"]
  x = _XC[0]
  mean = _conv(x[None], m["w"])[0] + m["b"]
  std = jnp.sqrt(_conv(x[None] ** 2, s["w"] ** 2)[0] + s["b"] ** 2)
  eps = distributions.standard_normal(_first_key(rng), (3, 3, 3))
  np.testing.assert_allclose(net.apply(q, rng, x), mean + std * eps, rtol=1e-4, atol=1e-5)


class _InputDilatedConv2D(hk.Conv2D):
  """A Conv2D whose input is dilated by 2, as Haiku's own call honours `lhs_dilation`."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.lhs_dilation = (2, 2)


@pytest.mark.parametrize(
  "make_layer",
  [
    lambda: hk.Conv2D(4, 2, rate=2, feature_group_count=2, name="conv"),
    lambda: _InputDilatedConv2D(4, 2, padding=((1, 1), (0, 1)), name="conv"),
  ],
  ids=["kernel_dilation_and_groups", "input_dilation"],
)
def test_local_reparameterisation_convolves_as_the_layer_does_dilated_or_grouped(make_layer):
  """The variance path is the layer's own convolution (Haiku's, with kernel sigma^2 and bias
  sigma_b^2) of x^2: dilations and feature groups included."""
  x = jnp.asarray(np.linspace(-1.0, 1.0, 2 * 5 * 5 * 2, dtype=np.float32).reshape(2, 5, 5, 2))
  layer = hk.without_apply_rng(hk.transform(lambda x: make_layer()(x)))
  shapes = jax.tree_util.tree_map(jnp.shape, layer.init(jax.random.PRNGKey(0), x))["conv"]
  w_size = int(np.prod(shapes["w"]))
  mean = {"w": jnp.linspace(-1.0, 1.0, w_size).reshape(shapes["w"]), "b": jnp.array([0.1, -0.2, 0.3, 0.0])}
  std = {"w": 0.05 + jnp.arange(w_size, dtype=jnp.float32).reshape(shapes["w"]) / 40, "b": jnp.full(4, 0.2)}
  q = {"mean": {"conv": mean}, "log_std": {"conv": jax.tree_util.tree_map(jnp.log, std)}}
  rng = jax.random.PRNGKey(16)
  out = estimators.bayesian_transform(lambda x: make_layer()(x), "local").apply(q, rng, x)
  variance = layer.apply({"conv": {"w": std["w"] ** 2, "b": std["b"] ** 2}}, x**2)
  at_mean = layer.apply({"conv": mean}, x)
  eps = distributions.standard_normal(_first_key(rng), at_mean.shape)
  np.testing.assert_allclose(out, at_mean + jnp.sqrt(variance) * eps, rtol=1e-4, atol=1e-5)


def test_swag_keeps_the_last_rank_deviations_in_their_slots():
  """Rank 3, four snapshots: slot (count - 1) mod 3, so the fourth overwrites the first."""
  snapshots = [np.array(w, np.float32) for w in ([1.0, 2.0], [3.0, -1.0], [0.0, 4.0], [2.0, 2.0])]
  moments = swag.empty_moments({"l": {"w": jnp.zeros(2)}}, 3)
  for w in snapshots:
    moments = swag.add_snapshot(moments, {"l": {"w": jnp.asarray(w)}}, jnp.asarray(True))
  means = [np.mean(snapshots[: k + 1], axis=0) for k in range(4)]
  expected = np.stack([snapshots[3] - means[3], snapshots[1] - means[1], snapshots[2] - means[2]])
  np.testing.assert_allclose(moments["deviations"]["l"]["w"], expected, rtol=1e-6)
  assert int(moments["count"]) == 4
  np.testing.assert_allclose(moments["mean"]["l"]["w"], means[3], rtol=1e-6)


def test_swag_draws_its_weights_before_a_snapshot_and_draws_at_rank_one():
  weights = {"l": {"w": jnp.asarray([0.5, -2.0])}}
  empty = swag.empty_moments(weights, 1)
  drawn = swag.sample_weights(empty, weights, jax.random.PRNGKey(0), 1)
  np.testing.assert_array_equal(drawn["l"]["w"], weights["l"]["w"])  # count 0: the weights themselves
  moments = swag.add_snapshot(empty, {"l": {"w": jnp.asarray([1.0, 1.0])}}, jnp.asarray(True))
  moments = swag.add_snapshot(moments, {"l": {"w": jnp.asarray([3.0, -1.0])}}, jnp.asarray(True))
  drawn = swag.sample_weights(moments, weights, jax.random.PRNGKey(0), 1)["l"]["w"]
  assert drawn.shape == (2,) and np.isfinite(drawn).all() and not np.allclose(drawn, weights["l"]["w"])


def test_swag_checks_its_snapshot_count_with_exact_one_liners():
  swag.check_snapshots(_swag_config(rank=0, collect_every=10), 5)  # diagonal SWAG: no minimum
  swag.check_snapshots(_swag_config(rank=3, collect_every=2), 6)  # 3 snapshots for rank 3
  swag.check_snapshots(_swag_config(rank=1, collect_every=2), 4)  # rank 1 still needs 2
  for (rank, every, steps), message in (
    ((3, 2, 5), "config.model.rank=3 needs at least 3 snapshots, but 5 steps with collect_every=2 take 2"),
    ((1, 2, 3), "config.model.rank=1 needs at least 2 snapshots, but 3 steps with collect_every=2 take 1"),
  ):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      swag.check_snapshots(_swag_config(rank=rank, collect_every=every), steps)


def test_swag_task_initialises_collects_and_samples_by_hand():
  info, m = DataInfo((2,), 3, 10), _swag_config(rank=2, collect_every=3, eval_samples=4)
  assert swag.METHOD.name == "swag" and swag.METHOD.default_config() == swag.DEFAULTS
  assert swag.METHOD.workdir_fields == ("init_from",)
  batch, rng = {"x": jnp.asarray(_DX[:4]), "y": jnp.asarray(_ELABELS)}, jax.random.PRNGKey(4)
  net = hk.without_apply_rng(hk.transform(_sg_linear(3)))
  task = swag.METHOD.make_task(_sg_linear(3), m, info, None)
  assert task.predictor.kind == "classifier"
  params = task.init(rng, batch)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params["weights"], net.init(rng, batch["x"]))
  assert int(params["collected"]["count"]) == 0
  assert params["collected"]["deviations"]["linear"]["w"].shape == (2, 2, 3)
  # init_from: the trained run's weights (a posterior's means), the snapshots' start
  w0 = _sg_weights(1.0, 3)
  m_from = _swag_config(rank=2, collect_every=3, eval_samples=4, init_from="runs/point")
  trained = {"mean": w0, "log_std": jax.tree_util.tree_map(jnp.zeros_like, w0)}
  task = swag.METHOD.make_task(_sg_linear(3), m_from, info, {"init_from": trained})
  params = task.init(rng, batch)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params["weights"], w0)
  # the loss is the point estimate's mean NLL of the weights; the moments do not enter
  logits = np.asarray(_DX[:4], np.float64) @ np.asarray(w0["linear"]["w"]) + np.asarray(w0["linear"]["b"])
  nll = -scipy.special.log_softmax(logits, -1)[np.arange(4), _ELABELS].mean()
  loss, _ = task.loss(params, None, batch, 0)
  assert float(loss) == pytest.approx(nll, rel=1e-5)
  # a snapshot every collect_every = 3 steps taken
  collect = task.trajectory.collect
  w1, w2 = _sg_weights(2.0, 3), _sg_weights(-1.0, 3)
  moments = collect(params["collected"], w1, jnp.asarray(3), 100)
  assert int(collect(moments, w2, jnp.asarray(4), 100)["count"]) == 1
  moments = collect(moments, w2, jnp.asarray(6), 100)
  expected = swag.add_snapshot(
    swag.add_snapshot(params["collected"], w1, jnp.asarray(True)), w2, jnp.asarray(True)
  )
  jax.tree_util.tree_map(np.testing.assert_array_equal, moments, expected)
  # K draws: the network at sample_weights of split(rng, K)[k]; evaluate takes K = eval_samples
  params = {"weights": w0, "collected": moments}
  key = jax.random.PRNGKey(8)
  drawn = [net.apply(swag.sample_weights(moments, w0, k, 2), batch["x"]) for k in jax.random.split(key, 4)]
  np.testing.assert_allclose(task.predictor.sample(params, key, batch["x"], 4), np.stack(drawn), rtol=1e-5)
  metrics_ = task.evaluate(params, key, batch)
  expected = ensemble.predictive_metrics(jnp.stack(drawn), batch["y"], True, 1.0)
  assert sorted(metrics_) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(metrics_[name], expected[name], rtol=1e-5, atol=1e-6)
  # the optimiser hook checks the snapshot count of the run's steps (rank 2 at every 3: >= 6 steps)
  assert task.trajectory.optimizer(6) is None
  with pytest.raises(ValueError, match=r"^config.model.rank=2 needs at least 2 snapshots, but 5 steps"):
    task.trajectory.optimizer(5)


def test_swag_keeps_bfloat16_weights_in_bfloat16():
  weights = {"l": {"w": jnp.asarray([0.5, -2.0], jnp.bfloat16)}}
  moments = swag.empty_moments(weights, 2)
  assert moments["deviations"]["l"]["w"].dtype == jnp.bfloat16
  moments = swag.add_snapshot(moments, {"l": {"w": jnp.asarray([1.0, 1.0], jnp.bfloat16)}}, jnp.asarray(True))
  moments = swag.add_snapshot(
    moments, {"l": {"w": jnp.asarray([3.0, -1.0], jnp.bfloat16)}}, jnp.asarray(True)
  )
  assert {a.dtype for a in jax.tree_util.tree_leaves(moments)} == {
    jnp.dtype(jnp.bfloat16),
    jnp.dtype(jnp.int32),
  }
  key = jax.random.PRNGKey(3)
  assert swag.sample_weights(moments, weights, key, 2)["l"]["w"].dtype == jnp.bfloat16
  diagonal = swag.sample_weights(moments, weights, key, 0)["l"]["w"]
  k0 = jax.random.split(key, 2)[0]
  mean, sq = moments["mean"]["l"]["w"], moments["sq_mean"]["l"]["w"]
  std = jnp.sqrt(jnp.maximum(sq - mean * mean, 0.0))
  assert diagonal.dtype == jnp.bfloat16
  np.testing.assert_array_equal(diagonal, mean + std * jax.random.normal(k0, (2,), jnp.bfloat16))


# --- methods/dropout.py ----------------------------------------------------------------------------------


def _dropout_config(**fields):
  return ml_collections.ConfigDict({**dropout.DEFAULTS, **fields})


def test_mc_dropout_config_errors_are_exact_one_liners():
  assert dropout.DEFAULTS == dict(dropout_rate=0.1, eval_samples=16, noise_std=1.0, likelihood="gaussian")
  dropout.validate(_dropout_config(dropout_rate=0.0, eval_samples=1, noise_std=1e-9))
  cases = [
    ("dropout_rate", -0.1, r"config.model.dropout_rate must lie in \[0, 1\), got -0.1"),
    ("dropout_rate", 1.0, r"config.model.dropout_rate must lie in \[0, 1\), got 1.0"),
    ("eval_samples", 0, r"config.model.eval_samples \(K\) must be an integer >= 1, got 0"),
    ("eval_samples", True, r"config.model.eval_samples \(K\) must be an integer >= 1, got True"),
    ("noise_std", 0.0, r"config.model.noise_std must be positive, got 0.0"),
  ]
  assert_one_line_errors(dropout.validate, _dropout_config, cases)


def test_mc_inverted_dropout_is_the_documented_mask_and_rate_zero_is_the_input_itself():
  key, x = jax.random.PRNGKey(5), jnp.linspace(-1.0, 2.0, 24).reshape(4, 6)
  keep = np.asarray(jax.random.bernoulli(key, 0.75, (4, 6)))
  assert 0 < keep.sum() < 24
  dropped = dropout.inverted_dropout(key, 0.25, x)
  np.testing.assert_allclose(dropped, np.where(keep, np.asarray(x) / 0.75, 0.0), rtol=1e-6, atol=0)
  assert dropout.inverted_dropout(None, 0.0, x) is x  # rate 0: no key used, x unchanged
  half = dropout.inverted_dropout(key, 0.25, x.astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16


class _ShiftedLinear(hk.Linear):
  """An hk.Linear that takes one more positional and one keyword argument: x @ w + shift, times scale."""

  def __call__(self, inputs, shift, *, scale=1.0):
    w = hk.get_parameter(
      "w", (inputs.shape[-1], self.output_size), inputs.dtype, hk.initializers.Constant(0.5)
    )
    return scale * (inputs @ w + shift)


def _dropout_forward(outputs):
  def forward(x):
    h = jnp.tanh(hk.Linear(4, name="first")(x))
    h = hk.LayerNorm(-1, True, True, name="norm")(h)
    h = jnp.tanh(_ShiftedLinear(3, name="shifted")(h, 0.25, scale=2.0))
    return hk.Linear(outputs, name="last")(h)

  return forward


def _dropout_by_hand(outputs, rate):
  """The same network with the dropout of every hk.Linear's input but the first written out."""

  def forward(x):
    h = jnp.tanh(hk.Linear(4, name="first")(x))
    h = hk.LayerNorm(-1, True, True, name="norm")(h)
    h = dropout.inverted_dropout(hk.next_rng_key(), rate, h)
    h = jnp.tanh(_ShiftedLinear(3, name="shifted")(h, 0.25, scale=2.0))
    return hk.Linear(outputs, name="last")(dropout.inverted_dropout(hk.next_rng_key(), rate, h))

  return hk.transform(forward)


_DX = np.array(
  [[1.0, 0.0], [0.5, -1.0], [-2.0, 1.5], [0.3, 0.3], [-1.0, -0.5], [2.0, 1.0], [0.0, -2.0], [1.5, -0.5]],
  np.float32,
)


_DW1 = np.array([[0.8, -0.5, 0.3, 1.1], [-0.4, 0.9, -1.2, 0.2]], np.float32)
_DB1 = np.array([0.1, -0.2, 0.05, 0.0], np.float32)
_DW2 = np.array([[1.0, -0.7, 0.4], [0.3, 0.8, -0.9], [-1.1, 0.2, 0.6], [0.5, -0.4, -0.3]], np.float32)


def test_mc_dropout_transform_drops_the_input_of_every_linear_after_the_first_with_the_documented_keys():
  net = dropout.dropout_transform(_dropout_forward(2), 0.5)
  plain = dropout.dropout_transform(_dropout_forward(2), 0.0)
  by_hand = _dropout_by_hand(2, 0.5)

  rng = jax.random.PRNGKey(7)
  shapes = jax.eval_shape(net.init, rng, _DX)  # forward's own params (nothing compiled)
  assert jax.tree_util.tree_map(lambda a: a.shape, shapes) == {
    "first": {"w": (2, 4), "b": (4,)},
    "norm": {"scale": (4,), "offset": (4,)},
    "shifted": {"w": (4, 3)},
    "last": {"w": (3, 2), "b": (2,)},
  }
  params = {
    "first": {"w": jnp.asarray(_DW1), "b": jnp.asarray(_DB1)},
    "norm": {"scale": jnp.asarray([1.0, 0.5, 2.0, 1.5]), "offset": jnp.asarray([0.1, -0.2, 0.0, 0.3])},
    "shifted": {"w": jnp.asarray(_DW2[:, :3])},
    "last": {"w": jnp.asarray(_DW2[:3, :2]), "b": jnp.asarray([0.1, -0.1])},
  }

  def run(params, rng):
    keys = jax.random.split(rng, 3)
    by_hand_outputs = jax.vmap(by_hand.apply, (None, 0, None))(params, keys, _DX)
    deterministic = hk.transform(_dropout_forward(2)).apply(params, None, _DX)
    # K masks: the network applied with each of split(rng, K); at rate 0 no key is drawn (rng=None)
    outputs = dropout.sample_outputs(net, params, rng, _DX, 3)
    return outputs, by_hand_outputs, (plain.apply(params, None, _DX), deterministic)

  outputs, by_hand_outputs, (at_zero, deterministic) = jax.jit(run)(params, rng)
  assert outputs.shape == (3, 8, 2)
  np.testing.assert_allclose(outputs, by_hand_outputs, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(at_zero, deterministic)
  assert np.abs(outputs[0] - deterministic).max() > 1e-2 and np.abs(outputs[0] - outputs[1]).max() > 1e-2
  with pytest.raises(ValueError, match=r"^num_samples \(K\) must be an integer >= 1, got 0$"):
    dropout.sample_outputs(net, params, None, _DX, 0)


def _dropout_mlp(outputs):
  return lambda x: hk.Linear(outputs, name="last")(jnp.tanh(hk.Linear(4, name="first")(x)))


def _dropout_mlp_by_hand(outputs, rate):
  def forward(x):
    h = jnp.tanh(hk.Linear(4, name="first")(x))
    return hk.Linear(outputs, name="last")(dropout.inverted_dropout(hk.next_rng_key(), rate, h))

  return hk.transform(forward)


def by_hand_width(by_hand):
  return jax.eval_shape(by_hand.init, jax.random.PRNGKey(0), _DX)["last"]["b"].shape[0]


def _dropout_task_by_hand(task, by_hand, rng, batch, num_samples):
  """One jit: the task's init, loss, K-sample predictive and evaluate, and the network by hand on the
  same keys (split(rng, 1)[0] for the loss, split(rng, K) for the predictive)."""

  width = _DW2.shape[1] if task.predictor.kind == "classifier" else by_hand_width(by_hand)
  shapes = jax.eval_shape(task.init, rng, batch)  # the network's own params (nothing compiled)
  assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), shapes) == {
    "first": {"w": ((2, 4), jnp.float32), "b": ((4,), jnp.float32)},
    "last": {"w": ((4, width), jnp.float32), "b": ((width,), jnp.float32)},
  }
  params = {
    "first": {"w": jnp.asarray(_DW1), "b": jnp.asarray(_DB1)},
    "last": {"w": jnp.asarray(_DW2[:, :width]), "b": jnp.full((width,), 0.1, jnp.float32)},
  }
  apply_by_hand = jax.vmap(by_hand.apply, (None, 0, None))

  def run(params, rng):
    return {
      "loss": task.loss(params, rng, batch, 0),
      "sample": task.predictor.sample(params, rng, batch["x"], num_samples),
      "evaluate": task.evaluate(params, rng, batch),
      "one": apply_by_hand(params, jax.random.split(rng, 1), batch["x"])[0],
      "k": apply_by_hand(params, jax.random.split(rng, num_samples), batch["x"]),
    }

  return params, jax.jit(run)(params, rng)


def _mixture_metrics(means, stds, y):
  """RMSE, mixture NLL and 95% coverage of K Gaussians [K, B] (float64)."""
  means, stds = np.asarray(means, np.float64), np.broadcast_to(np.asarray(stds, np.float64), means.shape)
  mean = means.mean(0)
  std = np.sqrt(np.mean(stds**2, 0) + np.var(means, 0))
  z = scipy.special.ndtri(0.975)
  log_mix = scipy.special.logsumexp(_normal_log_pdf(y, means, stds), axis=0) - np.log(len(means))
  return {
    "rmse": np.sqrt(np.mean((mean - y) ** 2)),
    "nll": -np.mean(log_mix),
    "coverage_95": np.mean((y >= mean - z * std) & (y <= mean + z * std)),
  }


def test_mc_dropout_task_of_a_classifier_by_hand():
  m = _dropout_config(dropout_rate=0.5, eval_samples=3)
  info = DataInfo((2,), 3, 10)
  labels = np.array([0, 2, 1, 1, 0, 2, 2, 1])
  batch = {"x": jnp.asarray(_DX), "y": jnp.asarray(labels)}
  task = dropout.METHOD.make_task(_dropout_mlp(3), m, info, None)
  assert dropout.METHOD.name == "dropout" and dropout.METHOD.default_config() == dropout.DEFAULTS
  assert dropout.METHOD.num_outputs(m, info) == 3
  _, out = _dropout_task_by_hand(task, _dropout_mlp_by_hand(3, 0.5), jax.random.PRNGKey(2), batch, 3)
  one = np.asarray(out["one"], np.float64)
  nll = -np.mean(scipy.special.log_softmax(one, 1)[np.arange(8), labels])
  loss, aux = out["loss"]
  assert float(loss) == pytest.approx(nll, rel=1e-5) and float(aux["nll"]) == pytest.approx(nll, rel=1e-5)
  logits = np.asarray(out["k"], np.float64)
  assert task.predictor.kind == "classifier"
  np.testing.assert_allclose(out["sample"], logits, rtol=1e-5, atol=1e-6)
  probs = np.exp(scipy.special.log_softmax(logits, -1)).mean(0)
  assert len({tuple(p.argmax(-1)) for p in logits}) > 1  # the masks change the predictions
  metrics_ = out["evaluate"]
  assert float(metrics_["accuracy"]) == pytest.approx(np.mean(probs.argmax(-1) == labels))
  assert float(metrics_["nll"]) == pytest.approx(-np.mean(np.log(probs[np.arange(8), labels])), rel=1e-5)
  with pytest.raises(ValueError, match=r"^config.model.dropout_rate must lie in \[0, 1\), got 1.0$"):
    dropout.make_task(_dropout_mlp(3), _dropout_config(dropout_rate=1.0), info)
  with pytest.raises(ValueError, match=r"^classification needs >= 2 classes, got num_classes=1$"):
    dropout.make_task(_dropout_mlp(1), m, DataInfo((2,), 1, 10))
  with pytest.raises(ValueError, match=r"^config.model.likelihood='heteroscedastic' needs a regression"):
    dropout.make_task(_dropout_mlp(3), _dropout_config(likelihood="heteroscedastic"), info)


@pytest.mark.parametrize("likelihood", ["gaussian", "heteroscedastic"])
def test_mc_dropout_task_of_a_regressor_by_hand(likelihood):
  m = _dropout_config(dropout_rate=0.5, eval_samples=4, noise_std=0.5, likelihood=likelihood)
  info = DataInfo((2,), 0, 10)
  width = 2 if likelihood == "heteroscedastic" else 1
  assert dropout.METHOD.num_outputs(m, info) == width
  y = np.array([0.5, -1.0, 2.0, 0.0, 1.0, -0.3, 0.2, 9.0], np.float32)
  batch = {"x": jnp.asarray(_DX), "y": jnp.asarray(y[:, None])}
  task = dropout.make_task(_dropout_mlp(width), m, info)
  _, out = _dropout_task_by_hand(task, _dropout_mlp_by_hand(width, 0.5), jax.random.PRNGKey(4), batch, 4)

  def gaussians(outputs):
    outputs = np.asarray(outputs, np.float64)
    if width == 1:
      return outputs[..., 0], np.full(outputs.shape[:-1], 0.5)
    return outputs[..., 0], 1e-3 + np.logaddexp(0.0, outputs[..., 1])

  mean, std = gaussians(out["one"])
  loss, aux = out["loss"]
  assert float(loss) == pytest.approx(-np.mean(_normal_log_pdf(y, mean, std)), rel=1e-5)
  assert float(aux["nll"]) == pytest.approx(float(loss))
  means, stds = gaussians(out["k"])
  assert task.predictor.kind == "regressor"
  np.testing.assert_allclose(out["sample"][0], means, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["sample"][1], stds, rtol=1e-5)
  expected = _mixture_metrics(means, stds, y)
  assert 0 < expected["coverage_95"] < 1
  assert set(out["evaluate"]) == set(expected)
  for name, value in expected.items():
    assert float(out["evaluate"][name]) == pytest.approx(value, rel=1e-5), name


# --- methods/ensemble.py ---------------------------------------------------------------------------------


def _ensemble_config(**fields):
  return ml_collections.ConfigDict({**ensemble.DEFAULTS, **fields})


def test_ensemble_config_errors_are_exact_one_liners():
  assert ensemble.DEFAULTS == dict(
    ensemble_size=5, noise_std=1.0, likelihood="gaussian", bootstrap=False, prior_function_scale=0.0
  )
  ensemble.validate(_ensemble_config(ensemble_size=1, noise_std=1e-9, bootstrap=True, prior_function_scale=0))
  ensemble.validate(_ensemble_config(likelihood="heteroscedastic"))
  cases = [
    ({"ensemble_size": 0}, r"config.model.ensemble_size must be an integer >= 1, got 0"),
    ({"ensemble_size": True}, r"config.model.ensemble_size must be an integer >= 1, got True"),
    ({"ensemble_size": 2.0}, r"config.model.ensemble_size must be an integer >= 1, got 2.0"),
    ({"noise_std": 0.0}, r"config.model.noise_std must be positive, got 0.0"),
    ({"bootstrap": 1}, r"config.model.bootstrap must be True or False, got 1"),
    (
      {"prior_function_scale": -0.5},
      r"config.model.prior_function_scale must be a finite number >= 0, got -0.5",
    ),
    (
      {"prior_function_scale": math.inf},
      r"config.model.prior_function_scale must be a finite number >= 0, got inf",
    ),
    (
      {"prior_function_scale": True},
      r"config.model.prior_function_scale must be a finite number >= 0, got True",
    ),
    (
      {"prior_function_scale": "1"},
      r"config.model.prior_function_scale must be a finite number >= 0, got '1'",
    ),
    (
      {"prior_function_scale": 0.5, "likelihood": "heteroscedastic"},
      r"config.model.prior_function_scale > 0 needs a classifier or the 'gaussian' regression likelihood: "
      r"the 'heteroscedastic' head's std output takes no prior function",
    ),
  ]
  for fields, message in cases:
    with pytest.raises(ValueError, match=f"^{message}$"):
      ensemble.validate(_ensemble_config(**fields))
  assert ensemble.check_outputs(DataInfo((2,), 2, 5)) is True
  assert ensemble.check_outputs(DataInfo((2,), 0, 5)) is False
  with pytest.raises(ValueError, match=r"^classification needs >= 2 classes, got num_classes=1$"):
    ensemble.check_outputs(DataInfo((2,), 1, 5))


def _np_mix32(h):
  h = np.asarray(h, np.uint64)
  h = h ^ (h >> 16)
  h = (h * 0x85EBCA6B) & 0xFFFFFFFF
  h = h ^ (h >> 13)
  h = (h * 0xC2B2AE35) & 0xFFFFFFFF
  return h ^ (h >> 16)


def _np_example_hash(x, y):
  def bits(a):
    a = np.asarray(a).reshape(len(a), -1)
    return a.astype(np.float32).view(np.uint32) if a.dtype.kind == "f" else a.astype(np.uint32)

  flat = np.concatenate([bits(x), bits(y)], axis=1).astype(np.uint64)
  position = (np.arange(flat.shape[1], dtype=np.uint64) * 0x9E3779B9) & 0xFFFFFFFF
  return _np_mix32(np.sum(_np_mix32(flat ^ position), axis=1) & 0xFFFFFFFF).astype(np.uint32)


def test_member_keys_example_hash_and_bootstrap_weights_by_hand():
  rng = jax.random.PRNGKey(11)
  keys = ensemble.member_keys(rng, 3)
  np.testing.assert_array_equal(keys[0], rng)
  np.testing.assert_array_equal(keys[1:], jax.random.split(jax.random.fold_in(rng, 1), 2))
  np.testing.assert_array_equal(ensemble.member_keys(rng, 1), rng[None])
  # MurmurHash3's finaliser on uint32, the example's bits summed mod 2³² with their positions
  x = jnp.asarray(_DX[:, :, None] * np.array([1.0, -0.5, 3.0], np.float32))  # [8, 2, 3]
  labels = jnp.asarray([0, 2, 1, 7, 3, 1, 0, 5])
  targets = jnp.asarray(_DX[:, :1] - 0.25)
  half = x.astype(jnp.bfloat16)
  hashes, of_targets, of_half = jax.jit(
    lambda: (
      ensemble.example_hash(x, labels),
      ensemble.example_hash(x, targets),
      ensemble.example_hash(half, labels),
    )
  )()
  assert hashes.dtype == jnp.uint32
  np.testing.assert_array_equal(hashes, _np_example_hash(x, labels))
  np.testing.assert_array_equal(of_targets, _np_example_hash(x, targets))
  np.testing.assert_array_equal(of_half, _np_example_hash(half.astype(np.float32), labels))
  # w[m, i] = F⁻¹(uniform(fold_in(keys[m], hash_i))): the number of Poisson(1) CDF entries <= u
  cdf = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(16)])
  member = jax.random.split(jax.random.PRNGKey(3), 3)
  draw = jax.vmap(jax.vmap(lambda k, h: jax.random.uniform(jax.random.fold_in(k, h)), (None, 0)), (0, None))
  u, weights = jax.jit(lambda: (draw(member, hashes), ensemble.bootstrap_weights(member, x, labels)))()
  expected = np.sum(np.asarray(u)[..., None] >= cdf.astype(np.float32), axis=-1)
  assert weights.dtype == jnp.float32 and weights.shape == (3, 8)
  np.testing.assert_array_equal(weights, expected)
  assert {0, 1, 2} <= set(expected.ravel().tolist())


_EY = np.array([0.5, -1.0, 2.0, 9.0], np.float32)
_ELABELS = np.array([0, 2, 1, 1])
_ELOGITS = np.array(
  [
    [[1.0, 0.2, -0.5], [0.1, 0.3, 2.0], [-1.0, 0.5, 0.0], [2.0, -0.3, 0.4]],
    [[0.2, 0.9, -0.1], [1.5, -0.2, 0.3], [0.3, -0.4, 1.2], [-0.5, 1.0, 0.1]],
  ],
  np.float32,
)  # [M = 2, B = 4, C = 3]


def _gaussians_of(outputs, likelihood, noise_std=0.5):
  outputs = np.asarray(outputs, np.float64)
  if likelihood == "gaussian":
    return outputs[..., 0], np.full(outputs.shape[:-1], noise_std)
  return outputs[..., 0], 1e-3 + np.logaddexp(0.0, outputs[..., 1])


def test_ensemble_nlls_predictor_and_predictive_metrics_by_hand():
  apply = lambda w, x: x @ w  # noqa: E731
  x = jnp.asarray(_DX[:4])
  stacked = jnp.asarray(_DW2[None, :2] * np.array([1.0, -2.0], np.float32)[:, None, None])  # [2, 2, 3]
  likelihoods_ = (("gaussian", 1), ("heteroscedastic", 2))

  def everything(logits, labels, y):
    out = {
      "classifier": (
        ensemble.example_nlls(logits, labels, True, 0.5),
        ensemble.member_nlls(logits, labels, True, 0.5),
        ensemble.predictive_metrics(logits, labels, True, 0.5),
        ensemble.sample_predictor(apply, True, 0.5).sample(stacked, None, x, 7),
      ),
      # the gaussian likelihood's default: noise_std alone
      "default": ensemble.sample_predictor(apply, False, 0.25).sample(stacked[..., :1], None, x, 1),
    }
    for likelihood, width in likelihoods_:
      outputs = logits[..., :width]
      out[likelihood] = (
        ensemble.example_nlls(outputs, y, False, 0.5, likelihood),
        ensemble.member_nlls(outputs, y, False, 0.5, likelihood),
        ensemble.predictive_metrics(outputs, y, False, 0.5, likelihood),
        ensemble.sample_predictor(apply, False, 0.5, likelihood).sample(stacked[..., :width], None, x, 7),
      )
    return out

  out = jax.jit(everything)(jnp.asarray(_ELOGITS), jnp.asarray(_ELABELS), jnp.asarray(_EY))
  log_p = scipy.special.log_softmax(_ELOGITS.astype(np.float64), -1)[:, np.arange(4), _ELABELS]  # [2, 4]
  example, member, metrics_, sampled = out["classifier"]
  np.testing.assert_allclose(example, -log_p, rtol=1e-5)
  np.testing.assert_allclose(member, -log_p.mean(1), rtol=1e-5)
  probs = np.exp(scipy.special.log_softmax(_ELOGITS.astype(np.float64), -1)).mean(0)
  assert float(metrics_["accuracy"]) == pytest.approx(np.mean(probs.argmax(-1) == _ELABELS)) == 0.5
  assert float(metrics_["nll"]) == pytest.approx(-np.mean(np.log(probs[np.arange(4), _ELABELS])), rel=1e-5)
  assert ensemble.sample_predictor(apply, True, 0.5).kind == "classifier"
  np.testing.assert_allclose(sampled, np.stack([_DX[:4] @ w for w in stacked]), rtol=1e-6)
  for likelihood, width in likelihoods_:
    example, member, metrics_, (means, stds) = out[likelihood]
    mean, std = _gaussians_of(_ELOGITS[..., :width], likelihood)
    nlls = -_normal_log_pdf(_EY, mean, std)
    np.testing.assert_allclose(example, nlls, rtol=1e-5)
    np.testing.assert_allclose(member, nlls.mean(1), rtol=1e-5)
    expected = _mixture_metrics(mean, std, _EY)
    assert set(metrics_) == set(expected) and 0 < expected["coverage_95"] < 1
    for name, value in expected.items():
      assert float(metrics_[name]) == pytest.approx(value, rel=1e-5), (likelihood, name)
    assert ensemble.sample_predictor(apply, False, 0.5, likelihood).kind == "regressor"
    mean, std = _gaussians_of(np.stack([_DX[:4] @ w for w in stacked[..., :width]]), likelihood)
    np.testing.assert_allclose(means, mean, rtol=1e-5)
    np.testing.assert_allclose(stds, std, rtol=1e-5)
  np.testing.assert_array_equal(out["default"][1], np.full((2, 4), 0.25, np.float32))


def _members(tree, i):
  return jax.tree_util.tree_map(lambda a: a[i], tree)


def _stacked_linear(scales, outputs):
  return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *(_sg_weights(s, outputs) for s in scales))


def _linear_outputs(stacked, x):
  """[M, B, C] of the stacked one-layer nets, float64."""
  w, b = (np.asarray(stacked["linear"][k], np.float64) for k in ("w", "b"))
  return np.einsum("bi,mio->mbo", np.asarray(x, np.float64), w) + b[:, None]


def _task_outputs(task, params, batch):
  """(loss, aux), evaluate's metrics and the predictor's draws of `params` on `batch`, in one jit."""
  return jax.jit(
    lambda p: (
      task.loss(p, None, batch, 0),
      task.evaluate(p, None, batch),
      task.predictor.sample(p, None, batch["x"], 5),
    )
  )(params)


def test_poisson1_inverse_cdf_counts_the_cdf_entries_at_or_below_u_in_float32():
  """F(k) = e^-1 sum_{j <= k} 1/j!, 16 entries; u on F(k) draws k + 1, u below F(0) draws 0."""
  cdf = np.cumsum([math.exp(-1.0) / math.factorial(j) for j in range(16)]).astype(np.float32)
  u = jnp.asarray([0.0, np.nextafter(cdf[0], 0), cdf[0], 0.5, cdf[1], 0.95, cdf[3], 0.9999, 1.0], jnp.float32)
  got = ensemble.poisson1_inverse_cdf(u)
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(got, [0, 0, 1, 1, 2, 3, 4, 6, 16])
  np.testing.assert_array_equal(ensemble.poisson1_inverse_cdf(jnp.asarray([[0.5], [0.95]])), [[1], [3]])


def test_ensemble_task_by_hand():
  info = DataInfo((2,), 3, 10)
  m = _ensemble_config(ensemble_size=2)
  task = ensemble.METHOD.make_task(_sg_linear(3), m, info, None)
  assert ensemble.METHOD.name == "ensemble" and ensemble.METHOD.default_config() == ensemble.DEFAULTS
  assert ensemble.METHOD.num_outputs(m, info) == 3
  assert (
    ensemble.METHOD.num_outputs(_ensemble_config(likelihood="heteroscedastic"), DataInfo((2,), 0, 9)) == 2
  )
  assert task.trajectory is None and task.predictor.kind == "classifier"
  batch = {"x": jnp.asarray(_DX[:4]), "y": jnp.asarray(_ELABELS)}
  rng = jax.random.PRNGKey(6)
  params = task.init(rng, batch)
  net = hk.without_apply_rng(hk.transform(_sg_linear(3)))
  members = jax.jit(jax.vmap(net.init, (0, None)))(ensemble.member_keys(rng, 2), _DX[:1])  # member i: key i
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, members)
  params = _stacked_linear((1.0, -0.5), 3)
  logits = _linear_outputs(params, _DX[:4])
  log_softmax = scipy.special.log_softmax(logits, -1)
  nlls = -log_softmax[:, np.arange(4), _ELABELS]  # [M, B]
  probs = np.exp(log_softmax).mean(0)
  predictive_nll = -np.mean(np.log(probs[np.arange(4), _ELABELS]))
  (loss, aux), metrics_, sampled = _task_outputs(task, params, batch)
  assert float(loss) == pytest.approx(nlls.mean(1).sum(), rel=1e-5)  # the members' NLLs summed
  assert float(aux["nll"]) == pytest.approx(nlls.mean(), rel=1e-5)
  assert float(aux["ensemble_nll"]) == pytest.approx(predictive_nll, rel=1e-5)
  assert set(metrics_) == {"accuracy", "nll", "member_nll"}
  assert float(metrics_["accuracy"]) == pytest.approx(np.mean(probs.argmax(-1) == _ELABELS))
  assert float(metrics_["nll"]) == pytest.approx(predictive_nll, rel=1e-5)
  assert float(metrics_["member_nll"]) == pytest.approx(nlls.mean(), rel=1e-5)
  np.testing.assert_allclose(sampled, logits, rtol=1e-5, atol=1e-6)
  # regressors: the gaussian likelihood (noise_std) and the heteroscedastic head
  y = jnp.asarray(_EY[:, None])
  for likelihood, width in (("gaussian", 1), ("heteroscedastic", 2)):
    m = _ensemble_config(ensemble_size=2, noise_std=0.5, likelihood=likelihood)
    task = ensemble.make_task(_sg_linear(width), m, DataInfo((2,), 0, 10))
    assert task.predictor.kind == "regressor"
    params = _stacked_linear((1.0, -0.5), width)
    mean, std = _gaussians_of(_linear_outputs(params, _DX[:4]), likelihood)
    nlls = -_normal_log_pdf(_EY, mean, std)
    (loss, aux), metrics_, (means, stds) = _task_outputs(task, params, {"x": batch["x"], "y": y})
    assert float(loss) == pytest.approx(nlls.mean(1).sum(), rel=1e-5), likelihood
    assert float(aux["nll"]) == pytest.approx(nlls.mean(), rel=1e-5), likelihood
    expected = _mixture_metrics(mean, std, _EY)
    assert float(aux["ensemble_nll"]) == pytest.approx(expected["nll"], rel=1e-5), likelihood
    assert set(metrics_) == {*expected, "member_nll"}
    for name, value in {**expected, "member_nll": nlls.mean()}.items():
      assert float(metrics_[name]) == pytest.approx(value, rel=1e-5), (likelihood, name)
    np.testing.assert_allclose(means, mean, rtol=1e-5)
    np.testing.assert_allclose(stds, std, rtol=1e-5)
  with pytest.raises(ValueError, match=r"^config.model.ensemble_size must be an integer >= 1, got 0$"):
    ensemble.make_task(_sg_linear(3), _ensemble_config(ensemble_size=0), info)
  with pytest.raises(ValueError, match=r"^classification needs >= 2 classes, got num_classes=1$"):
    ensemble.make_task(_sg_linear(1), m, DataInfo((2,), 1, 10))
  with pytest.raises(ValueError, match=r"^config.model.likelihood='heteroscedastic' needs a regression"):
    ensemble.make_task(_sg_linear(3), _ensemble_config(likelihood="heteroscedastic"), info)


def test_ensemble_task_with_bootstrap_weights_and_prior_functions_by_hand():
  info = DataInfo((2,), 3, 10)
  batch = {"x": jnp.asarray(_DX[:4]), "y": jnp.asarray(_ELABELS)}
  rng = jax.random.PRNGKey(8)
  net = hk.without_apply_rng(hk.transform(_sg_linear(3)))
  task = ensemble.make_task(
    _sg_linear(3), _ensemble_config(ensemble_size=3, bootstrap=True, prior_function_scale=2.0), info
  )
  assert task.predictor.kind == "classifier"
  params = task.init(rng, batch)
  assert set(params) == {"weights", "collected"} and set(params["collected"]) == {"prior", "bootstrap_keys"}
  init = jax.jit(jax.vmap(net.init, (0, None)))  # members [M, ...] of the given keys
  jax.tree_util.tree_map(
    np.testing.assert_array_equal, params["weights"], init(ensemble.member_keys(rng, 3), _DX[:1])
  )
  prior_keys = jax.random.split(jax.random.fold_in(rng, 2), 3)
  jax.tree_util.tree_map(
    np.testing.assert_array_equal, params["collected"]["prior"], init(prior_keys, _DX[:1])
  )
  keys = params["collected"]["bootstrap_keys"]
  np.testing.assert_array_equal(keys, jax.random.split(jax.random.fold_in(rng, 3), 3))
  # f_m = g(θ_m) + 2 g(φ_m); member m's loss: (1 / B) Σ_i w_mi NLL_mi
  theta, phi = _stacked_linear((1.0, -0.5, 0.3), 3), _stacked_linear((0.25, 0.75, -0.4), 3)
  params = {"weights": theta, "collected": {"prior": phi, "bootstrap_keys": keys}}
  logits = _linear_outputs(theta, _DX[:4]) + 2.0 * _linear_outputs(phi, _DX[:4])
  log_softmax = scipy.special.log_softmax(logits, -1)
  nlls = -log_softmax[:, np.arange(4), _ELABELS]
  probs = np.exp(log_softmax).mean(0)
  predictive_nll = -np.mean(np.log(probs[np.arange(4), _ELABELS]))

  def loss_of(theta, phi):
    return task.loss({"weights": theta, "collected": {"prior": phi, "bootstrap_keys": keys}}, None, batch, 0)

  def run(params):
    return (
      jax.value_and_grad(loss_of, (0, 1), has_aux=True)(params["weights"], params["collected"]["prior"]),
      task.evaluate(params, None, batch),
      task.predictor.sample(params, None, batch["x"], 5),
      ensemble.bootstrap_weights(keys, batch["x"], batch["y"]),
    )

  ((loss, aux), grads), metrics_, sampled, weights = jax.jit(run)(params)
  weights = np.asarray(weights)
  assert not np.all(weights == 1)
  assert float(loss) == pytest.approx(np.sum(np.mean(weights * nlls, 1)), rel=1e-5)
  assert float(aux["nll"]) == pytest.approx(nlls.mean(), rel=1e-5)
  assert float(aux["ensemble_nll"]) == pytest.approx(predictive_nll, rel=1e-5)
  assert all(np.all(g == 0) for g in jax.tree_util.tree_leaves(grads[1]))  # φ: no gradient
  assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(grads[0]))
  assert set(metrics_) == {"accuracy", "nll", "member_nll"}
  assert float(metrics_["accuracy"]) == pytest.approx(np.mean(probs.argmax(-1) == _ELABELS))
  assert float(metrics_["nll"]) == pytest.approx(predictive_nll, rel=1e-5)
  assert float(metrics_["member_nll"]) == pytest.approx(nlls.mean(), rel=1e-5)
  np.testing.assert_allclose(sampled, logits, rtol=1e-5, atol=1e-5)
  assert task.trajectory.collect(params["collected"], theta, 3, 10) is params["collected"]
  # prior functions alone, a regressor: the mean output gains β g(φ); each member's plain mean NLL
  m = _ensemble_config(ensemble_size=2, noise_std=0.5, prior_function_scale=0.5)
  task = ensemble.make_task(_sg_linear(1), m, DataInfo((2,), 0, 10))
  assert task.predictor.kind == "regressor"
  assert set(jax.eval_shape(task.init, rng, batch)["collected"]) == {"prior"}
  theta, phi = _stacked_linear((1.0, -0.5), 1), _stacked_linear((0.25, 0.75), 1)
  params = {"weights": theta, "collected": {"prior": phi}}
  mean = (_linear_outputs(theta, _DX[:4]) + 0.5 * _linear_outputs(phi, _DX[:4]))[..., 0]
  nlls = -_normal_log_pdf(_EY, mean, 0.5)
  y = jnp.asarray(_EY[:, None])
  (loss, aux), metrics_, (means, stds) = _task_outputs(task, params, {"x": batch["x"], "y": y})
  assert float(loss) == pytest.approx(nlls.mean(1).sum(), rel=1e-5)
  expected = _mixture_metrics(mean, 0.5, _EY)
  for name, value in {**expected, "member_nll": nlls.mean()}.items():
    assert float(metrics_[name]) == pytest.approx(value, rel=1e-5), name
  np.testing.assert_allclose(means, mean, rtol=1e-5)
  np.testing.assert_array_equal(stds, np.full((2, 4), 0.5, np.float32))
  # the bootstrap alone, the heteroscedastic head: no prior, outputs g(θ_m)
  m = _ensemble_config(ensemble_size=2, likelihood="heteroscedastic", bootstrap=True)
  task = ensemble.make_task(_sg_linear(2), m, DataInfo((2,), 0, 10))
  assert set(jax.eval_shape(task.init, rng, batch)["collected"]) == {"bootstrap_keys"}
  keys = jax.random.split(jax.random.PRNGKey(9), 2)
  params = {"weights": _stacked_linear((1.0, -0.5), 2), "collected": {"bootstrap_keys": keys}}
  mean, std = _gaussians_of(_linear_outputs(params["weights"], _DX[:4]), "heteroscedastic")
  nlls = -_normal_log_pdf(_EY, mean, std)
  (loss, aux), _, (means, stds) = _task_outputs(task, params, {"x": batch["x"], "y": y})
  weights = np.asarray(jax.jit(ensemble.bootstrap_weights)(keys, batch["x"], y))
  assert float(loss) == pytest.approx(np.sum(np.mean(weights * nlls, 1)), rel=1e-5)
  np.testing.assert_allclose(means, mean, rtol=1e-5)
  np.testing.assert_allclose(stds, std, rtol=1e-5)


# --- methods/laplace_layers.py: the evidence, the KFAC factors' algebra, the output square roots ----------


def test_laplace_layers_checks_evidence_and_kfac_algebra_by_hand():
  laplace_layers.check_structure("kfac")
  laplace_layers.check_predictive("glm")
  with pytest.raises(
    ValueError, match=r"^Laplace structure must be one of last_layer, diagonal, kfac, got 'full'$"
  ):
    laplace_layers.check_structure("full")
  with pytest.raises(
    ValueError,
    match=r"^Laplace predictive for a diagonal or KFAC posterior must be one of mc, glm, got 'probit'$",
  ):
    laplace_layers.check_predictive("probit")
  # (P/2) log λ − (λ/2) ‖θ‖² − ½ Σ log(e_j + λ), e clipped at 0, for λ of any shape
  e = np.array([[-0.5], [1.0], [3.0], [0.25]])
  lam = np.array([[0.1, 1.0], [10.0, 3.0]])
  expected = 2 * np.log(lam) - lam - 0.5 * sum(np.log(max(v, 0.0) + lam) for v in e.ravel())
  out = laplace_layers.log_evidence_terms(e, 2.0, lam)
  assert out.shape == (2, 2)
  np.testing.assert_allclose(out, expected, rtol=1e-5)
  # equal eigenvalues e: the maximiser solves λ² + eλ − P e / ‖θ‖² = 0; the grid's best point
  grid = np.logspace(-4, 6, 2001)
  f = lambda g: 2 * np.log(g) - g - 2 * np.log(3.0 + g)  # noqa: E731  P = 4, e = 3, ‖θ‖² = 2
  best = laplace_layers.tune_prior_precision(np.full(4, 3.0), 2.0)
  assert isinstance(best, float) and best == pytest.approx(grid[np.argmax(f(grid))], rel=1e-5)
  assert best == pytest.approx((-3 + np.sqrt(9 + 4 * 4 * 3 / 2.0)) / 2, rel=0.006)
  # a λ beyond the grid: its top end, 10⁶
  assert laplace_layers.tune_prior_precision(np.full(4, 1e8), 1e-12) == pytest.approx(1e6, rel=2e-7)
  # the terms in float32 for a bfloat16 λ, not in bfloat16
  half = jnp.asarray(lam, jnp.bfloat16)
  lam16 = np.asarray(half, np.float64)
  expected = 2 * np.log(lam16) - lam16 - 0.5 * sum(np.log(max(v, 0.0) + lam16) for v in e.ravel())
  out = laplace_layers.log_evidence_terms(e, 2.0, half)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=1e-5)
  small = np.logspace(-2, 2, 401)
  assert laplace_layers.tune_prior_precision(np.full(4, 3.0), 2.0, 0.01, 100.0, 401) == pytest.approx(
    small[np.argmax(f(small))], rel=1e-5
  )
  assert (
    float(laplace_layers._sq_norm({"a": jnp.asarray([1.0, -2.0]), "b": {"c": jnp.asarray([[3.0]])}})) == 14.0
  )
  # KFAC factors: eigenvalues clipped at 0, vectors of the matrix as given; Ā ⊗ G + λ I
  a, g = jnp.asarray([[1.0, 2.0], [2.0, 1.0]]), jnp.asarray([[2.0, 0.0], [0.0, 0.5]])
  factors = laplace_layers._kron_factors(a, g)
  np.testing.assert_array_equal(factors.a, a)
  np.testing.assert_array_equal(factors.g, g)
  np.testing.assert_allclose(factors.a_eigenvalues, [0.0, 3.0], atol=1e-6)
  np.testing.assert_allclose(factors.g_eigenvalues, [0.5, 2.0], atol=1e-6)
  np.testing.assert_allclose(laplace_layers._kron_factors(g, a).g_eigenvalues, [0.0, 3.0], atol=1e-6)
  q = np.asarray(factors.a_vectors)
  np.testing.assert_allclose(q @ np.diag([-1.0, 3.0]) @ q.T, a, atol=1e-5)
  q = np.asarray(factors.g_vectors)
  np.testing.assert_allclose(q @ np.diag([0.5, 2.0]) @ q.T, g, atol=1e-6)
  np.testing.assert_allclose(
    laplace_layers.kfac_precision(factors, 0.25), np.kron(a, g) + 0.25 * np.eye(4), rtol=1e-6
  )
  posterior = laplace_layers.KFACPosterior(
    None, {"one": factors, "two": factors._replace(g_eigenvalues=jnp.asarray([4.0]))}, 1.0
  )
  np.testing.assert_allclose(
    laplace_layers.curvature_eigenvalues(posterior), [0.0, 0.0, 1.5, 6.0, 0.0, 12.0], atol=1e-5
  )
  ggn = {"w": jnp.asarray([[1.0, 2.0]]), "b": jnp.asarray([3.0])}
  diagonal = laplace_layers.DiagonalPosterior(None, ggn, jnp.asarray(0.5))
  np.testing.assert_array_equal(
    laplace_layers.curvature_eigenvalues(diagonal), [3.0, 1.0, 2.0]
  )  # leaves: b, w
  np.testing.assert_array_equal(diagonal.precision["w"], [[1.5, 2.5]])
  # S_i S_iᵀ = H_i: diag(p) − p pᵀ for a softmax (column c is (e_c − p) √p_c); I / noise_std²
  logits = jnp.asarray([[1.0, 0.0, -1.0], [0.5, 2.0, 0.1]])
  roots = np.asarray(laplace_layers._output_sqrt(logits, True, 0.5), np.float64)
  p = np.asarray(jax.nn.softmax(logits), np.float64)
  for i in range(2):
    np.testing.assert_allclose(
      roots[i], (np.eye(3) - p[i][:, None]) * np.sqrt(p[i])[None], rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(roots[i] @ roots[i].T, np.diag(p[i]) - np.outer(p[i], p[i]), atol=1e-6)
  roots = laplace_layers._output_sqrt(jnp.asarray([[0.3], [1.0], [-2.0]]), False, 0.5)  # B = 3, C = 1
  assert roots.dtype == jnp.float32
  np.testing.assert_array_equal(roots, np.full((3, 1, 1), 2.0, np.float32))
  np.testing.assert_array_equal(
    laplace_layers._output_sqrt(logits, False, 0.5),
    np.broadcast_to(2.0 * np.eye(3, dtype=np.float32), (2, 3, 3)),
  )
  # in the outputs' dtype
  half = logits.astype(jnp.bfloat16)
  assert laplace_layers._output_sqrt(half, True, 0.5).dtype == jnp.bfloat16
  assert laplace_layers._output_sqrt(half, False, 0.5).dtype == jnp.bfloat16


# --- methods/laplace_layers.py: the dense-layer pass, fit, the draws -------------------------------------


def _ll_net(num_outputs):
  """x [B, 2] -> tanh(x W1 + b1) W2 [B, num_outputs]: a dense layer with a bias, then one without."""

  def net(x):
    h = jnp.tanh(hk.Linear(3, name="first")(x))
    return hk.Linear(num_outputs, with_bias=False, name="last")(h)

  return net


_LL_NETS = {c: _ll_net(c) for c in (1, 2)}


def _ll_problem(num_outputs, n=5):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(n, 2)).astype(np.float32)
  params = {
    "first": {"w": rng.normal(size=(2, 3)), "b": rng.normal(size=3)},
    "last": {"w": rng.normal(size=(3, num_outputs))},
  }
  return x, jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)


def _ll_forward(params, x, delta=None):
  """float64 (outputs, h, dh): tanh(x W1 + b1) W2 and, for a delta of the params, J(x) delta."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(x, np.float64)
  h = np.tanh(x @ p["first"]["w"] + p["first"]["b"])
  out = h @ p["last"]["w"]
  if delta is None:
    return out, h
  d = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), delta)
  dh = (1 - h**2) * (x @ d["first"]["w"] + d["first"]["b"])
  return out, h, dh @ p["last"]["w"] + h @ d["last"]["w"]


def _ll_hand_curvature(x, params, classification, noise_std):
  """float64, per layer: KFAC's (Ā = mean ã ãᵀ, G = Σ_i J_iᵀ H_i J_i with J_i = ∂f_i/∂z_i) and the GGN
  diagonal Σ_i ã_i² diag(J_iᵀ H_i J_i)ᵀ over [w; b], written out for `_ll_net`."""
  outputs, hs = _ll_forward(params, x)
  w2 = np.asarray(params["last"]["w"], np.float64)
  num_outputs = w2.shape[1]
  sums = {"first": [0.0, 0.0, 0.0], "last": [0.0, 0.0, 0.0]}
  for x1, h, f in zip(np.asarray(x, np.float64), hs, outputs):
    if classification:
      p = np.exp(f - f.max()) / np.exp(f - f.max()).sum()
      hessian = np.diag(p) - np.outer(p, p)
    else:
      hessian = np.eye(num_outputs) / noise_std**2
    for name, a, jac in (
      ("first", np.append(x1, 1.0), w2.T * (1 - h**2)[None]),  # ∂f/∂z1 [C, 3]
      ("last", h, np.eye(num_outputs)),
    ):
      block = jac.T @ hessian @ jac
      sums[name][0] = sums[name][0] + np.outer(a, a) / len(x)
      sums[name][1] = sums[name][1] + block
      sums[name][2] = sums[name][2] + np.outer(a * a, np.diag(block))
  kfac = {name: (s[0], s[1]) for name, s in sums.items()}
  diag = {"first": {"w": sums["first"][2][:2], "b": sums["first"][2][2]}, "last": {"w": sums["last"][2]}}
  return kfac, diag


def _ll_assert_tree_close(got, expected, rtol=2e-5, atol=1e-6):
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
  for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
    assert np.shape(g) == np.shape(e)
    np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=rtol, atol=atol)


def test_laplace_dense_layers_and_their_tapped_inputs_by_hand():
  x, params = _ll_problem(2)
  net = _LL_NETS[2]
  assert laplace_layers.dense_layers(net, params, (2,)) == {"first": (2, 3, True), "last": (3, 2, False)}
  shapes = laplace_layers._linear_inputs(net, params, (2,))
  assert list(shapes) == ["first", "last"]
  assert [(s.shape, s.dtype) for s in shapes.values()] == [((1, 2), jnp.float32), ((1, 3), jnp.float32)]
  # taps added to each hk.Linear's output, the inputs recorded; taps None: the network itself
  taps = {"first": jnp.full((5, 3), 0.25), "last": jnp.asarray([[1.0, -1.0]] * 5)}
  out, inputs = laplace_layers._tapped(net).apply(params, x, taps)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  h = np.tanh(x @ p["first"]["w"] + p["first"]["b"] + 0.25)
  np.testing.assert_allclose(out, h @ p["last"]["w"] + [1.0, -1.0], rtol=1e-5, atol=1e-6)
  assert list(inputs) == ["first", "last"]
  np.testing.assert_array_equal(inputs["first"], x)
  np.testing.assert_allclose(inputs["last"], h, rtol=1e-5, atol=1e-6)
  out, inputs = laplace_layers._tapped(net).apply(params, x, None)
  np.testing.assert_allclose(out, _ll_forward(params, x)[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(inputs["last"], _ll_forward(params, x)[1], rtol=1e-5, atol=1e-6)
  assert laplace_layers._all_dense(shapes, params)
  assert not laplace_layers._all_dense({}, {})
  assert not laplace_layers._all_dense(shapes, {**params, "conv": {}})
  assert not laplace_layers._all_dense(
    {**shapes, "last": jax.ShapeDtypeStruct((1, 1, 3), jnp.float32)}, params
  )

  def none(x):
    return hk.Flatten()(hk.Conv2D(2, 2, padding="VALID")(x))

  def others(x):  # two layers that are not hk.Linear: the first by name is named
    x = hk.Conv2D(2, 2, name="z_conv")(x)
    return hk.Linear(3, name="head")(hk.Flatten()(hk.Conv2D(1, 2, name="a_conv")(x)))

  def again(x):
    layer = hk.Linear(2, name="shared")
    return layer(layer(hk.Flatten()(x)[:, :2]))

  def flat(x):  # hk.Linear maps the last axis of any input; KFAC needs [B, in]
    y = hk.Linear(2, name="flat_a")(x.reshape(len(x), 2, 8))
    return hk.Linear(2, name="flat_b")(y.reshape(len(x), 1, 4))

  images = jnp.zeros((1, 4, 4, 1))
  for fn, message in (
    (none, "KFAC Laplace needs dense layers (hk.Linear); this network has none"),
    (
      others,
      "KFAC Laplace covers dense layers (hk.Linear) only; layer 'a_conv' is not one "
      "(structure='diagonal' covers every layer)",
    ),
    (again, "KFAC Laplace needs each hk.Linear called once; 'shared' is called again"),
    (flat, "KFAC Laplace needs a dense layer's input as [B, in]; 'flat_a' gets (1, 2, 8)"),
  ):
    fn_params = hk.transform(fn).init(jax.random.PRNGKey(0), images)
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      laplace_layers.dense_layers(fn, fn_params, (4, 4, 1))


def test_laplace_layer_curvature_is_the_hand_kfac_and_ggn_diagonal_over_padded_batches():
  for classification, num_outputs, noise_std, batch_size in ((True, 2, 1.0, 2), (False, 1, 0.5, 500)):
    x, params = _ll_problem(num_outputs)
    net = _LL_NETS[num_outputs]
    kfac, diag = _ll_hand_curvature(x, params, classification, noise_std)
    kwargs = dict(noise_std=noise_std, batch_size=batch_size)
    _ll_assert_tree_close(laplace_layers.layer_curvature(net, params, x, classification, **kwargs), kfac)
    got = laplace_layers.layer_curvature(net, params, x, classification, kfac=False, **kwargs)
    _ll_assert_tree_close(got, diag)
  # a dense layer with a bias and fewer outputs than inputs: its bias is row `in` of [w; b]
  x3, params3, phi = _lla_problem(2)
  got = laplace_layers.layer_curvature(_LLA_NETS[2, True], params3, x3, True, kfac=False)["head"]
  hand = np.diag(_lla_hand_ggn(phi, params3["head"], True, 1.0))  # over (b, w.ravel())
  np.testing.assert_allclose(got["b"], hand[:2], rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(got["w"].ravel(), hand[2:], rtol=2e-5, atol=1e-6)
  # noise_std 1 by default (x, params: the regressor's); integer inputs are taken as float32
  _ll_assert_tree_close(
    laplace_layers.layer_curvature(net, params, x, False), _ll_hand_curvature(x, params, False, 1.0)[0]
  )
  x, params = _ll_problem(2)
  counts = np.round(2 * x).astype(np.int32)
  got = laplace_layers.layer_curvature(_LL_NETS[2], params, counts, True, batch_size=2, kfac=False)
  _ll_assert_tree_close(got, _ll_hand_curvature(counts.astype(np.float32), params, True, 1.0)[1])


def test_laplace_fit_is_the_hand_curvature_with_a_given_or_tuned_prior_precision(monkeypatch):
  fisher_calls, real_fisher = [], fisher.diagonal_fisher

  def recorded_fisher(*args, **kwargs):  # (classification, noise_std, ...) of each call
    fisher_calls.append(args[3:] + tuple(kwargs.values()))
    return real_fisher(*args, **kwargs)

  monkeypatch.setattr(fisher, "diagonal_fisher", recorded_fisher)
  x, params = _ll_problem(2)
  net, info = _LL_NETS[2], DataInfo((2,), 2, 5)
  kfac, diag = _ll_hand_curvature(x, params, True, 1.0)
  post = laplace_layers.fit(net, params, x, info, "kfac", prior_precision=0.7, batch_size=2)
  assert isinstance(post, laplace_layers.KFACPosterior) and post.params is params
  assert post.prior_precision.dtype == jnp.float32 and float(post.prior_precision) == np.float32(0.7)
  assert sorted(post.factors) == ["first", "last"]
  for name, (a, g) in kfac.items():
    f = post.factors[name]
    _ll_assert_tree_close((f.a, f.g), (a, g))
    np.testing.assert_allclose(f.a_eigenvalues, np.clip(np.linalg.eigvalsh(a), 0, None), atol=1e-5)
    np.testing.assert_allclose(f.g_eigenvalues, np.clip(np.linalg.eigvalsh(g), 0, None), atol=1e-5)
  post = laplace_layers.fit(net, params, x, info, "diagonal", batch_size=2)  # λ by the evidence
  assert isinstance(post, laplace_layers.DiagonalPosterior) and post.params is params
  _ll_assert_tree_close(post.ggn, diag)
  tuned = laplace_layers.tune_prior_precision(
    laplace_layers.curvature_eigenvalues(post), laplace_layers._sq_norm(params)
  )
  assert post.prior_precision.dtype == jnp.float32 and float(post.prior_precision) == np.float32(tuned)
  # a regressor: H = I / noise_std²
  x, params = _ll_problem(1)
  net, info = _LL_NETS[1], DataInfo((2,), 0, 5)
  kfac, diag = _ll_hand_curvature(x, params, False, 0.5)
  post = laplace_layers.fit(net, params, x, info, "kfac", noise_std=0.5)
  _ll_assert_tree_close({k: (f.a, f.g) for k, f in post.factors.items()}, kfac)
  tuned = laplace_layers.tune_prior_precision(
    laplace_layers.curvature_eigenvalues(post), laplace_layers._sq_norm(params)
  )
  assert float(post.prior_precision) == np.float32(tuned)
  post = laplace_layers.fit(net, params, x, info, "diagonal", prior_precision=2.0, noise_std=0.5)
  _ll_assert_tree_close(post.ggn, diag)
  assert float(post.prior_precision) == 2.0
  post = laplace_layers.fit(net, params, x, info, "diagonal", prior_precision=2.0)  # noise_std 1 by default
  _ll_assert_tree_close(post.ggn, _ll_hand_curvature(x, params, False, 1.0)[1])
  assert fisher_calls == []  # dense layers only: the factors' one pass, not per-example gradients
  # a convolution: the diagonal of bnnjax.methods.fisher, with the same likelihood
  images = jnp.asarray(np.random.default_rng(4).normal(size=(3, 3, 3, 1)), jnp.float32)

  def conv_net(x):
    return hk.Linear(1, name="head")(hk.Flatten()(hk.Conv2D(1, 2, name="conv")(x)))

  conv_params = hk.transform(conv_net).init(jax.random.PRNGKey(0), images)
  post = laplace_layers.fit(
    conv_net, conv_params, images, DataInfo((3, 3, 1), 0, 3), "diagonal", prior_precision=1.0, noise_std=0.5
  )
  assert post.params is conv_params and fisher_calls == [(False, 0.5)]
  expected = real_fisher(conv_net, conv_params, images, False, 0.5)
  _ll_assert_tree_close(post.ggn, jax.tree_util.tree_map(np.asarray, expected), rtol=1e-6)
  for kwargs, message in (
    (dict(structure="full"), "Laplace structure must be one of last_layer, diagonal, kfac, got 'full'"),
    (dict(prior_precision=0.0), "prior_precision must be positive (or None to tune it), got 0.0"),
    (dict(prior_precision=float("nan")), "prior_precision must be positive (or None to tune it), got nan"),
    (dict(info=DataInfo((2,), 1, 5)), "classification needs >= 2 classes, got num_classes=1"),
  ):
    kwargs = {"structure": "kfac", "info": info, **kwargs}
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      laplace_layers.fit(net, params, x, **kwargs)


def test_laplace_draws_deltas_outputs_and_its_predictor_by_the_documented_formulas():
  x, params = _ll_problem(2)
  net, rng, k = _LL_NETS[2], jax.random.PRNGKey(4), 3
  # diagonal: δ = ε / √(diag + λ), one key of split(rng, leaves) per leaf in tree order
  ggn = jax.tree_util.tree_map(lambda p: jnp.abs(p) + 0.5, params)
  post = laplace_layers.DiagonalPosterior(params, ggn, jnp.float32(2.0))
  leaves, treedef = jax.tree_util.tree_flatten(ggn)
  keys = jax.random.split(rng, len(leaves))
  expected = [
    np.asarray(jax.random.normal(key, (k, *p.shape)), np.float64) / np.sqrt(np.asarray(p, np.float64) + 2.0)
    for key, p in zip(keys, leaves)
  ]
  _ll_assert_tree_close(
    laplace_layers.sample_deltas(post, rng, k), jax.tree_util.tree_unflatten(treedef, expected)
  )
  # KFAC: layer i (sorted by name) draws ε from fold_in(rng, i); δ = Q_A [ε / √(α γᵀ + λ)] Q_Gᵀ over [w; b]
  kfac, _ = _ll_hand_curvature(x, params, True, 1.0)
  factors = {
    name: laplace_layers._kron_factors(*(jnp.asarray(m, jnp.float32) for m in kfac[name]))
    for name in ("last", "first")
  }
  post = laplace_layers.KFACPosterior(params, factors, jnp.float32(0.5))
  expected = {}
  for i, name in enumerate(["first", "last"]):
    f = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), factors[name])
    scale = 1 / np.sqrt(np.outer(f.a_eigenvalues, f.g_eigenvalues) + 0.5)
    eps = np.asarray(jax.random.normal(jax.random.fold_in(rng, i), (k, *scale.shape)), np.float64)
    block = np.stack([f.a_vectors @ (e * scale) @ f.g_vectors.T for e in eps])
    expected[name] = {"w": block[:, :2], "b": block[:, 2]} if name == "first" else {"w": block}
  deltas = laplace_layers.sample_deltas(post, rng, k)
  _ll_assert_tree_close(deltas, expected, rtol=1e-4, atol=1e-5)
  half = laplace_layers.sample_deltas(
    post._replace(params=jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)), rng, k
  )
  assert {d.dtype for d in jax.tree_util.tree_leaves(half)} == {jnp.dtype(jnp.bfloat16)}
  _ll_assert_tree_close(half, expected, rtol=1e-2, atol=1e-2)
  # the outputs: "mc" the network at θ* + δ_k, "glm" (the default) f(θ*) + J δ_k
  mean = _ll_forward(params, x)[0]
  mc = [_ll_forward(jax.tree_util.tree_map(lambda p, d: p + d[i], params, deltas), x)[0] for i in range(k)]
  glm = [mean + _ll_forward(params, x, jax.tree_util.tree_map(lambda d: d[i], deltas))[2] for i in range(k)]
  np.testing.assert_allclose(
    laplace_layers.sample_outputs(net, post, rng, x, k, "mc"), mc, rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(laplace_layers.sample_outputs(net, post, rng, x, k), glm, rtol=1e-4, atol=1e-5)
  classifier = laplace_layers.predictor(net, DataInfo((2,), 2, 5))
  assert classifier.kind == "classifier"
  np.testing.assert_allclose(classifier.sample(post, rng, x, k), glm, rtol=1e-4, atol=1e-5)
  classifier = laplace_layers.predictor(net, DataInfo((2,), 2, 5), predictive="mc")
  np.testing.assert_allclose(classifier.sample(post, rng, x, k), mc, rtol=1e-4, atol=1e-5)
  # a regressor: means [K, B] and the noise std [K, B]
  x, params = _ll_problem(1)
  post = laplace_layers.DiagonalPosterior(
    params, jax.tree_util.tree_map(jnp.ones_like, params), jnp.float32(1.0)
  )
  regressor = laplace_layers.predictor(_LL_NETS[1], DataInfo((2,), 0, 5), noise_std=0.5, predictive="mc")
  assert regressor.kind == "regressor"
  means, stds = regressor.sample(post, rng, x, k)
  np.testing.assert_array_equal(
    means, laplace_layers.sample_outputs(_LL_NETS[1], post, rng, x, k, "mc")[..., 0]
  )
  assert stds.dtype == jnp.float32
  np.testing.assert_array_equal(stds, np.full((k, 5), 0.5, np.float32))
  # a bfloat16 network (KFAC draws in its dtype): stds in the means' dtype; noise_std 1 by default
  eye = laplace_layers._kron_factors(jnp.eye(3), jnp.eye(3))
  factors = {"first": eye, "last": laplace_layers._kron_factors(jnp.eye(3), jnp.eye(1))}
  half = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)
  post = laplace_layers.KFACPosterior(half, factors, jnp.float32(1.0))
  sample = laplace_layers.predictor(_LL_NETS[1], DataInfo((2,), 0, 5)).sample
  means, stds = sample(post, rng, x.astype(jnp.bfloat16), k)
  assert means.dtype == stds.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(stds, np.float32), np.ones((k, 5), np.float32))
  message = "Laplace predictive for a diagonal or KFAC posterior must be one of mc, glm, got 'probit'"
  with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
    laplace_layers.predictor(net, DataInfo((2,), 2, 5), predictive="probit")
  with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
    laplace_layers.sample_outputs(net, post, rng, x, k, "probit")
  with pytest.raises(ValueError, match="^classification needs >= 2 classes, got num_classes=1$"):
    laplace_layers.predictor(net, DataInfo((2,), 1, 5))


# --- methods/laplace.py: the last layer's GGN, evidence, draws, moments, predictor, fit_run ----------------


def _lla_net(num_outputs, bias=True):
  """x [B, 2] -> tanh(x W1 + b1) W2 (+ b2) [B, num_outputs]: the last layer is "head"."""

  def net(x):
    h = jnp.tanh(hk.Linear(3, name="hidden")(x))
    return hk.Linear(num_outputs, with_bias=bias, name="head")(h)

  return net


_LLA_NETS = {(c, bias): _lla_net(c, bias) for c in (1, 2) for bias in (True, False)}


def _lla_problem(num_outputs, bias=True):
  rng = np.random.default_rng(5)
  x = rng.normal(size=(5, 2)).astype(np.float32)
  head = {"w": rng.normal(size=(3, num_outputs))}
  if bias:
    head["b"] = rng.normal(size=num_outputs)
  params = {"hidden": {"w": rng.normal(size=(2, 3)), "b": rng.normal(size=3)}, "head": head}
  params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
  phi = np.tanh(
    np.asarray(x, np.float64) @ np.asarray(params["hidden"]["w"], np.float64)
    + np.asarray(params["hidden"]["b"], np.float64)
  )
  return x, params, phi


def _lla_hand_ggn(phi, head, classification, noise_std, weight=None):
  """float64 Σ_i w_i J_iᵀ H_i J_i over θ = ravel(head) = (b, w.ravel()): J_i = [1, φ_i]ᵀ ⊗ I_C."""
  w = np.asarray(head["w"], np.float64)
  b = np.asarray(head["b"], np.float64) if "b" in head else 0.0
  c = w.shape[1]
  total = 0.0
  for i, f1 in enumerate(phi):
    out = f1 @ w + b
    if classification:
      p = np.exp(out - out.max()) / np.exp(out - out.max()).sum()
      hessian = np.diag(p) - np.outer(p, p)
    else:
      hessian = np.eye(c) / noise_std**2
    feats = np.append(1.0, f1) if "b" in head else f1
    jac = np.kron(feats[None], np.eye(c))  # [C, (H + 1) C]: row-major [b; w]
    total = total + (1.0 if weight is None else weight[i]) * jac.T @ hessian @ jac
  return total


# a one-layer regressor in bfloat16 (phi = x cast to bfloat16), and its weights
_HALF_HEAD = {"head": {"w": np.asarray([[0.5], [-1.0]], jnp.bfloat16)}}  # numpy: no JAX backend at import


def _half_head_net(x):
  return hk.Linear(1, False, name="head")(x.astype(jnp.bfloat16))


def test_laplace_last_layer_features_ggn_and_evidence_by_hand():
  x, params, phi = _lla_problem(2)
  net = _LLA_NETS[2, True]
  split = laplace.last_layer(net)
  features, out = split.features.apply(params, x)
  assert split.name() == "head"
  np.testing.assert_allclose(features, phi, rtol=1e-5, atol=1e-6)
  head = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["head"])
  np.testing.assert_allclose(out, phi @ head["w"] + head["b"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(laplace._dense(params["head"], features), out, rtol=1e-6)
  np.testing.assert_allclose(
    laplace._dense({"w": params["head"]["w"]}, features), phi @ head["w"], rtol=1e-5, atol=1e-6
  )

  def squashed(x):  # the last hk.Linear's output is not the network's
    return jnp.tanh(hk.Linear(2, name="head")(x))

  def none(x):
    return x * 2.0

  def flat(x):
    return hk.Linear(2, name="head")(x.reshape(len(x), 1, 2))

  message = (
    "Laplace needs a network whose output is its last hk.Linear's output (a dense last layer); "
    "this network has none"
  )
  for fn, expected in (
    (squashed, message),
    (none, message),
    (flat, "Laplace needs the last hk.Linear's input as [B, H], got shape (5, 1, 2)"),
  ):
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
      laplace.last_layer(fn).features.init(jax.random.PRNGKey(0), x)
  # Σ_i w_i (φ̃_i φ̃_iᵀ) ⊗ H_i over (b, w.ravel()), padded rows weighted 0
  weight = jnp.asarray([1.0, 1.0, 0.0, 1.0, 1.0])
  got = laplace.batch_ggn(params["head"], jnp.asarray(phi, jnp.float32), True, 1.0, weight)
  np.testing.assert_allclose(
    got, _lla_hand_ggn(phi, params["head"], True, 1.0, [1, 1, 0, 1, 1]), rtol=1e-5, atol=1e-6
  )
  hand = _lla_hand_ggn(phi, params["head"], True, 1.0)
  np.testing.assert_allclose(
    laplace.batch_ggn(params["head"], jnp.asarray(phi, jnp.float32), True, 1.0), hand, rtol=1e-5, atol=1e-6
  )
  for batch_size in (4, 500):  # padded batches (the last one by 3 rows), or one
    np.testing.assert_allclose(
      laplace.ggn(net, params, x, True, batch_size=batch_size), hand, rtol=1e-5, atol=1e-6
    )
  x1, params1, phi1 = _lla_problem(1, bias=False)  # a regressor, no bias: J_i = φ_iᵀ, H = 1 / noise_std²
  got = laplace.ggn(_LLA_NETS[1, False], params1, x1, False, 0.5, batch_size=3)
  np.testing.assert_allclose(got, phi1.T @ phi1 / 0.25, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    laplace.batch_ggn(params1["head"], jnp.asarray(phi1, jnp.float32), False, 0.5),
    phi1.T @ phi1 / 0.25,
    rtol=1e-5,
    atol=1e-6,
  )
  got = laplace.ggn(_LLA_NETS[1, False], params1, x1, False)  # noise_std 1 by default
  np.testing.assert_allclose(got, phi1.T @ phi1, rtol=1e-5, atol=1e-6)
  # 1 / noise_std², not 2 / noise_std (equal at 0.5); in the layer's dtype (a bfloat16 one stays bfloat16)
  got = laplace.batch_ggn(params1["head"], jnp.asarray(phi1, jnp.float32), False, 2.0)
  np.testing.assert_allclose(got, phi1.T @ phi1 / 4.0, rtol=1e-5, atol=1e-6)
  half = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params1["head"])
  assert laplace.batch_ggn(half, jnp.asarray(phi1, jnp.bfloat16), False, 2.0).dtype == jnp.bfloat16
  half = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params["head"])  # with a bias
  assert laplace.batch_ggn(half, jnp.asarray(phi, jnp.bfloat16), True, 1.0).dtype == jnp.bfloat16
  # through ggn's masked, padded batches too: a network that casts its input to bfloat16 (φ = x)
  got = laplace.ggn(_half_head_net, _HALF_HEAD, x1, False, 0.5, 2)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float64), x1.T.astype(np.float64) @ x1 / 0.25, rtol=2e-2)
  # (P/2) log λ − (λ/2)‖θ‖² − ½ log det(G + λ I), and its grid maximiser
  theta = jnp.asarray([0.5, -1.0, 2.0])
  g = phi1.T @ phi1
  lam = np.asarray([0.3, 2.0])
  expected = [1.5 * np.log(v) - v / 2 * 5.25 - 0.5 * np.linalg.slogdet(g + v * np.eye(3))[1] for v in lam]
  np.testing.assert_allclose(
    laplace.log_marginal_likelihood_terms(jnp.asarray(g, jnp.float32), theta, lam), expected, rtol=1e-5
  )
  grid = np.logspace(-1, 1, 101)
  best = grid[
    np.argmax([1.5 * np.log(v) - v / 2 * 5.25 - 0.5 * np.linalg.slogdet(g + v * np.eye(3))[1] for v in grid])
  ]
  assert laplace.tune_prior_precision(jnp.asarray(g, jnp.float32), theta, 0.1, 10.0, 101) == pytest.approx(
    best, rel=1e-5
  )
  # by default the grid of laplace_layers: 2001 points over [1e-4, 1e6] (a maximiser below 1, one at the top)
  g32 = jnp.asarray(g, jnp.float32)
  expected = laplace_layers.tune_prior_precision(jnp.linalg.eigvalsh(g32), jnp.sum(theta**2), 1e-4, 1e6, 2001)
  assert laplace.tune_prior_precision(g32, theta) == expected and expected < 0.5
  assert laplace.tune_prior_precision(1e8 * jnp.eye(3), jnp.full(3, 1e-7)) == pytest.approx(1e6, rel=2e-7)


def test_laplace_last_layer_fit_draws_moments_and_predictor_by_hand():
  x, params, phi = _lla_problem(2)
  net, info = _LLA_NETS[2, True], DataInfo((2,), 2, 5)
  hand = _lla_hand_ggn(phi, params["head"], True, 1.0)
  post = laplace.fit(net, params, x, None, info, prior_precision=0.7, batch_size=2)
  assert post.params is params and post.prior_precision.dtype == jnp.float32
  assert float(post.prior_precision) == np.float32(0.7)
  np.testing.assert_allclose(post.ggn, hand, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(post.precision, hand + 0.7 * np.eye(8), rtol=1e-5, atol=1e-6)
  theta = jnp.concatenate([params["head"]["b"], params["head"]["w"].ravel()])
  tuned = laplace.fit(net, params, x, None, info, prior_precision=None)
  assert float(tuned.prior_precision) == np.float32(laplace.tune_prior_precision(tuned.ggn, theta))
  np.testing.assert_allclose(
    tuned.precision, tuned.ggn + float(tuned.prior_precision) * np.eye(8), rtol=1e-6, atol=1e-5
  )
  x1, params1, phi1 = _lla_problem(1, bias=False)
  post1 = laplace.fit(
    _LLA_NETS[1, False], params1, x1, None, DataInfo((2,), 0, 5), prior_precision=2.0, noise_std=0.5
  )
  np.testing.assert_allclose(post1.ggn, phi1.T @ phi1 / 0.25, rtol=1e-5, atol=1e-6)
  default = laplace.fit(_LLA_NETS[1, False], params1, x1, None, DataInfo((2,), 0, 5))  # λ = 1, σ = 1
  # a bfloat16 last layer: its GGN stays bfloat16, the precision G + λ I is float32 (for the Cholesky)
  half_post = laplace.fit(
    _half_head_net, _HALF_HEAD, x1, None, DataInfo((2,), 0, 5), prior_precision=2.0, noise_std=0.5
  )
  assert half_post.precision.dtype == jnp.float32 and half_post.ggn.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(half_post.precision, np.float64),
    x1.T.astype(np.float64) @ x1 / 0.25 + 2 * np.eye(2),
    rtol=2e-2,
  )
  assert float(default.prior_precision) == 1.0
  np.testing.assert_allclose(default.ggn, phi1.T @ phi1, rtol=1e-5, atol=1e-6)
  for kwargs, message in (
    (dict(prior_precision=0.0), "prior_precision must be positive (or None to tune it), got 0.0"),
    (dict(prior_precision=float("nan")), "prior_precision must be positive (or None to tune it), got nan"),
    (dict(info=DataInfo((2,), 1, 5)), "classification needs >= 2 classes, got num_classes=1"),
  ):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      laplace.fit(net, params, x, None, **{"info": info, **kwargs})
  # draws: θ_k = θ* + L⁻ᵀ ε_k, Λ = L Lᵀ, ε = normal(rng, [K, P]), run through the last layer
  rng, k = jax.random.PRNGKey(6), 4
  eps = np.asarray(jax.random.normal(rng, (k, 8)), np.float64)
  chol = np.linalg.cholesky(np.asarray(post.precision, np.float64))
  thetas = np.asarray(theta, np.float64) + np.linalg.solve(chol.T, eps.T).T
  expected = np.stack([phi @ t[2:].reshape(3, 2) + t[:2] for t in thetas])
  np.testing.assert_allclose(laplace.sample_outputs(net, post, rng, x, k), expected, rtol=1e-4, atol=1e-5)
  # ε in the last layer's dtype: a bfloat16 head (its precision float32) draws bfloat16 normals
  half_head = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params["head"])
  half = post._replace(params={**params, "head": half_head})
  eps_h = np.asarray(jax.random.normal(rng, (k, 8), jnp.bfloat16), np.float64)
  theta_h = np.concatenate(
    [np.asarray(half_head["b"], np.float64), np.asarray(half_head["w"], np.float64).ravel()]
  )
  thetas_h = theta_h + np.linalg.solve(chol.T, eps_h.T).T
  expected_h = np.stack([phi @ t[2:].reshape(3, 2) + t[:2] for t in thetas_h])
  got = np.asarray(laplace.sample_outputs(net, half, rng, x, k), np.float64)
  np.testing.assert_allclose(got, expected_h, rtol=5e-2, atol=5e-2)
  # moments: f*(x) and diag(J Σ Jᵀ); centred: of the logits minus their class mean
  sigma = np.linalg.inv(np.asarray(post.precision, np.float64))
  mean = phi @ np.asarray(params["head"]["w"], np.float64) + np.asarray(params["head"]["b"], np.float64)
  jacs = [np.kron(np.append(1.0, f1)[None], np.eye(2)) for f1 in phi]
  var = np.stack([np.diag(j @ sigma @ j.T) for j in jacs])
  got_mean, got_var = laplace.output_moments(net, post, x)
  np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_var, var, rtol=1e-4, atol=1e-7)
  centre = np.eye(2) - 0.5
  var_c = np.stack([np.diag(centre @ j @ sigma @ j.T @ centre) for j in jacs])
  got_mean, got_var = laplace.output_moments(net, post, x, centred=True)
  np.testing.assert_allclose(got_mean, mean - mean.mean(1, keepdims=True), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_var, var_c, rtol=1e-4, atol=1e-7)
  # the predictor: "mc" and "glm" sample; "closed_form" the probit of the centred logits
  for kind in ("mc", "glm"):
    pred = laplace.predictor(net, info, predictive=kind)
    assert pred.kind == "classifier"
    np.testing.assert_allclose(pred.sample(post, rng, x, k), expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
    laplace.predictor(net, info).sample(post, rng, x, k), expected, rtol=1e-4, atol=1e-5
  )
  probit = laplace.predictor(net, info, predictive="closed_form").sample(post, rng, x, k)
  np.testing.assert_allclose(
    probit,
    ((mean - mean.mean(1, keepdims=True)) / np.sqrt(1 + np.pi / 8 * var_c))[None],
    rtol=1e-4,
    atol=1e-6,
  )
  info1 = DataInfo((2,), 0, 5)
  regressor = laplace.predictor(_LLA_NETS[1, False], info1, noise_std=0.5, predictive="closed_form")
  assert regressor.kind == "regressor"
  m, s = regressor.sample(post1, rng, x1, k)
  sigma1 = np.linalg.inv(phi1.T @ phi1 / 0.25 + 2.0 * np.eye(3))
  mean1 = phi1 @ np.asarray(params1["head"]["w"], np.float64)
  np.testing.assert_allclose(m, mean1.T, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s, np.sqrt(0.25 + np.einsum("bi,ij,bj->b", phi1, sigma1, phi1))[None], rtol=1e-5)
  m, s = laplace.predictor(_LLA_NETS[1, False], info1, noise_std=0.5).sample(post1, rng, x1, k)
  np.testing.assert_allclose(
    m, laplace.sample_outputs(_LLA_NETS[1, False], post1, rng, x1, k)[..., 0], rtol=1e-6
  )
  assert s.dtype == jnp.float32
  np.testing.assert_array_equal(s, np.full((k, 5), 0.5, np.float32))
  np.testing.assert_array_equal(
    laplace.predictor(_LLA_NETS[1, False], info1).sample(post1, rng, x1, k)[1], 1.0
  )
  # a bfloat16 regressor's fit can be sampled: its draws come out float32
  m, s = laplace.predictor(_half_head_net, info1, noise_std=0.5).sample(half_post, rng, x1, k)
  assert m.dtype == s.dtype == jnp.float32 and m.shape == (k, 5) and np.isfinite(m).all()
  with pytest.raises(
    ValueError, match="^Laplace predictive must be one of mc, glm, closed_form, got 'probit'$"
  ):
    laplace.predictor(net, info, predictive="probit")
  with pytest.raises(ValueError, match="^classification needs >= 2 classes, got num_classes=1$"):
    laplace.predictor(net, DataInfo((2,), 1, 5))


def _lla_point_run(data_name, model_name="mlp"):
  """An untrained point run (hidden (4,)) on the first 24 training rows of a small data set."""
  from bnnjax import Run, base_config  # pylint: disable=import-outside-toplevel
  from bnnjax.config import resolve  # pylint: disable=import-outside-toplevel
  from bnnjax.train import build_task  # pylint: disable=import-outside-toplevel

  config = base_config()
  config.data.name, config.data.seed, config.data.train_split = data_name, 2, "train[:24]"
  config.model = ml_collections.ConfigDict({"name": model_name, "hidden_sizes": (4,)})
  config = resolve(config)
  train = data.load_split(config.data, config.data.train_split)
  info = data.data_info(config.data, train)
  task = build_task(config, info)
  params = task.init(
    jax.random.PRNGKey(0), {"x": jnp.asarray(train["x"][:2], jnp.float32), "y": train["y"][:2]}
  )
  return Run("unsaved", config, params, info, task), train


def test_laplace_fit_run_is_the_fit_and_predictor_of_its_structure_on_the_training_split(monkeypatch):
  run, train = _lla_point_run("digits")
  forward = laplace.network_of(run)
  x = run.inputs(train["x"])
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), run.params)
  hidden = np.maximum(
    np.asarray(x, np.float64).reshape(24, -1) @ p["mlp/~/linear_0"]["w"] + p["mlp/~/linear_0"]["b"], 0
  )
  logits = hidden @ p["mlp/~/linear_1"]["w"] + p["mlp/~/linear_1"]["b"]  # [24, 10]
  apply = hk.without_apply_rng(hk.transform(forward)).apply
  np.testing.assert_allclose(apply(run.params, x), logits, rtol=1e-4, atol=1e-5)
  rng, batch = jax.random.PRNGKey(7), {"x": x[:6], "y": jnp.asarray(train["y"][:6])}
  # last layer, λ given, "glm" (the default) = "mc" for a last layer, K = eval_samples = 32 by default
  fitted = laplace.fit_run(run, prior_precision=1.0)
  assert fitted.config.model.name == "laplace/mlp" and run.config.model.name == "mlp"
  assert fitted.task.init is run.task.init and fitted.task.loss is run.task.loss
  assert fitted.task.predictor.kind == "classifier"
  expected = laplace.fit(forward, run.params, x, None, run.info, 1.0)
  np.testing.assert_allclose(fitted.params.precision, expected.precision, rtol=1e-5, atol=1e-5)
  pred = laplace.predictor(forward, run.info, 1.0, "mc")
  metrics = ensemble.predictive_metrics(pred.sample(expected, rng, x[:6], 32), batch["y"], True, 1.0)
  got = fitted.task.evaluate(fitted.params, rng, batch)
  assert sorted(got) == sorted(metrics)
  for key in metrics:
    np.testing.assert_allclose(got[key], metrics[key], rtol=1e-5, atol=1e-6)
  # "closed_form": one probit output
  fitted = laplace.fit_run(run, prior_precision=1.0, predictive="closed_form")
  probit = laplace.predictor(forward, run.info, 1.0, "closed_form").sample(expected, rng, x[:6], 1)
  metrics = ensemble.predictive_metrics(probit, batch["y"], True, 1.0)
  got = fitted.task.evaluate(fitted.params, rng, batch)
  for key in metrics:
    np.testing.assert_allclose(got[key], metrics[key], rtol=1e-5, atol=1e-6)
  for kwargs, message in (
    (dict(structure="full"), "Laplace structure must be one of last_layer, diagonal, kfac, got 'full'"),
    (dict(predictive="probit"), "Laplace predictive must be one of mc, glm, closed_form, got 'probit'"),
    (
      dict(structure="kfac", predictive="closed_form"),
      "Laplace predictive for a diagonal or KFAC posterior must be one of mc, glm, got 'closed_form'",
    ),
    (
      dict(structure="diagonal", predictive="probit"),
      "Laplace predictive for a diagonal or KFAC posterior must be one of mc, glm, got 'probit'",
    ),
  ):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      laplace.fit_run(run, **kwargs)
  other = run.config.copy_and_resolve_references()
  other.model.name = "swag/mlp"
  with pytest.raises(
    ValueError,
    match=r"^Laplace needs a trained point-estimate run \(mlp or point/<network>\), "
    r"got model .swag/mlp. in unsaved$",
  ):
    laplace.network_of(type(run)("unsaved", other, run.params, run.info, run.task))
  # a malformed name fails in models' lookup, with its own one-line error
  other.model.name = "point/point/mlp"
  with pytest.raises(ValueError, match=r"^unknown network 'point/mlp'; known: "):
    laplace.network_of(type(run)("unsaved", other, run.params, run.info, run.task))
  # the network is built from the run's DataInfo: LeNet-5 reads its input shape (28x28x1 here)
  lenet = ml_collections.ConfigDict({"model": {"name": "point/lenet5", **lenet_module.NETWORK_DEFAULTS}})
  lenet_info = DataInfo(input_shape=(28, 28, 1), num_classes=10, num_train=24)
  net = hk.transform(laplace.network_of(type(run)("unsaved", lenet, None, lenet_info, None)))
  x28 = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  lenet_params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x28)
  assert jax.eval_shape(net.apply, lenet_params, None, x28).shape == (2, 10)
  # a bad predictive is refused before the run is even read
  with pytest.raises(
    ValueError, match=r"^Laplace predictive must be one of mc, glm, closed_form, got 'probit'$"
  ):
    laplace.fit_run(type(run)("unsaved", other, run.params, run.info, run.task), predictive="probit")

  # data_dir and the default noise std are passed on (the loader and fit recorded, and stopped there)
  class Stop(Exception):
    pass

  seen = {}

  def load(config, split, data_dir):
    seen["data_dir"] = data_dir
    raise Stop

  def fit(*args):
    seen["noise_std"] = args[6]
    raise Stop

  monkeypatch.setattr(laplace.data_lib, "load_split", load)
  with pytest.raises(Stop):
    laplace.fit_run(run, data_dir="/elsewhere")
  assert seen == {"data_dir": "/elsewhere"}
  monkeypatch.undo()
  monkeypatch.setattr(laplace, "fit", fit)
  with pytest.raises(Stop):
    laplace.fit_run(run)
  assert seen["noise_std"] == 1.0


def test_laplace_fit_run_of_a_regressor_evaluates_rmse_nll_and_coverage_of_its_draws():
  run, train = _lla_point_run("toy_regression", "point/mlp")
  forward = laplace.network_of(run)
  x = run.inputs(train["x"])
  assert hk.without_apply_rng(hk.transform(forward)).apply(run.params, x).shape == (24, 1)
  rng, batch = jax.random.PRNGKey(8), {"x": x[:6], "y": jnp.asarray(train["y"][:6])}
  fitted = laplace.fit_run(run, structure="diagonal", prior_precision=2.0, noise_std=0.5, eval_samples=3)
  assert fitted.config.model.name == "laplace_diagonal/point/mlp"
  expected = laplace_layers.fit(forward, run.params, x, run.info, "diagonal", 2.0, 0.5)
  _ll_assert_tree_close(fitted.params.ggn, jax.tree_util.tree_map(np.asarray, expected.ggn), rtol=1e-5)
  means, stds = laplace_layers.predictor(forward, run.info, 0.5, "glm").sample(expected, rng, x[:6], 3)
  from bnnjax.methods.mean_field import regression_metrics  # pylint: disable=import-outside-toplevel

  metrics = regression_metrics(means, jnp.ravel(batch["y"]), stds)
  got = fitted.task.evaluate(fitted.params, rng, batch)
  assert sorted(got) == sorted(metrics)
  for key in metrics:
    np.testing.assert_allclose(got[key], metrics[key], rtol=1e-5, atol=1e-6)
  # predictive "mc" reaches laplace_layers' predictor (the network at sampled weights, not linearised)
  means_mc, _ = laplace_layers.predictor(forward, run.info, 0.5, "mc").sample(expected, rng, x[:6], 3)
  assert not np.allclose(means_mc, means, rtol=1e-3)
  fitted = laplace.fit_run(
    run, structure="diagonal", prior_precision=2.0, noise_std=0.5, eval_samples=3, predictive="mc"
  )
  np.testing.assert_allclose(
    fitted.task.predictor.sample(fitted.params, rng, x[:6], 3)[0], means_mc, rtol=1e-5
  )
  fitted = laplace.fit_run(run, noise_std=0.5, eval_samples=3, predictive="closed_form")  # a last layer
  assert fitted.config.model.name == "laplace/point/mlp"
  expected = laplace.fit(forward, run.params, x, None, run.info, None, 0.5)
  assert float(fitted.params.prior_precision) == float(expected.prior_precision)
  means, stds = laplace.predictor(forward, run.info, 0.5, "closed_form").sample(expected, rng, x[:6], 3)
  metrics = regression_metrics(means, jnp.ravel(batch["y"]), stds)
  got = fitted.task.evaluate(fitted.params, rng, batch)
  for key in metrics:
    np.testing.assert_allclose(got[key], metrics[key], rtol=1e-5, atol=1e-6)


# --- methods/hmc.py: the checks, the log posterior, the chains' bookkeeping (no NUTS run) ------------------


def test_hmc_checks_log_posterior_and_predictive_bookkeeping_by_hand(monkeypatch):
  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel

  hmc.check_sampler_args(2, 4, 1)
  for args, message in (
    ((1, 4, 1), "num_chains must be an integer >= 2, got 1"),
    ((True, 4, 1), "num_chains must be an integer >= 2, got True"),
    ((2, 3, 1), "num_samples must be an integer >= 4, got 3"),
    ((2, 4.0, 1), "num_samples must be an integer >= 4, got 4.0"),
    ((2, 4, 0), "num_warmup must be an integer >= 1, got 0"),
  ):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      hmc.check_sampler_args(*args)
  hmc.check_full_batch(10_000)
  message = (
    "HMC/NUTS runs full batch: 10001 training examples exceed the limit of 10000; "
    "use a smaller data set or another method"
  )
  with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
    hmc.check_full_batch(10_001)
  # τ = 1/σ² ~ Gamma(a, rate b), in log σ: log Gamma(τ) + log 2τ
  log_std = np.array([-0.5, 0.0, 0.7])
  tau = np.exp(-2 * log_std)
  expected = scipy.stats.gamma.logpdf(tau, 6.0, scale=1 / 3.0) + np.log(2 * tau)
  np.testing.assert_allclose(
    hmc.gamma_precision_log_prior(jnp.asarray(log_std), 6.0, 3.0), expected, rtol=1e-5
  )
  # the log posterior: Σ log p(y_i | x_i, w) + Σ log N(w; 0, prior_scale²)
  x, params = _ll_problem(1)
  y = np.array([[0.5], [-1.0], [2.0], [0.0], [1.5]], np.float32)
  f = _ll_forward(params, x)[0][:, 0]
  leaves = [np.asarray(w, np.float64) for w in jax.tree_util.tree_leaves(params)]
  prior = sum(np.sum(scipy.stats.norm.logpdf(w, 0.0, 2.0)) for w in leaves)
  info = DataInfo((2,), 0, 5)
  log_post = hmc.network_log_posterior(_LL_NETS[1], info, x, y, prior_scale=2.0, noise_std=0.5)
  expected = np.sum(scipy.stats.norm.logpdf(y[:, 0], f, 0.5)) + prior
  assert float(jax.jit(log_post)(params)) == pytest.approx(expected, rel=1e-5)
  log_post = hmc.network_log_posterior(_LL_NETS[1], info, x, y[:, 0], 2.0, noise_prior=(6.0, 3.0))
  expected = np.sum(scipy.stats.norm.logpdf(y[:, 0], f, np.exp(-0.5))) + prior
  expected += scipy.stats.gamma.logpdf(np.exp(1.0), 6.0, scale=1 / 3.0) + np.log(2 * np.exp(1.0))
  assert float(jax.jit(log_post)((params, jnp.float32(-0.5)))) == pytest.approx(expected, rel=1e-5)
  default = sum(np.sum(scipy.stats.norm.logpdf(w)) for w in leaves)  # prior_scale 1, noise_std 1
  log_post = hmc.network_log_posterior(_LL_NETS[1], info, x, y)
  expected = np.sum(scipy.stats.norm.logpdf(y[:, 0], f, 1.0)) + default
  assert float(jax.jit(log_post)(params)) == pytest.approx(expected, rel=1e-5)
  x2, params2 = _ll_problem(2)
  labels = np.array([0, 1, 1, 0, 1])
  logits = _ll_forward(params2, x2)[0]
  log_softmax = logits - scipy.special.logsumexp(logits, 1, keepdims=True)
  leaves2 = [np.asarray(w, np.float64) for w in jax.tree_util.tree_leaves(params2)]
  expected = log_softmax[np.arange(5), labels].sum() + sum(
    np.sum(scipy.stats.norm.logpdf(w)) for w in leaves2
  )
  log_post = hmc.network_log_posterior(_LL_NETS[2], DataInfo((2,), 2, 5), x2, labels)
  assert float(jax.jit(log_post)(params2)) == pytest.approx(expected, rel=1e-5)
  for args, kwargs, message in (
    ((info, x, y), dict(prior_scale=0.0), "prior_scale and noise_std must be positive, got 0.0, 1.0"),
    ((info, x, y), dict(noise_std=-1.0), "prior_scale and noise_std must be positive, got 1.0, -1.0"),
    ((info, x, y), dict(noise_std=0.0), "prior_scale and noise_std must be positive, got 1.0, 0.0"),
    (
      (info, x, y),
      dict(noise_prior=(0.0, 1.0)),
      "noise_prior (a, b) needs a regressor and a, b > 0, got (0.0, 1.0)",
    ),
    (
      (DataInfo((2,), 2, 5), x2, labels),
      dict(noise_prior=(6.0, 6.0)),
      "noise_prior (a, b) needs a regressor and a, b > 0, got (6.0, 6.0)",
    ),
    ((DataInfo((2,), 1, 5), x2, labels), {}, "classification needs >= 2 classes, got num_classes=1"),
    ((info, np.zeros((10_001, 2)), np.zeros(10_001)), {}, message),
  ):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      hmc.network_log_posterior(_LL_NETS[1], *args, **kwargs)
  # a Gamma shape or rate below 1 is a valid prior; integer inputs are the same rows as floats
  hmc.network_log_posterior(_LL_NETS[1], info, x, y, noise_prior=(0.5, 0.5))
  rows = np.array([[1, 0], [0, 2], [-1, 1], [2, -1], [0, 0]], np.int32)
  as_floats = hmc.network_log_posterior(_LL_NETS[1], info, rows.astype(np.float32), y)(params)
  assert float(hmc.network_log_posterior(_LL_NETS[1], info, rows, y)(params)) == pytest.approx(
    float(as_floats), rel=1e-6
  )
  # ... also for a network whose first layer is a convolution (JAX convolves no int32 by float32)
  conv = lambda x: hk.Linear(1, name="out")(hk.Conv1D(2, 2, name="conv")(x[..., None]).reshape(len(x), -1))  # noqa: E731
  conv_params = hk.transform(conv).init(jax.random.PRNGKey(0), rows.astype(np.float32))
  as_floats = hmc.network_log_posterior(conv, info, rows.astype(np.float32), y)(conv_params)
  assert float(hmc.network_log_posterior(conv, info, rows, y)(conv_params)) == pytest.approx(
    float(as_floats), rel=1e-6
  )
  # chains [C, S, ...] -> [C S, ...]; the predictive of the stacked draws, K = S
  samples = {"a": jnp.arange(12.0).reshape(2, 3, 2), "b": jnp.arange(6.0).reshape(2, 3)}
  stacked = hmc.stack_chains(samples)
  np.testing.assert_array_equal(stacked["a"], np.arange(12.0).reshape(6, 2))
  np.testing.assert_array_equal(stacked["b"], np.arange(6.0))
  draws = jax.tree_util.tree_map(lambda p: jnp.stack([p, 0.5 * p, -p]), params2)
  pred = hmc.predictor(_LL_NETS[2], DataInfo((2,), 2, 5))
  assert pred.kind == "classifier"
  expected = [_ll_forward(jax.tree_util.tree_map(lambda p: c * p, params2), x2)[0] for c in (1.0, 0.5, -1.0)]
  np.testing.assert_allclose(pred.sample(draws, None, x2, 7), expected, rtol=1e-5, atol=1e-6)
  draws = jax.tree_util.tree_map(lambda p: jnp.stack([p, 0.5 * p]), params)
  means, stds = hmc.predictor(_LL_NETS[1], info, noise_std=0.5).sample(draws, None, x, 7)
  half = _ll_forward(jax.tree_util.tree_map(lambda p: 0.5 * p, params), x)[0][:, 0]
  np.testing.assert_allclose(means, [f, half], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stds, np.full((2, 5), 0.5), rtol=1e-6)
  np.testing.assert_allclose(hmc.predictor(_LL_NETS[1], info).sample(draws, None, x, 7)[1], np.ones((2, 5)))
  # top-1 agreement and the mean total variation ½ Σ_c |p_c − q_c|
  probs = [[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]]
  reference = [[0.6, 0.4], [0.7, 0.3], [0.2, 0.8]]
  top1, tv = hmc.agreement(probs, reference)
  assert float(top1) == pytest.approx(1 / 3) and float(tv) == pytest.approx(0.7 / 3, rel=1e-6)
  for a, b in (([[0.5, 0.5]], [[0.5, 0.5], [1.0, 0.0]]), ([0.5, 0.5], [0.5, 0.5])):
    message = f"agreement needs two [B, C] arrays of one shape, got {np.shape(a)} and {np.shape(b)}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      hmc.agreement(a, b)
  # R-hat and ESS of each leaf by blackjax.diagnostics' two functions (stood in for here: compiling the
  # real ESS takes seconds), the MAP climb is Adam(1e-2) by default
  import blackjax  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(blackjax.diagnostics, "potential_scale_reduction", lambda a: a.sum((0, 1)))
  monkeypatch.setattr(blackjax.diagnostics, "effective_sample_size", lambda a: a.max((0, 1)))
  chains = {"v": jnp.arange(12.0).reshape(2, 3, 2), "w": -jnp.arange(4.0).reshape(2, 2)}
  rhat, ess = hmc.diagnostics(chains)
  assert jax.tree_util.tree_structure(rhat) == jax.tree_util.tree_structure(chains)
  np.testing.assert_array_equal(rhat["v"], [30.0, 36.0])
  np.testing.assert_array_equal(ess["v"], [10.0, 11.0])
  assert float(rhat["w"]) == -6.0 and float(ess["w"]) == 0.0
  log_prob = lambda w: -0.5 * jnp.sum((w["w"] - 3.0) ** 2)  # noqa: E731
  position = {"w": jnp.zeros(2)}
  state = optax.adam(1e-2).init(position)
  for _ in range(5):
    updates, state = optax.adam(1e-2).update(jax.grad(lambda p: -log_prob(p))(position), state)
    position = optax.apply_updates(position, updates)
  np.testing.assert_allclose(hmc.find_map(log_prob, {"w": jnp.zeros(2)}, 5)["w"], position["w"], rtol=1e-5)


def test_nuts_posterior_jitters_one_start_per_chain_and_stacks_the_chains_by_hand(monkeypatch):
  """nuts_posterior's bookkeeping around one chain (`_run_chain` stood in for: no NUTS compiled)."""
  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel
  import blackjax  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(blackjax.diagnostics, "potential_scale_reduction", lambda a: a.sum((0, 1)))
  monkeypatch.setattr(blackjax.diagnostics, "effective_sample_size", lambda a: a.max((0, 1)))
  calls, mode = [], {"nan": None}

  def fake_chain(log_prob, w, key, *args):
    calls.append(args)
    steps = jnp.arange(args[1], dtype=w.dtype)
    positions = w[None] + steps[:, None]  # [S, d]: the start, then +1 per step
    logdensity = log_prob(w) + steps
    if mode["nan"] == "position":
      positions = positions * jnp.nan
    if mode["nan"] == "logdensity":
      logdensity = logdensity * jnp.nan
    # acceptance: the start's first coordinate + step; divergent: the first two steps; "step size": the key
    return positions, logdensity, w[0] + steps, steps < 2, key

  monkeypatch.setattr(hmc, "_run_chain", fake_chain)
  init = {"a": jnp.asarray([1.0, 2.0]), "b": jnp.asarray(3.0)}  # ravelled (a0, a1, b)
  log_prob = lambda p: -0.5 * (jnp.sum(p["a"] ** 2) + 2.0 * p["b"] ** 2)  # noqa: E731
  rng = jax.random.PRNGKey(3)
  result = hmc.nuts_posterior(log_prob, init, rng, 2, 4, 3, 0.5, 0.6, True, 3)
  assert calls == [(3, 4, 0.6, True, 3)]  # one compiled chain, traced once
  jitter_key, chain_key = jax.random.split(rng)
  starts = np.asarray([1.0, 2.0, 3.0]) + 0.5 * np.asarray(jax.random.normal(jitter_key, (2, 3)))
  steps = np.arange(4.0)
  np.testing.assert_allclose(result.samples["a"], starts[:, None, :2] + steps[None, :, None], rtol=1e-6)
  np.testing.assert_allclose(result.samples["b"], starts[:, None, 2] + steps[None], rtol=1e-6)
  np.testing.assert_allclose(result.acceptance, starts[:, 0] + 1.5, rtol=1e-6)
  np.testing.assert_array_equal(result.divergences, [2, 2])
  np.testing.assert_array_equal(result.step_size, jax.random.split(chain_key, 2))
  np.testing.assert_allclose(result.rhat["b"], (starts[:, None, 2] + steps[None]).sum(), rtol=1e-6)
  np.testing.assert_allclose(result.ess["a"], starts[:, :2].max(0) + 3.0, rtol=1e-6)
  # the defaults: 4 chains of 500 draws after 500 warm-up steps, jitter 0.1, acceptance 0.8, diagonal mass
  calls.clear()
  result = hmc.nuts_posterior(log_prob, init, rng)
  assert calls == [(500, 500, 0.8, False, 10)]
  starts = np.asarray([1.0, 2.0, 3.0]) + 0.1 * np.asarray(jax.random.normal(jitter_key, (4, 3)))
  np.testing.assert_allclose(result.samples["b"][:, 0], starts[:, 2], rtol=1e-6)
  assert result.samples["a"].shape == (4, 500, 2) and result.divergences.shape == (4,)
  # a bfloat16 position is jittered in bfloat16 (its own normal stream, not a rounded float32 one)
  calls.clear()
  half = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), init)
  result = hmc.nuts_posterior(log_prob, half, rng, 2, 4, 3, 0.5)
  starts = jnp.asarray([1.0, 2.0, 3.0], jnp.bfloat16) + 0.5 * jax.random.normal(
    jitter_key, (2, 3), jnp.bfloat16
  )
  assert result.samples["b"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(result.samples["b"][:, 0], starts[:, 2])
  # one-line errors: a log density not finite at init, a non-finite draw or log density, R-hat's chains
  with pytest.raises(ValueError, match=r"^NUTS: log_prob at the initial position is not finite$"):
    hmc.nuts_posterior(lambda p: jnp.log(p["b"] - 3.0), init, rng, 2, 4, 3)
  for where in ("position", "logdensity"):
    mode["nan"] = where
    with pytest.raises(ValueError, match=r"^NUTS diverged: a draw or its log density is not finite$"):
      hmc.nuts_posterior(log_prob, init, rng, 2, 4, 3)
  with pytest.raises(ValueError, match=r"^num_chains must be an integer >= 2, got 1$"):
    hmc.nuts_posterior(log_prob, init, rng, 1, 4, 3)


def test_network_posterior_starts_from_the_documented_init_and_passes_its_arguments_on(monkeypatch):
  """network_posterior's init, keys and arguments (`nuts_posterior` stood in for: no NUTS run)."""
  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel

  calls = []
  monkeypatch.setattr(hmc, "nuts_posterior", lambda *args, **kwargs: calls.append((args, kwargs)) or "result")
  x, _ = _ll_problem(1)
  y = np.array([0.5, -1.0, 2.0, 0.0, 1.5], np.float32)
  info, rng = DataInfo((2,), 0, 5), jax.random.PRNGKey(4)
  init_key, nuts_key = jax.random.split(rng)
  expected_init = hk.without_apply_rng(hk.transform(_LL_NETS[1])).init(init_key, jnp.asarray(x[:1]))
  got = hmc.network_posterior(
    _LL_NETS[1],
    info,
    x,
    y,
    rng,
    prior_scale=2.0,
    noise_std=0.5,
    num_chains=3,
    num_samples=6,
    num_warmup=7,
    dense_mass=True,
    max_num_doublings=4,
  )
  assert got == "result" and len(calls) == 1
  (log_prob, init, key, *sizes), kwargs = calls[0]
  assert sizes == [3, 6, 7] and kwargs == {"dense_mass": True, "max_num_doublings": 4}
  np.testing.assert_array_equal(key, nuts_key)
  _ll_assert_tree_close(init, expected_init, rtol=0, atol=0)
  reference = hmc.network_log_posterior(_LL_NETS[1], info, x, y, 2.0, 0.5)
  assert float(log_prob(init)) == pytest.approx(float(reference(init)), rel=1e-6)
  # the defaults, and a sampled noise std: the position is (params, log noise_std)
  calls.clear()
  hmc.network_posterior(_LL_NETS[1], info, x, y, rng, noise_std=0.5, noise_prior=(6.0, 3.0))
  (log_prob, init, key, *sizes), kwargs = calls[0]
  assert sizes == [4, 500, 500] and kwargs == {"dense_mass": False, "max_num_doublings": 10}
  _ll_assert_tree_close(init[0], expected_init, rtol=0, atol=0)
  assert init[1].dtype == jnp.float32 and float(init[1]) == pytest.approx(np.log(0.5), rel=1e-6)
  reference = hmc.network_log_posterior(_LL_NETS[1], info, x, y, 1.0, 0.5, (6.0, 3.0))
  assert float(log_prob(init)) == pytest.approx(float(reference(init)), rel=1e-6)
  # integer inputs: the init still sees float32 rows, so the params are float32
  calls.clear()
  hmc.network_posterior(_LL_NETS[1], info, np.round(2 * x).astype(np.int32), y, rng)
  (_, init, *_), _ = calls[0]
  assert {a.dtype for a in jax.tree_util.tree_leaves(init)} == {jnp.dtype(jnp.float32)}
  # map_steps: the chains start from find_map's climb of the same log posterior
  calls.clear()
  hmc.network_posterior(_LL_NETS[1], info, x, y, rng, map_steps=3)
  (log_prob, init, key, *sizes), kwargs = calls[0]
  climbed = hmc.find_map(hmc.network_log_posterior(_LL_NETS[1], info, x, y), expected_init, 3)
  _ll_assert_tree_close(init, climbed, rtol=1e-6, atol=1e-7)
  assert not np.allclose(init["first"]["w"], expected_init["first"]["w"])


def test_run_chain_is_window_adaptation_then_nuts_steps_with_the_documented_keys(monkeypatch):
  """One chain: blackjax's window adaptation (diagonal or dense mass, the target acceptance, the doublings)
  on the first key of split(rng), then num_samples NUTS steps on split(the second, num_samples); blackjax's
  two algorithms stood in for by recorders (no NUTS compiled)."""
  import blackjax  # pylint: disable=import-outside-toplevel
  from bnnjax.methods import hmc  # pylint: disable=import-outside-toplevel

  calls = []

  class Adaptation(NamedTuple):
    kwargs: dict

    def run(self, key, position, num_steps):
      calls.append(("run", key, num_steps))
      return (State(position + 1.0, jnp.float32(-1.0)), {"step_size": jnp.float32(0.25), "mass": 2.0}), "info"

  class Info(NamedTuple):
    acceptance_rate: jax.Array
    is_divergent: jax.Array

  class State(NamedTuple):
    position: jax.Array
    logdensity: jax.Array

  def nuts(log_prob, **parameters):
    calls.append(("nuts", log_prob, parameters))

    def step(key, state):  # position + step size * (first word of the key mod 7); logdensity counts steps
      position, logdensity = state
      moved = position + parameters["step_size"] * (key[0] % 7).astype(jnp.float32)
      return State(moved, logdensity - 1.0), Info(moved[0], moved[0] > position[0] + 1.0)

    return NamedTuple("Kernel", [("step", object)])(step)

  monkeypatch.setattr(
    blackjax,
    "window_adaptation",
    lambda algorithm, log_prob, **kw: calls.append((algorithm, log_prob, kw)) or Adaptation(kw),
  )
  monkeypatch.setattr(blackjax, "nuts", nuts)
  log_prob, rng, start = (lambda w: -jnp.sum(w**2)), jax.random.PRNGKey(6), jnp.asarray([0.5, -0.5])
  got = hmc._run_chain(log_prob, start, rng, 6, 5, 0.7, False, 3)
  warm_key, sample_key = jax.random.split(rng)
  assert calls[0] == (
    nuts,
    log_prob,
    dict(is_mass_matrix_diagonal=True, target_acceptance_rate=0.7, max_num_doublings=3),
  )
  np.testing.assert_array_equal(calls[1][1], warm_key)
  assert calls[1][2] == 6 and calls[2][0] == "nuts" and calls[2][1] is log_prob
  assert calls[2][2] == {"step_size": 0.25, "mass": 2.0}
  position, logdensity, acceptance, divergent = np.asarray([1.5, 0.5]), -1.0, [], []
  positions, logdensities = [], []
  for key in np.asarray(jax.random.split(sample_key, 5)):
    moved = position + 0.25 * (key[0] % 7)
    divergent.append(moved[0] > position[0] + 1.0)
    position, logdensity = moved, logdensity - 1.0
    positions.append(position)
    logdensities.append(logdensity)
    acceptance.append(position[0])
  np.testing.assert_allclose(got[0], positions, rtol=1e-6)
  np.testing.assert_allclose(got[1], logdensities, rtol=1e-6)
  np.testing.assert_allclose(got[2], acceptance, rtol=1e-6)
  np.testing.assert_array_equal(got[3], divergent)
  assert len(got) == 5 and float(got[4]) == 0.25
  assert any(divergent) and not all(divergent)
  calls.clear()
  hmc._run_chain(log_prob, start, rng, 6, 5, 0.7, True, 3)  # a dense mass matrix
  assert calls[0][2]["is_mass_matrix_diagonal"] is False


def test_a_fresh_module_gets_the_fresh_prior_and_init_the_others_the_previous_posterior():
  # VCL's new head: multihead/head_1 starts from a fresh init at init_std under N(0, 2^2);
  # the trunk and head_0 start from the previous posterior (means and stds) and have it as prior.
  from bnnjax import models  # pylint: disable=import-outside-toplevel
  from bnnjax.methods import mean_field  # pylint: disable=import-outside-toplevel
  from bnnjax.models import multihead  # pylint: disable=import-outside-toplevel
  from bnnjax.task import DataInfo  # pylint: disable=import-outside-toplevel

  m = models.get("mean_field/multihead").default_config()
  m.update(hidden_sizes=(4,), head_classes=((0, 1), (2, 3)), head=1, posterior_scale="log_std")
  m.update(init_std=0.05, prior_scale=2.0, init_from_stds=True, fresh_modules=("multihead/head_1",))
  m.update(prior="posterior", prior_workdir="/previous", init_from="/previous")
  info = DataInfo(input_shape=(3,), num_classes=4, num_train=10)
  forward = multihead.build(m, info, 4)
  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  shapes = hk.transform(forward).init(jax.random.PRNGKey(9), x)
  leaves = lambda f: jax.tree_util.tree_map(f, shapes)  # noqa: E731
  previous = {
    "mean": leaves(lambda a: jnp.asarray(np.random.default_rng(a.size).normal(size=a.shape), jnp.float32)),
    "log_std": leaves(lambda a: jnp.full(a.shape, np.log(0.3), jnp.float32)),
  }
  task = mean_field.method_task(forward, m, info, {"init_from": previous, "prior_workdir": previous})
  q = task.init(jax.random.PRNGKey(1), {"x": x})
  stds = posterior.stds(q)
  for module in ("multihead/trunk/~/linear_0", "multihead/head_0"):
    for name in ("w", "b"):
      np.testing.assert_array_equal(q["mean"][module][name], previous["mean"][module][name])
      np.testing.assert_allclose(stds[module][name], 0.3, rtol=1e-6)
  head = "multihead/head_1"
  assert not np.allclose(q["mean"][head]["w"], previous["mean"][head]["w"], atol=0.1)
  np.testing.assert_allclose(stds[head]["w"], 0.05, rtol=1e-6)
  # the KL: closed form at float64, N(0, 2^2) for the new head, the previous posterior elsewhere
  q = {
    "mean": leaves(lambda a: jnp.full(a.shape, 0.7)),
    "log_std": leaves(lambda a: jnp.full(a.shape, np.log(0.2))),
  }
  kl = lambda mq, sq, mp, sp: np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5  # noqa: E731
  expected = sum(
    kl(0.7, 0.2, 0.0, 2.0) * shapes[mod][n].size
    if mod == head
    else kl(0.7, 0.2, np.asarray(previous["mean"][mod][n], np.float64), 0.3).sum()
    for mod in shapes
    for n in shapes[mod]
  )
  _, metrics_ = task.loss(q, jax.random.PRNGKey(2), {"x": x, "y": np.array([2, 3, 2, 3, 2])}, 0)
  np.testing.assert_allclose(metrics_["kl"], expected, rtol=1e-5)


def test_fresh_modules_need_a_posterior_prior_and_a_module_of_the_network():
  from bnnjax import models  # pylint: disable=import-outside-toplevel
  from bnnjax.methods import mean_field  # pylint: disable=import-outside-toplevel
  from bnnjax.models import multihead  # pylint: disable=import-outside-toplevel
  from bnnjax.task import DataInfo  # pylint: disable=import-outside-toplevel

  m = models.get("mean_field/multihead").default_config()
  m.update(hidden_sizes=(4,), head_classes=((0, 1), (2, 3)), fresh_modules=("multihead/head_1",))
  with pytest.raises(
    ValueError, match=r"^config.model.fresh_modules needs prior='posterior', got prior='gaussian'$"
  ):
    mean_field.validate(m)
  m.update(fresh_modules=(), fresh_prior="laplace")
  with pytest.raises(
    ValueError, match=r"^config.model.fresh_prior must be 'gaussian' or 'mixture', got 'laplace'$"
  ):
    mean_field.validate(m)
  m.update(fresh_prior="gaussian", fresh_modules=("multihead/head1",), prior="posterior", prior_workdir="/p")
  info = DataInfo(input_shape=(3,), num_classes=4, num_train=10)
  with pytest.raises(
    ValueError,
    match=r"^config.model.fresh_modules: 'multihead/head1' is not a Bayesian module; "
    r"did you mean 'multihead/head_1'\?$",
  ):
    mean_field.method_task(multihead.build(m, info, 4), m, info, {"prior_workdir": None})
