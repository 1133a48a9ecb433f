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
Member 0 is initialised with the run's own key, so an ensemble of one starts (and, trained
with the same key and data, stays) where the point estimate does.
"""

from typing import Callable

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import likelihoods, objectives
from bnnjax.methods.common import targets
from bnnjax.task import CLASSIFIER, REGRESSOR, DataInfo, Method, Predictor, Task

DEFAULTS = dict(ensemble_size=5, noise_std=1.0, likelihood=likelihoods.GAUSSIAN)


def validate(m) -> None:
  """One-line ValueErrors naming the bad config.model field."""
  size = m.ensemble_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"config.model.ensemble_size must be an integer >= 1, got {size!r}")
  if not m.noise_std > 0:
    raise ValueError(f"config.model.noise_std must be positive, got {m.noise_std!r}")


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


METHOD = Method(
  name="ensemble",
  default_config=lambda: dict(DEFAULTS),
  make_task=lambda forward, m, info, restored: make_task(forward, m, info),
  num_outputs=likelihoods.method_outputs,
)
