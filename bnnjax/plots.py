"""PNG figures of calibration and OOD separation: arrays in, one file out.

Figures are made with matplotlib.figure.Figure, not pyplot: nothing needs a display, and
importing bnnjax never changes the backend of a notebook's own plots.
"""

import math
import os
from typing import Mapping

from matplotlib.figure import Figure
import numpy as np


def _subplots(*args, **kwargs):
  """pyplot.subplots without pyplot: a Figure that no backend or window manager tracks."""
  fig = Figure(figsize=kwargs.pop("figsize", None))
  return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  return path


def reliability_diagram(bin_edges, confidence, accuracy, count, path: str, title: str = "") -> str:
  """Accuracy per confidence bin against the diagonal of perfect calibration.

  Bars are each bin's accuracy; the red outline shows its mean confidence, so the gap
  between them is what ECE averages (weighted by the counts shown underneath).
  """
  bin_edges, count = np.asarray(bin_edges), np.asarray(count)
  filled = count > 0
  left, width = bin_edges[:-1], np.diff(bin_edges)
  fig, (top, bottom) = _subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
  top.bar(
    left[filled],
    np.asarray(accuracy)[filled],
    width[filled],
    align="edge",
    edgecolor="black",
    label="accuracy",
  )
  top.bar(
    left[filled],
    np.asarray(confidence)[filled],
    width[filled],
    align="edge",
    fill=False,
    edgecolor="red",
    linestyle="--",
    label="mean confidence",
  )
  top.plot([0, 1], [0, 1], color="gray", linewidth=1, label="perfect calibration")
  top.set(ylabel="accuracy", ylim=(0, 1), title=title)
  top.legend(loc="upper left")
  bottom.bar(left, count, width, align="edge", color="gray", edgecolor="black")
  bottom.set(xlabel="confidence (max predicted probability)", ylabel="count", yscale="symlog", xlim=(0, 1))
  return _save(fig, path)


def score_histograms(
  scores_in: Mapping[str, np.ndarray],
  scores_out: Mapping[str, np.ndarray],
  path: str,
  in_label: str = "in-distribution",
  out_label: str = "OOD",
  title: str = "",
) -> str:
  """One panel per score: normalised histograms of the score in vs out of distribution."""
  names = [name for name in scores_in if name in scores_out]
  if not names:
    raise ValueError("no score is defined both in and out of distribution")
  columns = 2 if len(names) == 4 else min(len(names), 3)
  rows = math.ceil(len(names) / columns)
  fig, axes = _subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
  for ax, name in zip(axes.ravel(), names):
    s_in, s_out = np.asarray(scores_in[name]).ravel(), np.asarray(scores_out[name]).ravel()
    lo, hi = min(s_in.min(), s_out.min()), max(s_in.max(), s_out.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)  # shared bins, so shapes compare
    ax.hist(s_in, bins, density=True, alpha=0.6, label=in_label)
    ax.hist(s_out, bins, density=True, alpha=0.6, label=out_label)
    ax.set(xlabel=name, ylabel="density", yscale="log")
  for ax in axes.ravel()[len(names) :]:
    ax.axis("off")
  axes[0, 0].legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def regression_bands(
  x_grid, mean, epistemic_std, total_std, x_train, y_train, path: str, title: str = ""
) -> str:
  """1-D regression: predictive mean, ±2 epistemic std and ±2 total std bands, training data."""
  fig, ax = _subplots(figsize=(7, 4))
  ax.fill_between(
    x_grid, mean - 2 * total_std, mean + 2 * total_std, color="tab:blue", alpha=0.15, label="±2 total std"
  )
  ax.fill_between(
    x_grid,
    mean - 2 * epistemic_std,
    mean + 2 * epistemic_std,
    color="tab:blue",
    alpha=0.35,
    label="±2 epistemic std",
  )
  ax.plot(x_grid, mean, color="tab:blue", label="predictive mean")
  ax.scatter(x_train, y_train, s=6, color="black", label="training data")
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  ax.set_title(title)
  ax.legend(loc="upper left", fontsize=8)
  return _save(fig, path)


def uncertainty_split(
  x_grid, mean, aleatoric_std, epistemic_std, x_train, y_train, path: str, title: str = ""
) -> str:
  """1-D regression, the predictive std split in two. Top: the training data, the predictive mean,
  its central 95% band of the aleatoric std alone and of the total std sqrt(aleatoric² +
  epistemic²). Bottom: the aleatoric and epistemic stds against x (where they differ, the noise
  or the model's ignorance dominates). All arrays [N] (x_grid's N, or the training set's)."""
  x_grid, mean = np.asarray(x_grid), np.asarray(mean)
  aleatoric_std, epistemic_std = np.asarray(aleatoric_std), np.asarray(epistemic_std)
  total_std = np.sqrt(aleatoric_std**2 + epistemic_std**2)
  fig, (top, bottom) = _subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
  for std, alpha, label in ((total_std, 0.15, "95% total"), (aleatoric_std, 0.35, "95% aleatoric")):
    top.fill_between(x_grid, mean - 1.96 * std, mean + 1.96 * std, color="tab:blue", alpha=alpha, label=label)
  top.plot(x_grid, mean, color="tab:blue", label="predictive mean")
  top.scatter(x_train, y_train, s=4, color="black", label="training data")
  top.set(ylabel="y", title=title)
  top.legend(loc="upper left", fontsize=8)
  bottom.plot(x_grid, aleatoric_std, color="tab:orange", label="aleatoric std")
  bottom.plot(x_grid, epistemic_std, color="tab:green", label="epistemic std")
  bottom.set(xlabel="x", ylabel="std")
  bottom.legend(loc="upper left", fontsize=8)
  return _save(fig, path)


