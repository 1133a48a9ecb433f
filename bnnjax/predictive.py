"""The Monte Carlo predictive: from K sampled outputs to a prediction and its uncertainty.

Classification, with p_k = softmax(logits_k) for K posterior samples:
    p̄                    = (1/K) Σ_k p_k                    predictive probabilities
    predictive entropy    = H[p̄]                              total uncertainty
    expected entropy      = (1/K) Σ_k H[p_k]                  aleatoric (data) part
    mutual information    = H[p̄] − (1/K) Σ_k H[p_k]          epistemic (model) part,
                          = (1/K) Σ_k KL(p_k ‖ p̄) ≥ 0,  zero when all samples agree.
Regression, with K Gaussian outputs N(μ_k, σ_k²): the predictive is their equal-weight
mixture, whose mean and variance are exact:
    mean = (1/K) Σ_k μ_k,   var = (1/K) Σ_k σ_k²  +  (1/K) Σ_k (μ_k − mean)²
                                   (aleatoric)         (epistemic)
Central intervals treat that mixture as a Gaussian with the same mean and std (an
approximation: the mixture may be skewed or multi-modal).

Everything here is pure and jittable; `sample_predictions` draws the K samples with
`jax.vmap`, not a Python loop.
"""

from typing import Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri


def check_num_samples(num_samples) -> int:
  """K must be a positive Python int, checked before anything is traced."""
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples (K) must be an integer >= 1, got {num_samples!r}")
  return num_samples


def sample_predictions(apply_sample: Callable, rng: jax.Array, x, num_samples: int):
  """Stacks apply_sample(rng_k, x) over K independent keys: outputs gain a leading axis K."""
  keys = jax.random.split(rng, check_num_samples(num_samples))
  return jax.vmap(lambda key: apply_sample(key, x))(keys)


def map_batches(fn: Callable, x, batch_size: int, pad: bool = False):
  """fn(batch_index, x[i:i + batch_size]) over consecutive batches, outputs concatenated on host.

  For a split too large for one forward pass of K samples; `fn` returns a pytree of
  arrays with a leading batch axis (typically a jitted predictive). With pad=True every
  batch has exactly batch_size rows (the last one padded by repeating its last row, the
  padding dropped from the outputs), so a jitted `fn` compiles once for any split size.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if len(x) == 0:
    raise ValueError("map_batches needs at least one input row")
  parts = []
  for i, start in enumerate(range(0, len(x), batch_size)):
    batch = np.asarray(x[start : start + batch_size])
    n = len(batch)
    if pad and n < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
    out = jax.device_get(fn(i, batch))
    parts.append(jax.tree_util.tree_map(lambda leaf, n=n: leaf[:n], out))
  return jax.tree_util.tree_map(lambda *leaves: np.concatenate(leaves, axis=0), *parts)


# ---------------------------------------------------------------- classification


class ClassificationPredictive(NamedTuple):
  """A classifier's K-sample predictive and its uncertainty decomposition (see the module doc)."""

  probs: jax.Array  # [B, C] mean of the K softmax outputs
  std: jax.Array  # [B, C] std over the K samples of each class probability
  predictive_entropy: jax.Array  # [B] H[p̄] (nats)
  expected_entropy: jax.Array  # [B] mean_k H[p_k]: aleatoric
  mutual_information: jax.Array  # [B] predictive − expected entropy: epistemic


def _entropy_from_log_probs(log_p):
  # 0 · log 0 = 0: where p underflows to 0, exp(log p) is 0 and the product is 0, not NaN,
  # as long as log p is finite; log_softmax keeps it finite.
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def classification_predictive(logits: jax.Array) -> ClassificationPredictive:
  """The predictive and its uncertainty decomposition from sampled logits [K, B, C]."""
  if logits.ndim != 3:
    raise ValueError(f"expected sampled logits [K, B, C], got shape {logits.shape}")
  num_samples = logits.shape[0]
  log_p = jax.nn.log_softmax(logits, axis=-1)  # [K, B, C]
  probs_k = jnp.exp(log_p)
  # log p̄ in log space, so tiny probabilities keep their precision.
  log_mean_p = jax.nn.logsumexp(log_p, axis=0) - jnp.log(num_samples)
  predictive_entropy = _entropy_from_log_probs(log_mean_p)
  expected_entropy = jnp.mean(_entropy_from_log_probs(log_p), axis=0)
  # H[p̄] − E H[p_k] is ≥ 0 in exact arithmetic; clip the rounding error.
  mutual_information = jnp.maximum(predictive_entropy - expected_entropy, 0.0)
  return ClassificationPredictive(
    probs=jnp.exp(log_mean_p),
    std=jnp.std(probs_k, axis=0),
    predictive_entropy=predictive_entropy,
    expected_entropy=expected_entropy,
    mutual_information=mutual_information,
  )


def uncertainty_scores(pred: ClassificationPredictive, num_samples: int) -> Dict[str, jax.Array]:
  """OOD scores, higher = more out-of-distribution, each [B].

  Always: "one_minus_max_prob" = 1 − max_c p̄_c. With K = 1 (a point estimate) the entropy is the
  plain "softmax_entropy"; with K > 1 it is the "predictive_entropy", and the sample-based
  scores exist: "mutual_information" and "class_std" (the std across samples of the
  probability of the predicted class, the quantity the seed tutorial thresholds).
  """
  scores = {"one_minus_max_prob": 1.0 - jnp.max(pred.probs, axis=-1)}
  if num_samples == 1:
    scores["softmax_entropy"] = pred.predictive_entropy
    return scores
  predicted = jnp.argmax(pred.probs, axis=-1)
  scores["predictive_entropy"] = pred.predictive_entropy
  scores["mutual_information"] = pred.mutual_information
  scores["class_std"] = jnp.take_along_axis(pred.std, predicted[:, None], axis=-1)[:, 0]
  return scores


# ---------------------------------------------------------------- regression


class RegressionPredictive(NamedTuple):
  """The moments of a regressor's K-sample Gaussian mixture, split into aleatoric and epistemic."""

  mean: jax.Array  # mixture mean
  std: jax.Array  # mixture std: sqrt(aleatoric² + epistemic²)
  aleatoric_std: jax.Array  # sqrt(mean_k σ_k²)
  epistemic_std: jax.Array  # std over samples of μ_k


def regression_predictive(means: jax.Array, noise_stds: jax.Array) -> RegressionPredictive:
  """Moments of the equal-weight mixture of N(means[k], noise_stds[k]²) over the leading axis K."""
  if means.shape != noise_stds.shape:
    raise ValueError(f"means {means.shape} and noise_stds {noise_stds.shape} must have one shape")
  aleatoric_var = jnp.mean(noise_stds**2, axis=0)
  epistemic_var = jnp.var(means, axis=0)
  return RegressionPredictive(
    mean=jnp.mean(means, axis=0),
    std=jnp.sqrt(aleatoric_var + epistemic_var),
    aleatoric_std=jnp.sqrt(aleatoric_var),
    epistemic_std=jnp.sqrt(epistemic_var),
  )


def central_interval(mean, std, level: float = 0.95):
  """(lower, upper) = mean ∓ z·std with z = Φ⁻¹((1 + level) / 2): a Gaussian approximation."""
  if not 0.0 < level < 1.0:
    raise ValueError(f"interval level must be in (0, 1), got {level}")
  z = ndtri((1.0 + level) / 2.0)
  return mean - z * std, mean + z * std
