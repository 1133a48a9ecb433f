"""Latent-variable models (the VAE family): test figures and pictures of a `Generative`.

Pure functions of a bnnjax.task.Generative, its params and a test split that the caller
loads (`Run.test_data()`, i.e. bnnjax.data.load_split: the run's data seed and
preprocessing); nothing here reads data or checkpoints. `evaluate` gathers them into one
plain dict and, given `out_dir`, writes the PNGs.

Figures, nats per example, means over the test split:
  reconstruction, kl, elbo     E_q log p(x | z), KL or log q - log p, their difference, from
                               one z per image (Generative.elbo_terms, on the clean x);
  log_px_iwae, nll_iwae        the IWAE_k bound on log p(x[| y]) and its negation;
  deterministic autoencoders   "reconstruction" is log p(x | code of the corrupted x), from
  (variational=False)          Generative.reconstruct's Bernoulli means (a denoiser's task),
                               "reconstruction_clean_input" the same from the clean x.
The test set is binarised once and for all: "stochastic" draws each pixel ~ Bernoulli(grey)
with numpy's default_rng(seed) (the protocol of the IWAE literature and the training
distribution of binarize_train="dynamic"); "threshold" keeps grey > 0.5. Binary test data
(data.binarize="static") stay as they are either way.

Randomness, all from `rng` (the evaluation seed's key, jax.random.PRNGKey(seed)): `seed` is
its last key word; rng splits into (metrics, pictures, classifier) keys, and test batch i
uses fold_in(metrics key, i) split into (z, corruption, IWAE) keys.
"""

import math
import os
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import data
from bnnjax.predictive import check_num_samples
from bnnjax.task import DataInfo, Generative

TEST_BINARIZATIONS = ("stochastic", "threshold")
SIDE = 10  # pictures are SIDE x SIDE grids (a CVAE's: one row per class)


def binarised_test_set(test: data.Data, mode: str, seed: int, num_test: int = 0) -> data.Data:
  """{"x": binary x [N, ...], "y": [N]} of a test split with pixels in [0, 1].

  mode: "stochastic" (x ~ Bernoulli(grey), drawn with default_rng(seed) over the whole
  split) or "threshold" (grey > 0.5). num_test > 0 keeps the first num_test examples.
  """
  if mode not in TEST_BINARIZATIONS:
    raise ValueError(f"test_binarization must be one of {TEST_BINARIZATIONS}, got {mode!r}")
  x = np.asarray(test["x"], np.float32)
  if mode == "threshold":
    x = (x > 0.5).astype(np.float32)
  else:
    x = (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)
  test = {"x": x, "y": np.asarray(test["y"])}
  return {key: value[:num_test] for key, value in test.items()} if num_test else test


def bernoulli_log_lik_of_means(x: jax.Array, probs: jax.Array) -> jax.Array:
  """log p(x) [B] of binary x [B, ...] under independent Bernoulli means probs [B, ...].

  Means that rounded to exactly 0 or 1 in float32 are clipped to the nearest inside (0, 1).
  """
  info = jnp.finfo(probs.dtype)
  p = jnp.clip(probs, info.tiny, 1.0 - info.epsneg)
  log_p = x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p)
  return log_p.reshape(log_p.shape[0], -1).sum(-1)


def test_metrics(
  generative: Generative, params, test: data.Data, *, rng: jax.Array, k: int, batch_size: int, chunk_size: int
) -> dict:
  """Means over the binary test split {"x": [N, ...], "y": [N]}, nats per example.

  Returns reconstruction, kl, elbo, log_px_iwae (IWAE_k, k importance samples decoded
  chunk_size at a time), nll_iwae; or, for a deterministic autoencoder, reconstruction
  (of the corrupted input) and reconstruction_clean_input.
  """
  labels_of = lambda batch: batch["y"] if generative.conditional else None

  @jax.jit
  def one_batch(rng, batch):
    term_rng, noise_rng, iwae_rng = jax.random.split(rng, 3)
    x, y = batch["x"], labels_of(batch)
    rec, kl = generative.elbo_terms(params, term_rng, x, y)
    if not generative.variational:
      corrupted = bernoulli_log_lik_of_means(x, generative.reconstruct(params, noise_rng, x, y))
      return {"reconstruction": corrupted.sum(), "reconstruction_clean_input": rec.sum()}
    log_px = generative.log_likelihood(params, iwae_rng, x, y, k=k, chunk_size=chunk_size)
    return {
      "reconstruction": rec.sum(),
      "kl": kl.sum(),
      "elbo": (rec - kl).sum(),
      "log_px_iwae": log_px.sum(),
    }

  totals, count = {}, 0
  for i, batch in enumerate(data.eval_batches(test, batch_size)):
    sums = one_batch(jax.random.fold_in(rng, i), batch)
    totals = {key: totals.get(key, 0.0) + float(v) for key, v in sums.items()}
    count += len(batch["x"])
  means = {key: value / count for key, value in totals.items()}
  if "log_px_iwae" in means:
    means["nll_iwae"] = -means["log_px_iwae"]
  return means


def generated_accuracy(
  generative: Generative, params, classify: Callable, rng: jax.Array, num_classes: int, per_class: int = 100
) -> dict:
  """How often a classifier labels conditional samples as the label they were drawn for.

  classify: images [N, *input_shape] (Bernoulli means, grey digits) -> predicted labels [N].
  Returns {"generated_accuracy": fraction, "generated_per_class": per_class}.
  """
  if not generative.conditional:
    raise ValueError("the accuracy of a classifier on generated digits needs a conditional VAE")
  labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  images = np.asarray(generative.sample(params, rng, len(labels), labels))
  predicted = np.asarray(classify(images))
  return {"generated_accuracy": float(np.mean(predicted == labels)), "generated_per_class": per_class}


