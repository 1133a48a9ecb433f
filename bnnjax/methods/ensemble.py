"""Deep ensembles (Lakshminarayanan et al. 2017): M point estimates trained side by side.

The params are the M members' Haiku params stacked on a leading axis [M, ...] (each member
initialised by the network's own init, from its own key). One jitted
step trains every member: `jax.vmap` runs the network over the member axis on the same batch,
and the loss is the sum of the members' NLLs, so that each member's gradient is exactly its
own point-estimate gradient (members share nothing):

    loss = Σ_m − mean_i log p(y_i | x_i, w_m)        metrics["nll"] = loss / M

Its predictive is the M members' outputs, K = M whatever is asked: the mean of the members'
softmaxes for a classifier, the equal-weight Gaussian mixture for a regressor (fixed
`noise_std`, or each member's own std(x) with the heteroscedastic head).

Method fields (`DEFAULTS`):
    ensemble_size    M >= 1 members
    noise_std        regression likelihood N(y; f(x), noise_std^2)
    likelihood       "gaussian" (noise_std) | "heteroscedastic" (mean and std(x) outputs:
                     bnnjax.likelihoods)
    bootstrap        False | True: each member fits its own Poisson(1) bootstrap resample
    prior_function_scale   β >= 0; β > 0 adds randomised prior functions (Osband et al. 2018)
Member 0 is initialised with the run's own key, so an ensemble of one starts (and, trained
with the same key and data, stays) where the point estimate does.

Both options are off by default, and off, nothing above changes: the params are the stacked
members and the loss, predictive and metrics are computed as written there.

Bootstrap (`bootstrap=True`). Member m weighs example n by w_mn ~ Poisson(1), the limit of a
multinomial resample of N from N (each example drawn w_mn times, 37% of them not at all), and

    loss = Σ_m (1/B) Σ_i w_m,i · (− log p(y_i | x_i, w_m))

(an unbiased estimate of member m's mean NLL over its resample). w_mn is a pure function of
(the run's seed, m, example n): w_mn = F⁻¹(u) with F the Poisson(1) CDF and
u = uniform(fold_in(key_m, hash(x_n, y_n))), key_m drawn at init from the run's key and stored
with the run, hash a fixed integer hash of the example's bits. The loop's batches hold x and y
only (no example index), so the example is known by its bits: exact duplicates in a training
set share their weights. Batches stay the loop's pure function of (seed, step), so a resumed run
replays the same weights.

Randomised prior functions (`prior_function_scale=β > 0`). Each member predicts

    f_m(x) = g(θ_m, x) + β · g(φ_m, x)

with g the same network and φ_m its own init (keys independent of the members'), never
trained: the prior's outputs enter the loss, predictive and metrics, its params receive no
gradient and no optimizer update. A regression prior function adds to the mean output; the
heteroscedastic head (whose second output is a std) takes none.

With either option the params are {"weights": stacked members [M, ...], "collected":
{"prior": φ [M, ...] and/or "bootstrap_keys": uint32 [M, 2]}}, the loop's trajectory layout
(bnnjax.task.Trajectory): it differentiates and optimises "weights" only and `collect` hands
"collected" back unchanged, so φ and the keys are checkpointed with the run as they were drawn.
"""

import math
from typing import Callable

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import likelihoods, objectives
from bnnjax.distributions import categorical_log_prob, gaussian_log_prob
from bnnjax.methods.common import targets
from bnnjax.task import CLASSIFIER, REGRESSOR, DataInfo, Method, Predictor, Task, Trajectory

DEFAULTS = dict(
  ensemble_size=5,
  noise_std=1.0,
  likelihood=likelihoods.GAUSSIAN,
  bootstrap=False,
  prior_function_scale=0.0,
)


