"""The UCI regression protocol: choosing on validation rows, scoring in original units, the table.

The benchmark (Hernández-Lobato & Adams 2015; Gal & Ghahramani 2016) as bnnjax runs it:

1. Data: split i of a UCI folder (bnnjax.datasets.uci); inputs and target standardised with
   the statistics of the rows trained on only (bnnjax.data does it for config.data.name="uci").
2. Hyper-parameters are chosen on an 80/20 split of split i's training rows only: runs on
   "train[:80%]" scored on "train[80%:]" (config.data.validation_split), the test rows never
   seen. A method with a fixed noise std (MC dropout, an ensemble, a point estimate) has it
   chosen there too, after training: with Adam the trained network does not depend on it
   (it only scales the loss), so each validation run's sample means [K, B] are scored under
   every std of `NOISE_GRID` (`best_noise_std`) and the best one is kept. A method that learns
   its noise (mean-field VI, learn_noise=True) keeps its own. A Laplace posterior fitted to a
   point run (config module's LAPLACE) depends on the noise std: it is fitted under each std of
   `LAPLACE_NOISE_GRID` and the best kept, λ tuned by the marginal likelihood each time.
3. The chosen settings are trained on all of split i's training rows and scored on its test
   rows (`test_score`, under the chosen noise std: the network is trained once under the
   config's fixed one): RMSE and the per-point log-likelihood of the K-sample predictive, in
   the target's own units (`bnnjax.evaluation.regression.original_units`:
   log p(y) = log p(z) - log std_y).
4. Over the splits: mean ± standard error (std / sqrt(n), ddof = 1), the median
   log-likelihood, and the wall time (`summarise`), beside `PUBLISHED`.
"""

import math
from typing import Dict, Mapping, Optional, Sequence

import haiku as hk
import jax
import numpy as np
from scipy.special import logsumexp

from bnnjax import data, models
from bnnjax.evaluation.regression import original_units
from bnnjax.methods import hmc

# Candidate noise stds on the standardised scale (the target's training std is 1).
NOISE_GRID = tuple(float(s) for s in np.geomspace(0.01, 2.0, 81))
# For a Laplace posterior, where each std is a fit of its own: every fourth of them.
LAPLACE_NOISE_GRID = NOISE_GRID[::4]

# MC dropout, grid search, 10x epochs: the 2018 re-run in the authors' repository
# (github.com/yaringal/DropoutUncertaintyExps, readme); (mean, standard error) over 20 splits.
PUBLISHED_SOURCE = "MC dropout, 2018 grid-search re-run (yaringal/DropoutUncertaintyExps)"
PUBLISHED = {
  "concrete": {"rmse": (4.82, 0.16), "log_likelihood": (-2.93, 0.02)},
  "energy": {"rmse": (0.54, 0.06), "log_likelihood": (-1.21, 0.01)},
  "yacht": {"rmse": (0.67, 0.05), "log_likelihood": (-1.25, 0.01)},
  "wine-quality-red": {"rmse": (0.62, 0.01), "log_likelihood": (-0.93, 0.01)},
}