def latent_codes(generative: Generative, params, test: data.Data, batch_size: int = 1000) -> np.ndarray:
  """Point codes [N, latent_size] of the test inputs (Generative.encode), batched."""
  encode = jax.jit(lambda x, y: generative.encode(params, x, y))
  return np.concatenate(
    [encode(b["x"], b["y"] if generative.conditional else None) for b in data.eval_batches(test, batch_size)]
  )


def image_shape(input_shape) -> Optional[Tuple[int, int]]:
  """(height, width) to draw one input as: (H, W) of (H, W, C), a square of a flat input, else None."""
  input_shape = tuple(input_shape)
  if len(input_shape) == 3:
    return input_shape[:2]
  size = math.prod(input_shape)
  side = math.isqrt(size)
  return (side, side) if side * side == size else None


def pictures(
  generative: Generative, params, test: data.Data, out_dir: str, rng: jax.Array, info: DataInfo
) -> list:
  """Writes samples.png (or a CVAE's cvae_grid.png, one row per class), reconstructions.png
  and, for a 2-D latent, latent_scatter.png into out_dir; returns their paths."""
  from bnnjax import plots  # pylint: disable=import-outside-toplevel  (matplotlib: only to draw)

  sample_rng, noise_rng, grid_rng = jax.random.split(rng, 3)
  shape, written = image_shape(info.input_shape), []
  path = lambda name: os.path.join(out_dir, name)
  if shape and generative.variational and not generative.conditional:
    written.append(
      plots.image_grid(
        generative.sample(params, sample_rng, SIDE * SIDE),
        shape,
        path("samples.png"),
        SIDE,
        "samples: Bernoulli means of p(x | z), z ~ N(0, I)",
      )
    )
  if shape and generative.variational and generative.conditional:
    labels = np.repeat(np.arange(info.num_classes), SIDE)
    images = generative.sample(params, jax.random.split(grid_rng, 1)[0], len(labels), labels)
    written.append(
      plots.image_grid(images, shape, path("cvae_grid.png"), info.num_classes, "CVAE: row = asked digit")
    )
  if shape:
    x, y = test["x"][: SIDE * 2], test["y"][: SIDE * 2]
    rebuilt = generative.reconstruct(params, noise_rng, jnp.asarray(x), y if generative.conditional else None)
    rows, title = [x, rebuilt], "original / reconstruction"
    if generative.corrupt is not None:  # reconstruct corrupts with the same key: the same noise
      rows, title = (
        [x, np.clip(generative.corrupt(noise_rng, jnp.asarray(x)), 0, 1), rebuilt],
        ("original / corrupted / reconstruction"),
      )
    written.append(plots.image_grid(np.stack(rows), shape, path("reconstructions.png"), len(rows), title))
  if generative.latent_size == 2:
    written.append(
      plots.latent_scatter(latent_codes(generative, params, test), test["y"], path("latent_scatter.png"))
    )
  return written


def evaluate(
  generative: Generative,
  params,
  test: data.Data,
  *,
  seed: int,
  out_dir: Optional[str] = None,
  info: DataInfo,
  k: int = 1000,
  batch_size: int = 100,
  chunk_size: int = 100,
  num_test: int = 0,
  test_binarization: str = "stochastic",
  classifier: Optional[Callable] = None,
  classifier_per_class: int = 100,
) -> dict:
  """Every figure of a trained latent-variable model on its test split, as a plain dict.

  Args:
    generative: the model's capability (Task.generative); params: its trained params.
    test: {"x": [N, *input_shape] pixels in [0, 1], "y": [N] labels}, as the loop evaluated.
    seed: of the test binarisation and of the estimates (rng = jax.random.PRNGKey(seed)).
    out_dir: where to write the PNGs (none without it).
    info: the run's DataInfo (input shape, number of classes).
    k, chunk_size: importance samples per test image, decoded chunk_size at a time.
    batch_size: test images per jitted batch. num_test: the first N test images (0 = all).
    test_binarization: "stochastic" or "threshold".
    classifier: conditional models only: images -> predicted labels, scored on
      classifier_per_class samples of each class (generated_accuracy).
  Returns:
    The test_metrics figures, num_test, test_binarization, k (variational models), the
    classifier's figures, and "plots" (the PNG paths) when out_dir is given.
  """
  check_num_samples(k)
  if classifier is not None and not generative.conditional:
    raise ValueError("the accuracy of a classifier on generated digits needs a conditional VAE")
  rng = jax.random.PRNGKey(seed)
  test = binarised_test_set(test, test_binarization, seed, num_test)
  metrics_rng, picture_rng, class_rng = jax.random.split(rng, 3)
  out = test_metrics(
    generative, params, test, rng=metrics_rng, k=k, batch_size=batch_size, chunk_size=chunk_size
  )
  out.update(num_test=len(test["x"]), test_binarization=test_binarization)
  if generative.variational:
    out["k"] = k
  if classifier is not None:
    out.update(
      generated_accuracy(generative, params, classifier, class_rng, info.num_classes, classifier_per_class)
    )
  if out_dir:
    out["plots"] = pictures(generative, params, test, out_dir, picture_rng, info)
  return out
