r"""Evaluates a trained RealNVP run: pictures for 2-D densities, bits/dim for images.

  python scripts/flow_plots.py --workdir=runs/flow_moons
  python scripts/flow_plots.py --workdir=runs/flow_mnist --dequantization_draws=4

2-D data (moons, ring): <workdir>/flow_density.png (the learned density on a grid beside
the test points) and <workdir>/flow_samples.png (flow samples beside the test points), and
<workdir>/flow_eval.json with the test log-likelihood of the flow and of a single Gaussian
fitted to the training points by maximum likelihood, with the grid's total mass.

Images (preprocess = "dequantize_logit"): <workdir>/flow_eval.json with the test bits/dim,
averaged over --dequantization_draws independent dequantisations, and
<workdir>/flow_samples.png, a grid of sampled images.
"""
import json
import os

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from bnnjax import checkpoint, data  # pylint: disable=wrong-import-position
from bnnjax import train as train_lib  # pylint: disable=wrong-import-position
from bnnjax.models import flow as flow_lib  # pylint: disable=wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of a trained flow.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 2000, "Flow samples to draw (2-D) / 64 images.")
_GRID_SIZE = flags.DEFINE_integer("grid_size", 300, "Grid points per axis for the 2-D density.")
_DRAWS = flags.DEFINE_integer("dequantization_draws", 1, "Dequantisations averaged for bits/dim.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of samples and dequantisation noise.")
flags.mark_flags_as_required(["workdir"])


def gaussian_fit_log_lik(train_x: np.ndarray, test_x: np.ndarray) -> float:
  """Mean test log N(x; m, S) with (m, S) the maximum-likelihood fit to the training points."""
  mean = train_x.mean(0)
  cov = np.cov(train_x, rowvar=False, bias=True)
  centred = test_x - mean
  mahalanobis = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
  _, log_det = np.linalg.slogdet(cov)
  dim = train_x.shape[1]
  return float(np.mean(-0.5 * (mahalanobis + log_det + dim * np.log(2 * np.pi))))


def _save_panels(fig, axes, low, high, path):
  """Same square limits on every panel, then the PNG."""
  for ax in axes:
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def plot_2d(flow, params, train_x, test_x, workdir, rng):
  """Density and sample PNGs; returns the grid's total mass (about 1 if the grid holds the data)."""
  low, high = test_x.min(0) - 1.0, test_x.max(0) + 1.0
  ticks = [np.linspace(low[i], high[i], _GRID_SIZE.value) for i in range(2)]
  xx, yy = np.meshgrid(*ticks)
  grid = np.stack([xx, yy], axis=-1).reshape(-1, 2).astype(np.float32)
  density = np.exp(np.asarray(flow.log_prob(params, jnp.asarray(grid)))).reshape(xx.shape)
  mass = float(density.sum() * (ticks[0][1] - ticks[0][0]) * (ticks[1][1] - ticks[1][0]))
  samples = np.asarray(flow_lib.sample(flow, params, rng, _NUM_SAMPLES.value))

  fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
  axes[0].pcolormesh(xx, yy, density, shading="auto", cmap="viridis")
  axes[0].set_title(f"learned density (grid mass {mass:.3f})")
  axes[1].scatter(*test_x.T, s=2, c="k")
  axes[1].set_title("test points")
  _save_panels(fig, axes, low, high, os.path.join(workdir, "flow_density.png"))

  fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
  axes[0].scatter(*samples.T, s=2, c="tab:blue")
  axes[0].set_title(f"{len(samples)} flow samples")
  axes[1].scatter(*train_x.T, s=2, c="k")
  axes[1].set_title("training points")
  _save_panels(fig, axes, low, high, os.path.join(workdir, "flow_samples.png"))
  return mass


def plot_images(flow, params, input_shape, alpha, workdir, rng):
  """An 8x8 grid of samples, mapped back through the inverse logit to [0, 1]."""
  y = flow_lib.sample(flow, params, rng, 64)
  x = (jax.nn.sigmoid(y) - alpha) / (1.0 - 2.0 * alpha)
  images = np.clip(np.asarray(x), 0.0, 1.0).reshape((8, 8) + tuple(input_shape[:2]))
  tiled = images.transpose(0, 2, 1, 3).reshape(8 * input_shape[0], 8 * input_shape[1])
  plt.imsave(os.path.join(workdir, "flow_samples.png"), tiled, cmap="gray")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value
  params, config, info = checkpoint.restore_run(workdir)
  if config.model.name != "flow":
    raise SystemExit(f"error: {workdir} holds a {config.model.name!r} run, not a 'flow' run")
  d = config.data
  load = lambda split: data.load(d.name, split, d.data_dir or None, flatten=d.flatten)
  test = load("test")
  flow = flow_lib.flow_from_config(config, info.input_shape)
  evaluate = jax.jit(flow_lib.make_task(config, info).evaluate)
  rng = jax.random.PRNGKey(_SEED.value)

  draws = [train_lib.evaluate_split(evaluate, params, jax.random.fold_in(rng, i), test, 1000)
           for i in range(_DRAWS.value)]
  results = {key: float(np.mean([r[key] for r in draws])) for key in draws[0]}
  results.update(data=d.name, num_test=len(test["x"]), dequantization_draws=_DRAWS.value)
  sample_rng = jax.random.fold_in(rng, 1_000_000)
  if config.model.preprocess == "none" and info.input_shape == (2,):
    train = load(d.train_split)
    results["gaussian_fit_log_lik"] = gaussian_fit_log_lik(train["x"], test["x"])
    results["grid_mass"] = plot_2d(flow, params, train["x"], test["x"], workdir, sample_rng)
  elif config.model.preprocess == "dequantize_logit":
    plot_images(flow, params, info.input_shape, config.model.logit_alpha, workdir, sample_rng)
  path = os.path.join(workdir, "flow_eval.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