def image_grid(images, image_shape, path: str, rows: int, title: str = "") -> str:
  """One PNG of images [rows * cols, ...] with values in [0, 1], rows stacked top to bottom.

  image_shape: (height, width) of one image; each image is reshaped to it.
  """
  h, w = image_shape
  images = np.asarray(images).reshape(rows, -1, h, w)
  grid = images.transpose(0, 2, 1, 3).reshape(rows * h, -1)
  fig, ax = _subplots(figsize=(grid.shape[1] / 28, grid.shape[0] / 28 + (0.3 if title else 0)))
  ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_axis_off()
  if title:
    ax.set_title(title, fontsize=9)
  return _save(fig, path)


def latent_scatter(codes, labels, path: str, title: str = "posterior means of test images") -> str:
  """2-D codes [N, 2] as points coloured by their labels [N] (digits)."""
  codes = np.asarray(codes)
  fig, ax = _subplots(figsize=(6, 5))
  points = ax.scatter(codes[:, 0], codes[:, 1], c=np.asarray(labels)[: len(codes)], cmap="tab10", s=2)
  fig.colorbar(points, ax=ax, label="digit")
  ax.set(xlabel="z[0]", ylabel="z[1]", title=title)
  return _save(fig, path)


def _same_square_limits(axes, low, high) -> None:
  for ax in axes:
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")


def density_2d(
  xx, yy, density, points, path: str, title: str = "learned density", points_title: str = "test points"
) -> str:
  """A 2-D density on a grid (xx, yy, density: [n, n] each) beside points [N, 2], same limits."""
  fig, axes = _subplots(1, 2, figsize=(10, 4.5))
  axes[0].pcolormesh(xx, yy, density, shading="auto", cmap="viridis")
  axes[0].set_title(title)
  axes[1].scatter(*np.asarray(points).T, s=2, c="k")
  axes[1].set_title(points_title)
  _same_square_limits(axes, (xx.min(), yy.min()), (xx.max(), yy.max()))
  return _save(fig, path)


def samples_2d(samples, points, low, high, path: str, points_title: str = "training points") -> str:
  """2-D samples [S, 2] beside points [N, 2], both inside the box low..high (2-vectors)."""
  fig, axes = _subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
  axes[0].scatter(*np.asarray(samples).T, s=2, c="tab:blue")
  axes[0].set_title(f"{len(samples)} flow samples")
  axes[1].scatter(*np.asarray(points).T, s=2, c="k")
  axes[1].set_title(points_title)
  _same_square_limits(axes, low, high)
  return _save(fig, path)


def shift_curves(curves: Mapping[str, Mapping], path: str, title: str = "") -> str:
  """Accuracy, NLL, Brier and ECE against shift intensity, one line per run (several runs, one figure).

  curves: {run label: a bnnjax.evaluation.shift.curve dict} of one family (its "intensities",
  "intensity" and the four metric lists).
  """
  fig, axes = _subplots(2, 2, figsize=(10, 7), sharex=True)
  for ax, metric in zip(axes.ravel(), ("accuracy", "nll", "brier", "ece")):
    for label, c in curves.items():
      ax.plot(c["intensities"], c[metric], marker="o", markersize=3, label=label)
    ax.set(ylabel=metric, title=metric)
    ax.grid(alpha=0.3)
  some = next(iter(curves.values()))
  for ax in axes[1]:
    ax.set(xlabel=some["intensity"], xticks=some["intensities"])
    ax.tick_params(axis="x", labelsize=7)
  axes[0, 0].legend(loc="best")
  fig.suptitle(title or some["family"])
  return _save(fig, path)


def average_accuracy_curves(curves: Mapping[str, list], path: str, title: str = "") -> str:
  """Average accuracy over the tasks seen so far after each task, one line per method
  (bnnjax.continual.Result.average_accuracy; several sequences on one figure)."""
  fig, ax = _subplots(figsize=(6, 4))
  for label, values in curves.items():
    ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
  ax.set(xlabel="tasks trained", ylabel="average accuracy over the tasks seen", title=title)
  ax.grid(alpha=0.3)
  ax.legend(loc="best")
  return _save(fig, path)


def accuracy_coverage(
  coverages, accuracies: Mapping[str, list], path: str, rule=None, title: str = ""
) -> str:
  """Selective accuracy against coverage, one line per uncertainty score.

  coverages: [G] kept fractions; accuracies: {score: [G] accuracy of the kept}; rule: optional
  {score: (coverage, accuracy)} of a rejection rule, drawn as a point on its score's line.
  """
  fig, ax = _subplots(figsize=(6, 4))
  for name, values in accuracies.items():
    (line,) = ax.plot(coverages, values, marker="o", markersize=3, label=name)
    if rule and name in rule:
      ax.plot(*rule[name], marker="*", markersize=10, color=line.get_color())
  ax.set(xlabel="coverage (fraction kept, surest first)", ylabel="accuracy of the kept", title=title)
  ax.grid(alpha=0.3)
  ax.legend(loc="best")
  return _save(fig, path)
