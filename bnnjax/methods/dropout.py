"""MC dropout (Gal & Ghahramani 2016): dropout kept at prediction, K masks = K samples.

Inverted dropout on the input of every `hk.Linear` but the first one called (so on the
hidden activations, never on the data), through `hk.intercept_methods`: the network stays
a plain Haiku function and its params are its plain Haiku params.

    h̃ = h * z / (1 - p),   z ~ Bernoulli(1 - p) per unit and example,   E[h̃] = h
    loss = − mean_i log p(y_i | x_i, one mask)

Method fields (`DEFAULTS`):
    dropout_rate     p in [0, 1); p = 0 is the deterministic network exactly
    eval_samples     K masks for `evaluate`
    noise_std        regression likelihood N(y; f(x), noise_std^2)
    likelihood       "gaussian" (noise_std) | "heteroscedastic" (mean and std(x) outputs:
                     bnnjax.likelihoods)
"""

from typing import Callable

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import likelihoods
from bnnjax.methods import ensemble
from bnnjax.predictive import check_num_samples
from bnnjax.methods.common import targets
from bnnjax.task import CLASSIFIER, REGRESSOR, DataInfo, Method, Predictor, Task

DEFAULTS = dict(dropout_rate=0.1, eval_samples=16, noise_std=1.0, likelihood=likelihoods.GAUSSIAN)


def validate(m) -> None:
  """One-line ValueErrors naming the bad config.model field."""
  if not 0 <= m.dropout_rate < 1:
    raise ValueError(f"config.model.dropout_rate must lie in [0, 1), got {m.dropout_rate!r}")
  try:
    check_num_samples(m.eval_samples)
  except ValueError:
    raise ValueError(
      f"config.model.eval_samples (K) must be an integer >= 1, got {m.eval_samples!r}"
    ) from None
  if not m.noise_std > 0:
    raise ValueError(f"config.model.noise_std must be positive, got {m.noise_std!r}")


def inverted_dropout(rng: jax.Array, rate: float, x: jax.Array) -> jax.Array:
  """x with each entry zeroed with probability `rate`, the rest scaled by 1 / (1 - rate)."""
  if rate == 0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def dropout_transform(forward: Callable, rate: float) -> hk.Transformed:
  """hk.transform of `forward(x)` with dropout on the input of every hk.Linear after the first.

  apply(params, rng, x) runs one mask; init(rng, x) gives forward's own params. At rate 0 no
  key is drawn and apply is the deterministic network.
  """

  def dropped(x):
    calls = []

    def interceptor(next_fun, args, kwargs, context):
      if context.method_name != "__call__" or not isinstance(context.module, hk.Linear):
        return next_fun(*args, **kwargs)
      calls.append(context.module.module_name)
      if len(calls) == 1 or rate == 0:
        return next_fun(*args, **kwargs)
      return next_fun(inverted_dropout(hk.next_rng_key(), rate, args[0]), *args[1:], **kwargs)

    with hk.intercept_methods(interceptor):
      return forward(x)

  return hk.transform(dropped)


def sample_outputs(net: hk.Transformed, params, rng: jax.Array, x, num_samples: int):
  """K outputs [K, B, ...] of K independent masks (jax.vmap over K keys)."""
  keys = jax.random.split(rng, check_num_samples(num_samples))
  return jax.vmap(net.apply, in_axes=(None, 0, None))(params, keys, x)


def make_task(forward: Callable, m, info: DataInfo) -> Task:
  """The MC-dropout Task of the Haiku function `forward(x) -> outputs [B, C]`.

  Args:
    forward: called inside hk.transform with x [B, *info.input_shape]; [B, 1] for regression.
    m: config.model with DEFAULTS' fields.
    info: the data; num_classes = 0 makes a regressor.
  Returns:
    Task(init, loss, evaluate, predictor); params are the network's plain Haiku params;
    predictor.sample draws K masks: logits [K, B, C] or (means [K, B], stds [K, B]).
  """
  validate(m)
  classification = ensemble.check_outputs(info)
  likelihood = likelihoods.check(m.likelihood, info)
  net = dropout_transform(forward, float(m.dropout_rate))
  noise_std = float(m.noise_std)

  def init(rng, batch):
    return net.init(rng, batch["x"])

  def loss(params, rng, batch, step):
    del step
    outputs = sample_outputs(net, params, rng, batch["x"], 1)
    nll = ensemble.member_nlls(outputs, targets(batch), classification, noise_std, likelihood)[0]
    return nll, {"nll": nll}

  def evaluate(params, rng, batch):
    outputs = sample_outputs(net, params, rng, batch["x"], m.eval_samples)
    return ensemble.predictive_metrics(outputs, targets(batch), classification, noise_std, likelihood)

  def sample(params, rng, x, num_samples):
    outputs = sample_outputs(net, params, rng, x, num_samples)
    if classification:
      return outputs
    return likelihoods.mean_and_std(outputs, likelihood, noise_std)

  return Task(init, loss, evaluate, predictor=Predictor(CLASSIFIER if classification else REGRESSOR, sample))


METHOD = Method(
  name="dropout",
  default_config=lambda: dict(DEFAULTS),
  make_task=lambda forward, m, info, restored: make_task(forward, m, info),
  num_outputs=likelihoods.method_outputs,
)
