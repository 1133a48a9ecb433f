"""The K-sample predictive of a trained model over any number of inputs, in fixed-size batches."""

import functools
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import predictive
from bnnjax.task import CLASSIFIER, Predictor

Predictive = Union[predictive.ClassificationPredictive, predictive.RegressionPredictive]


@functools.lru_cache(maxsize=64)
def make_predict_fn(predictor: Predictor, num_samples: int):
  """A jitted (params, rng, x [B, ...]) -> predictive of B inputs.

  Cached per (predictor, K): a Run's repeated predict / evaluate calls compile once per shape.
  """
  predictive.check_num_samples(num_samples)

  def predict(params, rng, x):
    out = predictor.sample(params, rng, x, num_samples)
    if predictor.kind == CLASSIFIER:
      return predictive.classification_predictive(out)
    return predictive.regression_predictive(*out)

  return jax.jit(predict)


def drawn_samples(predictor: Predictor, params, x_example, num_samples: int) -> int:
  """How many samples the predictor draws when asked for `num_samples` (1 for a point estimate)."""
  out = jax.eval_shape(
    lambda p, x: predictor.sample(p, jax.random.PRNGKey(0), x, num_samples),
    params,
    jnp.asarray(x_example[:1]),
  )
  return (out if predictor.kind == CLASSIFIER else out[0]).shape[0]


def predict(
  predictor: Predictor, params, x, num_samples: int, rng: jax.Array, batch_size: int = 1000
) -> Predictive:
  """The predictive of every row of x [N, ...], as numpy arrays with a leading axis N.

  Batch i draws its samples with fold_in(rng, i); every batch has batch_size rows (the last
  padded), so the predictive compiles once.
  """
  fn = make_predict_fn(predictor, num_samples)
  batch_size = min(batch_size, len(x))
  out = predictive.map_batches(
    lambda i, xb: fn(params, jax.random.fold_in(rng, i), xb), x, batch_size, pad=True
  )
  return type(out)(*(np.asarray(v) for v in out))