def validate(m) -> None:
  """One-line ValueErrors naming the bad config.model field."""
  size = m.ensemble_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"config.model.ensemble_size must be an integer >= 1, got {size!r}")
  if not m.noise_std > 0:
    raise ValueError(f"config.model.noise_std must be positive, got {m.noise_std!r}")
  if not isinstance(m.bootstrap, bool):
    raise ValueError(f"config.model.bootstrap must be True or False, got {m.bootstrap!r}")
  beta = m.prior_function_scale
  if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < float("inf"):
    raise ValueError(f"config.model.prior_function_scale must be a finite number >= 0, got {beta!r}")
  if beta > 0 and m.likelihood == likelihoods.HETEROSCEDASTIC:
    raise ValueError(
      "config.model.prior_function_scale > 0 needs a classifier or the 'gaussian' regression "
      "likelihood: the 'heteroscedastic' head's std output takes no prior function"
    )


def check_outputs(info: DataInfo) -> bool:
  """True for a classifier (num_classes >= 2), False for a regressor (num_classes = 0)."""
  if info.num_classes == 1:
    raise ValueError("classification needs >= 2 classes, got num_classes=1")
  return info.num_classes > 0


def member_keys(rng: jax.Array, size: int) -> jax.Array:
  """[M] init keys: member 0 gets `rng` itself (the point estimate's), the others fresh keys."""
  rest = jax.random.split(jax.random.fold_in(rng, 1), size - 1)
  return jnp.concatenate([rng[None], rest])


def stacked_outputs(apply: Callable, params, x) -> jax.Array:
  """apply(member params, x) for every member of params [M, ...]: outputs [M, B, ...]."""
  return jax.vmap(apply, in_axes=(0, None))(params, x)


def prior_outputs(apply: Callable, params, x, beta: float) -> jax.Array:
  """Outputs [M, B, C] of the members with their randomised prior functions:
  g(θ_m, x) + β · g(φ_m, x) for params {"weights": θ, "collected": {"prior": φ}} (β > 0);
  φ is held fixed (stop_gradient)."""
  prior = jax.lax.stop_gradient(params["collected"]["prior"])
  return stacked_outputs(apply, params["weights"], x) + beta * stacked_outputs(apply, prior, x)


# Poisson(1) CDF at k = 0..15 (`poisson1_inverse_cdf`). A numpy array: importing the module
# starts no JAX backend (a forked process could not use it).
_POISSON1_CDF = np.asarray(
  [sum(math.exp(-1.0) / math.factorial(j) for j in range(k + 1)) for k in range(16)], np.float32
)


