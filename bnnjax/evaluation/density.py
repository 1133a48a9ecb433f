"""Explicit densities (normalising flows): test figures and pictures of a `Density`.

Pure functions of a bnnjax.task.Density, its params and the train / test splits that the
caller loads (bnnjax.data.load_split: the run's data seed and preprocessing); nothing here
reads data or checkpoints. `evaluate` gathers them into one plain dict and, given
`out_dir`, writes the PNGs.

Figures: log_lik and nll (nats per example, means over the test split) and, for 8-bit data
(Density.discrete), bits_per_dim, each averaged over `dequantization_draws` independent
dequantisations; for 2-D data, the test log-likelihood of one Gaussian fitted to the
training points (gaussian_fit_log_lik, the baseline a flow must beat) and the total mass of
the learned density on the plotting grid (grid_mass, about 1 when the grid holds the data).

Randomness, all from `rng` (jax.random.PRNGKey(seed)): draw i dequantises with
fold_in(rng, i) (batch j of it with fold_in of that, j), samples use fold_in(rng, 10^6).
"""

import math
import os
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import data, train
from bnnjax.evaluation.generative import image_shape
from bnnjax.models.flow import density_metrics
from bnnjax.task import DataInfo, Density

SAMPLE_STREAM = 1_000_000  # fold_in(rng, SAMPLE_STREAM) draws the samples
IMAGE_SIDE = 8  # discrete data: an IMAGE_SIDE x IMAGE_SIDE grid of samples


def test_log_lik(
  density: Density, params, test: data.Data, rng: jax.Array, info: DataInfo, batch_size: int = 1000
) -> dict:
  """{"log_lik", "nll"[, "bits_per_dim"]}: means over test {"x": [N, *input_shape], "y": [N]}
  of one dequantisation (batch i drawn with fold_in(rng, i)), as the train loop evaluates."""
  dim = math.prod(info.input_shape)
  metrics = jax.jit(lambda p, r, b: density_metrics(density.log_prob(p, r, b["x"]), density.discrete, dim))
  return train.evaluate_split(metrics, params, rng, test, batch_size)


def gaussian_fit_log_lik(train_x: np.ndarray, test_x: np.ndarray) -> float:
  """Mean test log N(x; m, S) with (m, S) the maximum-likelihood fit to the training points.

  train_x [N, D], test_x [M, D]; the baseline any density model of the data should beat.
  """
  mean = train_x.mean(0)
  cov = np.cov(train_x, rowvar=False, bias=True)
  centred = test_x - mean
  mahalanobis = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
  _, log_det = np.linalg.slogdet(cov)
  dim = train_x.shape[1]
  return float(np.mean(-0.5 * (mahalanobis + log_det + dim * np.log(2 * np.pi))))


def density_on_grid(
  density: Density, params, points: np.ndarray, grid_size: int, margin: float = 1.0
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
  """A 2-D density on a grid_size x grid_size grid reaching `margin` beyond points [N, 2].

  Returns (xx, yy, density) [grid_size, grid_size] each and the grid's total mass (the
  Riemann sum of the density).
  """
  low, high = points.min(0) - margin, points.max(0) + margin
  ticks = [np.linspace(low[i], high[i], grid_size) for i in range(2)]
  xx, yy = np.meshgrid(*ticks)
  grid = np.stack([xx, yy], axis=-1).reshape(-1, 2).astype(np.float32)
  log_p = density.log_prob(params, jax.random.PRNGKey(0), jnp.asarray(grid))
  values = np.exp(np.asarray(log_p)).reshape(xx.shape)
  mass = float(values.sum() * (ticks[0][1] - ticks[0][0]) * (ticks[1][1] - ticks[1][0]))
  return xx, yy, values, mass


def evaluate(
  density: Density,
  params,
  train_split: data.Data,
  test: data.Data,
  *,
  seed: int,
  out_dir: Optional[str] = None,
  info: DataInfo,
  dequantization_draws: int = 1,
  grid_size: int = 300,
  num_samples: int = 2000,
  batch_size: int = 1000,
) -> dict:
  """Every figure of a trained density on its test split, as a plain dict.

  Args:
    density: the model's capability (Task.density); params: its trained params.
    train_split, test: {"x": [N, *input_shape], "y": [N]}, as the loop saw them.
    seed: of the dequantisation and the samples (rng = jax.random.PRNGKey(seed)).
    out_dir: where to write the PNGs.
    info: the run's DataInfo. dequantization_draws: dequantisations averaged (discrete data).
    grid_size: grid points per axis (2-D data). num_samples: samples drawn for the 2-D picture.
    batch_size: test inputs per jitted batch.
  Returns:
    log_lik, nll[, bits_per_dim], num_test, dequantization_draws; for 2-D data
    gaussian_fit_log_lik and grid_mass; "plots" (the PNG paths) when out_dir is given.
  """
  from bnnjax import plots  # pylint: disable=import-outside-toplevel  (matplotlib: only to draw)

  if not (isinstance(dequantization_draws, int) and dequantization_draws >= 1):
    raise ValueError(f"dequantization_draws must be an integer >= 1, got {dequantization_draws!r}")
  rng = jax.random.PRNGKey(seed)
  draws = [
    test_log_lik(density, params, test, jax.random.fold_in(rng, i), info, batch_size)
    for i in range(dequantization_draws)
  ]
  out = {key: float(np.mean([d[key] for d in draws])) for key in draws[0]}
  out.update(num_test=len(test["x"]), dequantization_draws=dequantization_draws)
  sample_rng = jax.random.fold_in(rng, SAMPLE_STREAM)
  written = []
  if tuple(info.input_shape) == (2,) and not density.discrete:
    train_x, test_x = np.asarray(train_split["x"]), np.asarray(test["x"])
    out["gaussian_fit_log_lik"] = gaussian_fit_log_lik(train_x, test_x)
    xx, yy, values, out["grid_mass"] = density_on_grid(density, params, test_x, grid_size)
    if out_dir:
      samples = np.asarray(density.sample(params, sample_rng, num_samples))
      written += [
        plots.density_2d(
          xx,
          yy,
          values,
          test_x,
          os.path.join(out_dir, "flow_density.png"),
          f"learned density (grid mass {out['grid_mass']:.3f})",
        ),
        plots.samples_2d(
          samples,
          train_x,
          (xx.min(), yy.min()),
          (xx.max(), yy.max()),
          os.path.join(out_dir, "flow_samples.png"),
        ),
      ]
  elif out_dir and density.discrete and image_shape(info.input_shape):
    images = density.sample(params, sample_rng, IMAGE_SIDE * IMAGE_SIDE)
    written.append(
      plots.image_grid(
        images,
        image_shape(info.input_shape),
        os.path.join(out_dir, "flow_samples.png"),
        IMAGE_SIDE,
        "flow samples",
      )
    )
  if out_dir:
    out["plots"] = written
  return out