def mixture_log_likelihood(means, noise_std, y) -> np.ndarray:
  """[B] log (1/K) Σ_k N(y_b; means[k, b], noise_std²): the K-sample predictive of each point.

  Args:
    means: [K, B] sampled predictive means; noise_std: a scalar or [K, B]; y: [B] targets.
  """
  means = np.asarray(means, np.float64)
  std = np.broadcast_to(np.asarray(noise_std, np.float64), means.shape)
  y = np.asarray(y, np.float64).reshape(1, -1)
  log_p = -0.5 * ((y - means) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
  return logsumexp(log_p, axis=0) - np.log(len(means))


def best_noise_std(means, y, grid: Sequence[float] = NOISE_GRID) -> Dict[str, float]:
  """The std of `grid` under which the K-sample predictive of `means` [K, B] scores `y` [B] best.

  Returns:
    {"noise_std": the chosen std, "log_likelihood": its mean per-point log-likelihood}.
  """
  scores = [float(mixture_log_likelihood(means, s, y).mean()) for s in grid]
  best = int(np.argmax(scores))
  return {"noise_std": float(grid[best]), "log_likelihood": scores[best]}


def sample_means(run, x, num_samples: int, seed: int = 0):
  """K predictive draws of a regressor Run at inputs x: (means [K, B], noise stds [K, B]) numpy."""
  means, stds = run.task.predictor.sample(run.params, jax.random.PRNGKey(seed), run.inputs(x), num_samples)
  return np.asarray(means), np.asarray(stds)


def laplace_means(run, structure: str, noise_std: float, x, num_samples: int, seed: int = 0):
  """K draws (means [K, B], noise stds [K, B]) at x of the Laplace posterior of a point run,
  fitted on the run's training rows under noise_std (its GGN is scaled by 1 / noise_std²) with
  λ tuned by the marginal likelihood, through the linearised (GLM) predictive."""
  from bnnjax.methods import laplace  # pylint: disable=import-outside-toplevel

  fitted = laplace.fit_run(run, structure, None, noise_std=noise_std, predictive="glm")
  return sample_means(fitted, x, num_samples, seed)


def validation_score(
  run, select_noise: bool, num_samples: int, seed: int = 0, laplace: str = ""
) -> Dict[str, float]:
  """How a validation run (trained on "train[:80%]") scores on its validation rows.

  Args:
    run: a bnnjax.run.Run of a regressor whose config.data.validation_split is set.
    select_noise: choose the noise std on these rows (`best_noise_std`); False keeps the
      predictive's own stds (a learned noise).
    num_samples: K draws of the predictive.
    laplace: "" (the run's own predictive), or a Laplace structure ("last_layer", "diagonal",
      "kfac") fitted on the run's training rows under each std of LAPLACE_NOISE_GRID, the best
      one kept: the noise std shapes the posterior, so it is chosen with it.
  Returns:
    {"log_likelihood": mean per-point validation log-likelihood (standardised scale),
     "noise_std": the chosen std (select_noise or laplace only)}.
  """
  val = run.validation_data()
  if laplace:
    draws = [laplace_means(run, laplace, s, val["x"], num_samples, seed) for s in LAPLACE_NOISE_GRID]
    scores = [float(mixture_log_likelihood(means, stds, val["y"]).mean()) for means, stds in draws]
    best = int(np.nanargmax(np.where(np.isfinite(scores), scores, np.nan)))
    return {"noise_std": LAPLACE_NOISE_GRID[best], "log_likelihood": scores[best]}
  means, stds = sample_means(run, val["x"], num_samples, seed)
  if select_noise:
    return best_noise_std(means, val["y"])
  return {"log_likelihood": float(mixture_log_likelihood(means, stds, val["y"]).mean())}


def test_score(
  run, noise_std: Optional[float], num_samples: int, seed: int = 0, laplace: str = ""
) -> Dict[str, float]:
  """RMSE of the predictive mean and mean per-point NLL of the K-sample predictive on the run's
  test rows (standardised scale), under `noise_std` (None: the predictive's own stds); with
  `laplace`, of that Laplace posterior fitted under noise_std (see `validation_score`)."""
  test = run.test_data()
  if laplace:
    means, stds = laplace_means(run, laplace, noise_std, test["x"], num_samples, seed)
    noise_std = None  # the Laplace predictive's stds are noise_std already
  else:
    means, stds = sample_means(run, test["x"], num_samples, seed)
  y = np.asarray(test["y"], np.float64)
  ll = mixture_log_likelihood(means, stds if noise_std is None else noise_std, y)
  return {"rmse": float(np.sqrt(np.mean((means.mean(0) - y) ** 2))), "nll": float(-ll.mean())}


NUTS_MODEL = "point/mlp"  # the network whose weights (and noise std) NUTS samples


def nuts_score(config, nuts: Mapping, seed: int = 0) -> Dict[str, float]:
  """HMC's reference posterior on one split: NUTS over the config's network weights and its
  noise std, on all of the split's training rows, scored on its test rows (standardised scale).

  Nothing is chosen on validation rows: the noise std is sampled with the weights, its
  precision under a Gamma prior (bnnjax.methods.hmc.network_log_posterior).

  Args:
    config: a UCI config (config.data.split_index the split; config.model the network).
    nuts: keyword arguments of `hmc.network_posterior` (num_chains, num_samples, num_warmup,
      noise_prior, prior_scale, map_steps, max_num_doublings).
  Returns:
    {"rmse", "nll"} as `test_score`'s, the predictive mixing every draw of every chain, and the
    chains' diagnostics: "noise_std" (posterior mean, standardised), "rhat_noise" (split-R-hat
    of log σ), "divergences", "acceptance" (mean).
  """
  if config.model.name != NUTS_MODEL:
    raise ValueError(
      f"NUTS samples the weights of the {NUTS_MODEL} network; config.model.name is {config.model.name!r}"
    )
  train, test = data.load_split(config.data, "train"), data.load_split(config.data, "test")
  info = data.data_info(config.data, train)
  forward = models.NETWORKS["mlp"].build(config.model, info, 1)
  result = hmc.network_posterior(forward, info, train["x"], train["y"], jax.random.PRNGKey(seed), **nuts)
  params, log_std = hmc.stack_chains(result.samples)
  apply = hk.without_apply_rng(hk.transform(forward)).apply
  means = np.asarray(jax.vmap(lambda p: apply(p, test["x"])[:, 0])(params))
  stds = np.exp(np.asarray(log_std, np.float64))
  y = np.asarray(test["y"], np.float64).reshape(-1)
  ll = mixture_log_likelihood(means, stds[:, None], y)
  return {
    "rmse": float(np.sqrt(np.mean((means.mean(0) - y) ** 2))),
    "nll": float(-ll.mean()),
    "noise_std": float(stds.mean()),
    "rhat_noise": float(result.rhat[1]),
    "divergences": int(np.sum(result.divergences)),
    "acceptance": float(np.mean(result.acceptance)),
  }


def choose(scored: Sequence[dict]) -> dict:
  """The entry of `scored` (each with "log_likelihood" and "overrides") with the best validation
  log-likelihood; ties go to the first. Non-finite scores never win."""
  finite = [s for s in scored if math.isfinite(s["log_likelihood"])]
  if not finite:
    raise ValueError("no validation run has a finite log-likelihood")
  return max(finite, key=lambda s: s["log_likelihood"])


def split_result(score: Dict[str, float], target_std: float) -> Dict[str, float]:
  """One split's test RMSE and log-likelihood in original units, from `test_score`'s
  standardised "rmse" and "nll"."""
  return original_units(score["rmse"], score["nll"], target_std)


def mean_se(values: Sequence[float]) -> Dict[str, Optional[float]]:
  """{"mean", "se", "median", "n"}: se = sample std (ddof=1) / sqrt(n), None for one value."""
  values = np.asarray(values, np.float64)
  se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
  return {"mean": float(values.mean()), "se": se, "median": float(np.median(values)), "n": len(values)}


def summarise(rows: Sequence[dict]) -> dict:
  """Mean ± standard error over the splits of each row's "rmse" and "log_likelihood", the
  median log-likelihood, and the summed "elapsed_s" (the wall time of every run of every split)."""
  if not rows:
    raise ValueError("no finished split to summarise")
  return {
    "n": len(rows),
    "rmse": mean_se([r["rmse"] for r in rows]),
    "log_likelihood": mean_se([r["log_likelihood"] for r in rows]),
    "elapsed_s": float(sum(r.get("elapsed_s", 0.0) for r in rows)),
  }


def _pm(stats: Optional[dict], digits: int = 2) -> str:
  if not stats:
    return "-"
  if stats.get("se") is None:
    return f"{stats['mean']:.{digits}f}"
  return f"{stats['mean']:.{digits}f} ± {stats['se']:.{digits}f}"


def markdown(entries: Sequence[dict]) -> str:
  """A Markdown table: one row per {"data", "method", "summary", "command"} entry, published beside."""
  lines = [
    "| data set | method | splits | test RMSE | test LL | median LL | wall time (s) "
    "| published RMSE | published LL |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for e in entries:
    s, pub = e["summary"], PUBLISHED.get(e["data"], {})
    published = [
      f"{pub[k][0]:.2f} ± {pub[k][1]:.2f}" if k in pub else "-" for k in ("rmse", "log_likelihood")
    ]
    lines.append(
      f"| {e['data']} | {e['method']} | {s['n']} | {_pm(s['rmse'])} | {_pm(s['log_likelihood'])} | "
      f"{s['log_likelihood']['median']:.2f} | {s['elapsed_s']:.0f} | {published[0]} | {published[1]} |"
    )
  return "\n".join(lines) + f"\n\nPublished: {PUBLISHED_SOURCE}. Mean ± standard error over the splits.\n"