def _mix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser (uint32 in, uint32 out): every input bit moves every output bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def example_hash(x: jax.Array, y: jax.Array) -> jax.Array:
  """[B] uint32: a fixed hash of each example's bits (x [B, ...] float32, y [B] or [B, 1]).

  Exact integer arithmetic only (a sum mod 2³² of each element's mixed bits and position), so
  an example hashes the same in any batch, at any position, under any compilation.
  """

  def bits(a):
    a = a.reshape(a.shape[0], -1)
    if jnp.issubdtype(a.dtype, jnp.floating):
      return jax.lax.bitcast_convert_type(a.astype(jnp.float32), jnp.uint32)
    return a.astype(jnp.uint32)

  flat = jnp.concatenate([bits(x), bits(y)], axis=1)
  position = jnp.arange(flat.shape[1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
  return _mix32(jnp.sum(_mix32(flat ^ position), axis=1, dtype=jnp.uint32))


def bootstrap_weights(keys: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """[M, B] float32 Poisson(1) weights of each member (keys uint32 [M, 2]) on each example.

  w[m, i] = F⁻¹(uniform(fold_in(keys[m], example_hash(x, y)[i]))), F the Poisson(1) CDF: a pure
  function of (keys[m], the example); mean 1, a share e⁻¹ ≈ 0.37 of zeros.
  """
  hashes = example_hash(x, y)
  draw = lambda key, h: jax.random.uniform(jax.random.fold_in(key, h))  # noqa: E731
  u = jax.vmap(lambda key: jax.vmap(lambda h: draw(key, h))(hashes))(keys)
  return poisson1_inverse_cdf(u)


def poisson1_inverse_cdf(u: jax.Array) -> jax.Array:
  """F⁻¹(u) = min{k : u < F(k)} for the Poisson(1) CDF F, as float32: the number of CDF entries at
  or below u (u = F(k) exactly gives k + 1, so that P(F⁻¹(U) = k) = F(k) − F(k − 1))."""
  return jnp.sum(u[..., None] >= _POISSON1_CDF, axis=-1).astype(jnp.float32)


def example_nlls(
  outputs: jax.Array, y: jax.Array, classification: bool, noise_std, likelihood: str = likelihoods.GAUSSIAN
) -> jax.Array:
  """[M, B] each member's NLL of each example; outputs [M, B, C] (as member_nlls)."""
  if classification:
    return -categorical_log_prob(outputs, y[None])
  mean, std = likelihoods.mean_and_std(outputs, likelihood, noise_std)
  return -gaussian_log_prob(y[None], mean, std)


def member_nlls(
  outputs: jax.Array, y: jax.Array, classification: bool, noise_std, likelihood: str = likelihoods.GAUSSIAN
) -> jax.Array:
  """[M] each member's mean NLL over the batch; outputs [M, B, C] (C = 1 for regression, 2 for
  the heteroscedastic head)."""
  if classification:
    return jax.vmap(lambda o: objectives.categorical_nll(o[None], y))(outputs)
  mean, std = likelihoods.mean_and_std(outputs, likelihood, noise_std)
  return jax.vmap(lambda mu, sigma: objectives.gaussian_nll(mu[None], y, sigma[None]))(mean, std)


def sample_predictor(
  apply: Callable, classification: bool, noise_std: float, likelihood: str = likelihoods.GAUSSIAN
) -> Predictor:
  """The predictive of stacked weights [S, ...] (ensemble members, or posterior samples):
  every one of them is a draw, so K = S whatever is asked.

  sample(params, rng, x, num_samples) -> logits [S, B, C], or (means [S, B], stds [S, B]).
  """

  def sample(params, rng, x, num_samples):
    del rng, num_samples
    outputs = stacked_outputs(apply, params, x)
    if classification:
      return outputs
    return likelihoods.mean_and_std(outputs, likelihood, noise_std)

  return Predictor(CLASSIFIER if classification else REGRESSOR, sample)


def predictive_metrics(
  outputs: jax.Array, y: jax.Array, classification: bool, noise_std, likelihood: str = likelihoods.GAUSSIAN
) -> dict:
  """Accuracy and NLL of the equal-weight predictive of S outputs [S, B, C] (RMSE, NLL and
  95% coverage for a regressor): each a mean over the batch."""
  if classification:
    probs = jax.nn.softmax(outputs, -1).mean(0)
    return {
      "accuracy": jnp.mean(jnp.argmax(probs, -1) == y),
      "nll": objectives.categorical_predictive_nll(outputs, y).mean(),
    }
  from bnnjax.methods.mean_field import regression_metrics  # pylint: disable=import-outside-toplevel

  mean, std = likelihoods.mean_and_std(outputs, likelihood, noise_std)
  return regression_metrics(mean, y, std)


def make_task(forward: Callable, m, info: DataInfo) -> Task:
  """The deep-ensemble Task of the Haiku function `forward(x) -> outputs [B, C]`.

  Args:
    forward: called inside hk.transform with x [B, *info.input_shape]; [B, 1] for regression.
    m: config.model with DEFAULTS' fields.
    info: the data; num_classes = 0 makes a regressor.
  Returns:
    Task(init, loss, evaluate, predictor) whose params are [M, ...] stacked Haiku params.
  """
  validate(m)
  classification = check_outputs(info)
  likelihood = likelihoods.check(m.likelihood, info)
  net = hk.without_apply_rng(hk.transform(forward))
  size, noise_std = m.ensemble_size, float(m.noise_std)
  if m.bootstrap or m.prior_function_scale > 0:
    return _extended_task(net, m, classification, likelihood)

  # Members are initialised one by one by one compiled init (a vmapped Haiku init compiles
  # several times slower, and init runs once), then stacked.
  init_one = jax.jit(net.init)

  def init(rng, batch):
    keys = member_keys(rng, size)
    members = [init_one(keys[i], batch["x"]) for i in range(size)]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *members)

  def loss(params, rng, batch, step):
    del rng, step
    outputs = stacked_outputs(net.apply, params, batch["x"])
    nlls = member_nlls(outputs, targets(batch), classification, noise_std, likelihood)
    ensemble_nll = predictive_metrics(outputs, targets(batch), classification, noise_std, likelihood)["nll"]
    metrics = {"nll": nlls.mean(), "ensemble_nll": ensemble_nll}
    return nlls.sum(), metrics

  def evaluate(params, rng, batch):
    del rng
    outputs = stacked_outputs(net.apply, params, batch["x"])
    y = targets(batch)
    return {
      **predictive_metrics(outputs, y, classification, noise_std, likelihood),
      "member_nll": member_nlls(outputs, y, classification, noise_std, likelihood).mean(),
    }

  predictor = sample_predictor(net.apply, classification, noise_std, likelihood)
  return Task(init, loss, evaluate, predictor=predictor)


def _extended_task(net, m, classification: bool, likelihood: str) -> Task:
  """make_task's Task with bootstrap weights and / or randomised prior functions (module doc)."""
  size, noise_std, beta = m.ensemble_size, float(m.noise_std), float(m.prior_function_scale)
  init_one = jax.jit(net.init)

  def stack(members):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *members)

  def init(rng, batch):
    keys = member_keys(rng, size)
    params = {"weights": stack([init_one(keys[i], batch["x"]) for i in range(size)]), "collected": {}}
    if beta > 0:
      prior_keys = jax.random.split(jax.random.fold_in(rng, 2), size)
      params["collected"]["prior"] = stack([init_one(prior_keys[i], batch["x"]) for i in range(size)])
    if m.bootstrap:
      params["collected"]["bootstrap_keys"] = jax.random.split(jax.random.fold_in(rng, 3), size)
    return params

  def outputs_of(params, x):
    if beta > 0:
      return prior_outputs(net.apply, params, x, beta)
    return stacked_outputs(net.apply, params["weights"], x)

  def loss(params, rng, batch, step):
    del rng, step
    y = targets(batch)
    outputs = outputs_of(params, batch["x"])
    nlls = example_nlls(outputs, y, classification, noise_std, likelihood)  # [M, B]
    metrics = {
      "nll": nlls.mean(),
      "ensemble_nll": predictive_metrics(outputs, y, classification, noise_std, likelihood)["nll"],
    }
    if m.bootstrap:
      weights = bootstrap_weights(params["collected"]["bootstrap_keys"], batch["x"], y)
      return (weights * nlls).mean(axis=1).sum(), metrics
    return nlls.mean(axis=1).sum(), metrics

  def evaluate(params, rng, batch):
    del rng
    outputs, y = outputs_of(params, batch["x"]), targets(batch)
    return {
      **predictive_metrics(outputs, y, classification, noise_std, likelihood),
      "member_nll": example_nlls(outputs, y, classification, noise_std, likelihood).mean(),
    }

  def sample(params, rng, x, num_samples):
    del rng, num_samples
    outputs = outputs_of(params, x)
    if classification:
      return outputs
    return likelihoods.mean_and_std(outputs, likelihood, noise_std)

  predictor = Predictor(CLASSIFIER if classification else REGRESSOR, sample)
  # The loop's trajectory layout: "weights" trained, "collected" (φ, keys) handed back as it is.
  trajectory = Trajectory(collect=lambda collected, weights, step, total_steps: collected)
  return Task(init, loss, evaluate, predictor=predictor, trajectory=trajectory)


METHOD = Method(
  name="ensemble",
  default_config=lambda: dict(DEFAULTS),
  make_task=lambda forward, m, info, restored: make_task(forward, m, info),
  num_outputs=likelihoods.method_outputs,
)
