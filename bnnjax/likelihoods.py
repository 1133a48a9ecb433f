"""Regression likelihoods: how a network's outputs become a Gaussian N(y; mean(x), std(x)²).

`config.model.likelihood` names one (methods that regress declare the field):

- "gaussian" (the default): one output, the mean; the std is the method's `noise_std` (fixed,
  or learned as one scalar where the method offers `learn_noise`). Homoscedastic.
- "heteroscedastic": two outputs per input, (mean, s), and a std that depends on x,

      std(x) = MIN_STD + softplus(s(x)),

  a softplus rather than exp(s / 2) of a log-variance: the loss's gradient in s stays bounded
  where the network's std is far too small (exp makes it grow like 1 / std²), and MIN_STD keeps
  the NLL finite however sure the network gets. The MIN_STD floor is in the target's units
  (bnnjax's regression sets have targets of order 1).

`mean_and_std` is the one place either becomes (mean, std); every method calls it, so the
predictive's noise stds are per input, and `bnnjax.predictive.regression_predictive` splits the
K-sample mixture's variance into aleatoric (mean of the K stds²) and epistemic (variance of the
K means) parts.
"""

from typing import Tuple

import jax
import jax.numpy as jnp

from bnnjax.task import DataInfo

GAUSSIAN, HETEROSCEDASTIC = "gaussian", "heteroscedastic"
LIKELIHOODS = (GAUSSIAN, HETEROSCEDASTIC)
MIN_STD = 1e-3  # the heteroscedastic head's smallest std


def check_name(name) -> str:
  """`name` if it is a known likelihood, else a one-line ValueError naming config.model.likelihood."""
  if name not in LIKELIHOODS:
    raise ValueError(
      f"config.model.likelihood: unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}"
    )
  return name


def check(name, info: DataInfo) -> str:
  """`name` if it is a likelihood the data admits; else a one-line ValueError naming
  config.model.likelihood (an unknown name, or "heteroscedastic" on a classification set)."""
  if check_name(name) == HETEROSCEDASTIC and info.num_classes > 0:
    raise ValueError(
      f"config.model.likelihood='heteroscedastic' needs a regression data set, got one with "
      f"{info.num_classes} classes"
    )
  return name


def num_outputs(name: str, info: DataInfo) -> int:
  """The network's output width: the number of classes, or 1 (mean) / 2 (mean, s) for regression."""
  if info.num_classes > 0:
    return info.num_classes
  return 2 if check(name, info) == HETEROSCEDASTIC else 1


def mean_and_std(outputs: jax.Array, name: str, noise_std=1.0) -> Tuple[jax.Array, jax.Array]:
  """(mean, std) of the Gaussian of each output row.

  Args:
    outputs: [..., 1] for "gaussian", [..., 2] (mean, s) for "heteroscedastic".
    name: the likelihood (see the module doc).
    noise_std: the homoscedastic std (a float or a scalar array); unused by "heteroscedastic".
  Returns:
    mean, std: arrays [...] of one shape (the gaussian's std broadcast to it).
  """
  width = 2 if name == HETEROSCEDASTIC else 1
  if outputs.shape[-1] != width:
    raise ValueError(
      f"the {name} likelihood needs {width} network outputs per input, got {outputs.shape[-1]}"
    )
  mean = outputs[..., 0]
  if name == HETEROSCEDASTIC:
    return mean, MIN_STD + jax.nn.softplus(outputs[..., 1])
  return mean, jnp.broadcast_to(jnp.asarray(noise_std, mean.dtype), mean.shape)


def method_outputs(m, info: DataInfo) -> int:
  """A Method's `num_outputs` for the methods whose config has the `likelihood` field."""
  return num_outputs(m.likelihood, info)
