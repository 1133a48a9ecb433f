r"""Evaluates a trained run: calibration in distribution, OOD detection, the rejection rule.

  python scripts/evaluate.py --workdir=runs/bayes_mnist --ood=fashion_mnist,kmnist \
      --num_samples=32 --compare=runs/mlp_mnist

Writes <workdir>/eval.json and PNG plots (reliability.png, ood_<name>.png) beside it.

--ood takes data set names (bnnjax.data) and also directories holding an MNIST-format
test file, t10k-images-idx3-ubyte.gz (bring your own OOD set); its images must have the
training data's shape. A model with `predict_samples` draws K posterior samples; a
point-estimate model returns one, and is evaluated with K = 1. --compare evaluates a second
run (e.g. the deterministic MLP) on the same OOD sets and puts its AUROCs beside ours.

Regression runs (num_classes = 0) get RMSE, Gaussian NLL and 95% interval coverage.
"""
import json
import os
from typing import Dict, NamedTuple, Optional, Sequence

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import checkpoint, data, metrics, models, plots, predictive, train
from bnnjax.task import DataInfo

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints/ and config.json).")
_OOD = flags.DEFINE_list("ood", [], "OOD data set names and/or directories of IDX t10k files.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 32, "K posterior samples per input.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Data folder; default: the run's config.data.data_dir.")
_COMPARE = flags.DEFINE_string("compare", "", "Another run (e.g. a deterministic MLP) to compare AUROCs with.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the posterior samples.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1000, "Inputs per forward pass (times K samples).")
flags.mark_flags_as_required(["workdir"])

INTERVAL_LEVEL = 0.95
SCORE_DEFINITIONS = {
    "one_minus_max_prob": "1 - max_c p(c|x) of the predictive",
    "softmax_entropy": "entropy of the softmax of a point estimate (K = 1)",
    "predictive_entropy": "H[mean_k p_k]: total uncertainty",
    "mutual_information": "H[mean_k p_k] - mean_k H[p_k]: epistemic uncertainty",
    "class_std": "std over the K samples of the predicted class's probability",
}


class Run(NamedTuple):
  workdir: str
  config: object
  params: object
  module: object
  info: DataInfo
  image_shape: tuple  # one unflattened input, e.g. (28, 28, 1)


def load_run(workdir: str, data_dir: str):
  """(Run, in-distribution test data) of a trained run, the test split as the run evaluated it."""
  params, config, info = checkpoint.restore_run(workdir)
  module = models.get(config.model.name)
  if not hasattr(module, "predict_samples"):
    raise ValueError(f"model {config.model.name!r} has no predict_samples(params, rng, x, K, config, info)")
  d = config.data
  test = data.load(d.name, test_split(d.eval_splits),
                   data_dir=data_dir or d.data_dir or None, binarize=d.binarize, seed=d.get("seed", 0))
  image_shape = tuple(test["x"].shape[1:])
  return Run(workdir, config, jax.tree_util.tree_map(jnp.asarray, params), module, info,
             image_shape), test


def test_split(eval_splits: str) -> str:
  """The split named "test" in config.data.eval_splits ("val=train[90%:],test"), else the last."""
  named = train.parse_eval_splits(eval_splits)
  return named.get("test", list(named.values())[-1]) if named else "test"


def load_ood(spec: str, run: Run, data_dir: str):
  """(name, inputs) of one --ood entry; a shape other than the training data's is an error."""
  if os.path.isdir(spec):
    name = os.path.basename(os.path.normpath(spec))
    x = data.load_idx_folder(spec, "test", binarize=run.config.data.binarize)
  else:
    name = spec
    x = data.load(spec, "test", data_dir=ood_data_dir(data_dir or run.config.data.data_dir),
                  binarize=run.config.data.binarize)["x"]
  if tuple(x.shape[1:]) != run.image_shape:
    raise ValueError(f"OOD set {spec!r} has images of shape {tuple(x.shape[1:])}, but the model "
                     f"was trained on {run.image_shape} ({run.config.data.name})")
  return name, x


def ood_data_dir(data_dir: str) -> Optional[str]:
  """Where to look for a named OOD set: a run trained on .../mnist finds .../fashion-mnist."""
  if not data_dir:
    return None
  path = os.path.normpath(data_dir)
  return os.path.dirname(path) if os.path.basename(path) in data.IMAGE_FOLDERS.values() else path


def make_sampler(run: Run, num_samples: int):
  """(rng, x) -> K sampled outputs of the run's model [K, B, ...], inputs shaped as the data."""
  flat = run.config.data.flatten

  def sample_outputs(rng, x):
    x = x.reshape(len(x), -1) if flat else x
    return run.module.predict_samples(run.params, rng, x, num_samples, run.config, run.info)

  return sample_outputs


def make_classifier(run: Run, num_samples: int):
  """(a jitted (rng, x) -> {"probs", "scores"}, the K the model actually draws)."""
  sample_logits = make_sampler(run, num_samples)

  def outputs(rng, x):
    logits = sample_logits(rng, x)
    pred = predictive.classification_predictive(logits)
    return {"probs": pred.probs, "scores": predictive.uncertainty_scores(pred, logits.shape[0])}

  example = jnp.zeros((1, *run.image_shape), jnp.float32)
  drawn = jax.eval_shape(sample_logits, jax.random.PRNGKey(0), example).shape[0]
  return jax.jit(outputs), drawn


def over_batches(fn, rng, x, batch_size: int):
  """fn(rng_i, batch_i) over fixed-size batches (one compilation), rng_i = fold_in(rng, i)."""
  return predictive.map_batches(lambda i, xb: fn(jax.random.fold_in(rng, i), xb), x, batch_size,
                                pad=True)


def evaluate_regression(run: Run, test, num_samples: int, seed: int, batch_size: int) -> dict:
  if not hasattr(run.module, "noise_std"):
    raise ValueError(f"model {run.config.model.name!r} has no noise_std(params, config) for regression")
  sampler = jax.jit(make_sampler(run, num_samples))
  batch_size = min(batch_size, len(test["x"]))
  means = over_batches(lambda rng, xb: sampler(rng, xb).T, jax.random.PRNGKey(seed), test["x"],
                       batch_size).T  # [K, N]
  sigma = jnp.broadcast_to(run.module.noise_std(run.params, run.config), means.shape)
  pred = predictive.regression_predictive(jnp.asarray(means), sigma)
  lower, upper = predictive.central_interval(pred.mean, pred.std, INTERVAL_LEVEL)
  return {"num_samples": int(means.shape[0]), "interval_level": INTERVAL_LEVEL,
          **metrics.regression_metrics(test["y"], pred.mean, pred.std, lower, upper),
          "mean_aleatoric_std": float(jnp.mean(pred.aleatoric_std)),
          "mean_epistemic_std": float(jnp.mean(pred.epistemic_std))}


def regression_bands(run: Run, num_samples: int, seed: int) -> dict:
  """For a 1-D input: the predictive on a grid beyond the data, as a PNG and as figures.

  Reports the epistemic std inside the training range and outside it (in gaps and beyond
  its ends): a posterior that knows what it has not seen is less sure there.
  """
  d = run.config.data
  train_data = data.load(d.name, d.train_split, data_dir=d.data_dir or None, seed=d.get("seed", 0))
  x_train = np.asarray(train_data["x"])[:, 0]
  lo, hi = x_train.min(), x_train.max()
  x_grid = np.linspace(lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo), 400, dtype=np.float32)
  means = make_sampler(run, num_samples)(jax.random.PRNGKey(seed), jnp.asarray(x_grid[:, None]))
  sigma = jnp.broadcast_to(run.module.noise_std(run.params, run.config), means.shape)
  pred = jax.tree_util.tree_map(np.asarray, predictive.regression_predictive(means, sigma))
  distance = np.abs(x_grid[:, None] - x_train[None]).min(axis=1)  # to the nearest training x
  near, far = distance < 0.05 * (hi - lo), distance > 0.25 * (hi - lo)
  path = plots.regression_bands(x_grid, pred.mean, pred.epistemic_std, pred.std, x_train,
                                np.asarray(train_data["y"]), os.path.join(run.workdir, "regression_bands.png"),
                                title=f"{run.config.model.name} on {d.name} (K={num_samples})")
  return {"plot": path, "epistemic_std_near_data": float(pred.epistemic_std[near].mean()),
          "epistemic_std_far_from_data": float(pred.epistemic_std[far].mean())}


def _json_safe(value):
  """NaN (empty reliability bins) -> null, numpy -> Python."""
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_json_safe(v) for v in np.asarray(value).tolist()]
  if isinstance(value, (float, np.floating)):
    return None if not np.isfinite(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def evaluate_classifier(run: Run, test, ood_sets: Dict[str, np.ndarray], num_samples: int,
                        seed: int, batch_size: int):
  """(report dict, in-distribution scores, {ood name: scores}, reliability) of one run."""
  classifier, drawn = make_classifier(run, num_samples)
  batch_size = min(batch_size, max(len(x) for x in [test["x"], *ood_sets.values()]))
  key = jax.random.PRNGKey(seed)
  out_in = over_batches(classifier, jax.random.fold_in(key, 0), test["x"], batch_size)
  probs, scores_in = out_in["probs"], out_in["scores"]
  rel = metrics.reliability(probs, test["y"])
  report = {"model": run.config.model.name, "num_samples": drawn,
            "in_distribution": metrics.classification_metrics(probs, test["y"]),
            "reliability": {"bin_edges": rel.bin_edges, "confidence": rel.confidence,
                            "accuracy": rel.accuracy, "count": rel.count},
            "ood": {}}
  scores_out = {}
  for j, (name, x) in enumerate(ood_sets.items(), start=1):
    scores_out[name] = over_batches(classifier, jax.random.fold_in(key, j), x, batch_size)["scores"]
    report["ood"][name] = {"num_examples": len(x), **metrics.ood_report(scores_in, scores_out[name])}
  return report, scores_in, scores_out, rel


def side_by_side(ours: dict, baseline: dict) -> dict:
  """{ood set: {"<model>/<score>": AUROC}} for both runs (model names prefixed 'baseline:' if equal)."""
  ours_name, base_name = ours["model"], baseline["model"]
  if base_name == ours_name:
    base_name = f"baseline:{base_name}"
  table = {}
  for ood_name, per_score in ours["ood"].items():
    row = {f"{ours_name}/{s}": v["auroc"] for s, v in per_score.items() if isinstance(v, dict)}
    row.update({f"{base_name}/{s}": v["auroc"]
                for s, v in baseline["ood"].get(ood_name, {}).items() if isinstance(v, dict)})
    table[ood_name] = row
  return table


def evaluate(workdir: str, ood_specs: Sequence[str] = (), num_samples: int = 32, data_dir: str = "",
             compare: Optional[str] = None, seed: int = 0, batch_size: int = 1000) -> dict:
  """Evaluates the run in `workdir`; writes eval.json and plots there; returns what it wrote."""
  predictive.check_num_samples(num_samples)
  run, test = load_run(workdir, data_dir)
  if run.info.num_classes == 0:
    if ood_specs or compare:
      raise ValueError("--ood and --compare apply to classifiers; this run is a regression")
    result = {"workdir": workdir, "model": run.config.model.name, "data": run.config.data.name,
              "regression": evaluate_regression(run, test, num_samples, seed, batch_size)}
    if run.info.input_shape == (1,):
      result["regression"]["bands"] = regression_bands(run, num_samples, seed)
    return write_json(workdir, result)

  ood_sets = dict(load_ood(spec, run, data_dir) for spec in ood_specs)
  report, scores_in, scores_out, rel = evaluate_classifier(run, test, ood_sets, num_samples, seed,
                                                           batch_size)
  result = {"workdir": workdir, "data": run.config.data.name,
            "split": test_split(run.config.data.eval_splits), "num_examples": len(test["y"]),
            **report, "score_definitions": {k: v for k, v in SCORE_DEFINITIONS.items() if k in scores_in},
            "ood_convention": "OOD = positive class; higher score = more OOD; rejection: "
                              "score > 99th percentile of the in-distribution score"}
  result["plots"] = [plots.reliability_diagram(
      rel.bin_edges, rel.confidence, rel.accuracy, rel.count, os.path.join(workdir, "reliability.png"),
      title=f"{run.config.model.name} on {run.config.data.name}: ECE {rel.ece:.4f}")]
  for name, scores in scores_out.items():
    result["plots"].append(plots.score_histograms(
        scores_in, scores, os.path.join(workdir, f"ood_{name}.png"), in_label=run.config.data.name,
        out_label=name, title=f"{run.config.model.name} (K={report['num_samples']}): "
                              f"{run.config.data.name} vs {name}"))

  if compare:
    other, other_test = load_run(compare, data_dir)
    if other.config.data.name != run.config.data.name or other.image_shape != run.image_shape:
      raise ValueError(f"--compare run {compare} was trained on {other.config.data.name}, "
                       f"this one on {run.config.data.name}")
    other_report, *_ = evaluate_classifier(other, other_test, ood_sets, num_samples, seed, batch_size)
    result["compare"] = {"workdir": compare, **{k: other_report[k] for k in
                                                ("model", "num_samples", "in_distribution", "ood")}}
    result["auroc_side_by_side"] = side_by_side(report, other_report)
  return write_json(workdir, result)


def write_json(workdir: str, result: dict) -> dict:
  result = _json_safe(result)
  with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  return result


def summary(result: dict) -> str:
  if "regression" in result:
    r = result["regression"]
    return f"RMSE {r['rmse']:.4f}  NLL {r['nll']:.4f}  coverage@{r['interval_level']} {r['coverage']:.4f}"
  m = result["in_distribution"]
  lines = [f"{result['model']} (K={result['num_samples']}) on {result['data']}: accuracy "
           f"{m['accuracy']:.4f}  NLL {m['nll']:.4f}  Brier {m['brier']:.4f}  ECE {m['ece']:.4f}"]
  for name, per_score in result["ood"].items():
    aurocs = "  ".join(f"{s} {v['auroc']:.4f}" for s, v in per_score.items() if isinstance(v, dict))
    lines.append(f"  OOD {name}: AUROC {aurocs}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    result = evaluate(_WORKDIR.value, _OOD.value, _NUM_SAMPLES.value, _DATA_DIR.value,
                      _COMPARE.value or None, _SEED.value, _BATCH_SIZE.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  print(summary(result))
  print(f"wrote {os.path.join(_WORKDIR.value, 'eval.json')}")


if __name__ == "__main__":
  app.run(main)
