"""A trained run, as a notebook or a script uses it: `bnnjax.load(workdir)` or `bnnjax.fit(...)`.

    run = bnnjax.load("runs/bayes")
    pred = run.predict(x, num_samples=32)        # probs, std, entropies, mutual information
    report = run.evaluate(ood=["fashion_mnist"])  # what eval.json holds, as a dict
    images = run.sample(16)                       # generative and density models only

Every method uses the capabilities the model's Task declares (`Task.predictor`,
`Task.generative`, `Task.density`); asking for one the model lacks is a one-line ValueError.
"""

import dataclasses
import os
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bnnjax import checkpoint, data, predictive as predictive_lib, train
from bnnjax.config import resolve
from bnnjax.datasets import tabular
from bnnjax.evaluation import (
  classification,
  conformal,
  density,
  generative,
  recalibration,
  regression,
  report,
)
from bnnjax.evaluation import selective, shift as shift_lib
from bnnjax.evaluation import predictive as batched
from bnnjax.task import CLASSIFIER, DataInfo, Task, capabilities

Rng = Union[int, jax.Array]


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained model: its resolved config, restored params (or posterior), data and Task.

  Attributes:
    workdir: the run's directory (checkpoints/, config.json, eval.json).
    config: the resolved config it was trained with.
    params: the restored pytree the loop trained (plain params or a posterior).
    info: the DataInfo the model was built for.
    task: the model's Task; its optional fields are the model's capabilities.
    step: the checkpoint step the params come from (None: not from a checkpoint).
  """

  workdir: str
  config: ml_collections.ConfigDict
  params: Any
  info: DataInfo
  task: Task
  step: Optional[int] = None

  @property
  def capabilities(self) -> tuple:
    """What the model can do: "classifier" or "regressor", "generative", "density"."""
    return capabilities(self.task)

  def _require(self, present: bool, action: str, needs: str) -> None:
    """A one-line ValueError if the model lacks what `action` needs."""
    if not present:
      raise ValueError(
        f"{action} needs {needs}; {self.config.model.name!r} in {self.workdir} "
        f"is {' and '.join(self.capabilities) or 'none of these'}"
      )

  def inputs(self, x) -> jax.Array:
    """x as the model takes it: [B, *info.input_shape] (images flattened if the run flattened them).

    A one-line ValueError names the expected shape otherwise.
    """
    x = np.asarray(x, np.float32)
    shape = tuple(self.info.input_shape)
    if (
      x.ndim >= 1
      and x.shape[1:] != shape
      and self.config.data.flatten
      and (x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(shape)))
    ):
      x = x.reshape(len(x), *shape)
    if x.ndim < 1 or x.shape[1:] != shape or len(x) == 0:
      raise ValueError(
        f"inputs of shape {x.shape}, but {self.config.model.name!r} in "
        f"{self.workdir} takes [B, {', '.join(map(str, shape))}] "
        f"({self.config.data.name}), B >= 1"
      )
    return x

  @property
  def preprocessing(self) -> Optional[tabular.Preprocessing]:
    """A csv / npz run's training statistics, input columns and class names (None for other data)."""
    return tabular.from_json(self.info.preprocessing)

  def predict(self, x, num_samples: int = 32, rng: Rng = 0, batch_size: int = 1000, raw: bool = False):
    """The K-sample predictive of inputs x [B, *input_shape].

    raw=True (csv and npz runs): x are rows in the file's own units (a CSV's input columns in
    the order `preprocessing.features` lists), standardised with the run's stored training
    statistics; a regressor's predictive is returned in the target's own units.
    Returns (numpy arrays, leading axis B):
      classifier: ClassificationPredictive(probs [B, C], std [B, C], predictive_entropy,
        expected_entropy, mutual_information [B]); class i is preprocessing.classes[i] for a table;
      regressor: RegressionPredictive(mean, std, aleatoric_std, epistemic_std [B]).
    A point estimate draws K = 1 whatever num_samples says.
    """
    self._require(self.task.predictor is not None, "predict", "a classifier or regressor")
    predictive_lib.check_num_samples(num_samples)
    prep = self.preprocessing
    if raw:
      if prep is None:
        raise ValueError(
          f"predict(raw=True): {self.workdir} ({self.config.data.name}) stores no preprocessing"
        )
      x = prep.inputs(x)
    pred = batched.predict(
      self.task.predictor, self.params, self.inputs(x), num_samples, _key(rng), batch_size
    )
    return prep.outputs(pred) if raw else pred

  def test_data(self, data_dir: Optional[str] = None) -> data.Data:
    """The test split exactly as the loop evaluated it (same name, data seed, preprocessing)."""
    return data.load_split(self.config.data, data.test_split(self.config.data), data_dir)

  def validation_data(self, data_dir: Optional[str] = None) -> data.Data:
    """config.data.validation_split: what anything fitted after training is fitted on."""
    return data.load_split(self.config.data, data.validation_split(self.config.data), data_dir)

  def sample(self, num: int, rng: Rng = 0, labels=None) -> np.ndarray:
    """`num` draws [num, *input_shape] of a generative model (Bernoulli means) or a density."""
    self._require(
      self.task.generative is not None or self.task.density is not None,
      "sample",
      "a generative or density model",
    )
    if self.task.generative is not None:
      return np.asarray(self.task.generative.sample(self.params, _key(rng), num, labels))
    return np.asarray(self.task.density.sample(self.params, _key(rng), num))

  def log_prob(self, x, k: int = 1000, rng: Rng = 0, labels=None) -> np.ndarray:
    """[B] log p(x): exact for a density (of a dequantised x for discrete data), the IWAE_k
    lower bound for a generative model."""
    self._require(
      self.task.generative is not None or self.task.density is not None,
      "log_prob",
      "a generative or density model",
    )
    x = jnp.asarray(self.inputs(x))
    if self.task.generative is not None:
      return np.asarray(self.task.generative.log_likelihood(self.params, _key(rng), x, labels, k=k))
    return np.asarray(self.task.density.log_prob(self.params, _key(rng), x))

  def evaluate(
    self,
    ood: Sequence[str] = (),
    num_samples: int = 32,
    seed: int = 0,
    batch_size: int = 1000,
    data_dir: Optional[str] = None,
    compare: Optional["Run"] = None,
    write: bool = False,
    shift: Sequence[str] = (),
    recalibrate: bool = False,
    conformal_alphas: Sequence[float] = (),
    **generative_options,
  ) -> dict:
    """Every figure the model's capabilities allow, on its test split, as a plain dict.

    Args:
      ood: classifiers only: data set names (bnnjax.data) or folders of MNIST-format
        t10k IDX files, each scored against the test split.
      num_samples: K posterior samples per input (predictive models).
      batch_size: inputs per forward pass of a predictive or a density (a generative model's
        IWAE keeps its own, smaller batch: generative_options batch_size is not reachable here).
      seed: of the posterior samples (and of a generative model's estimates).
      compare: classifiers only: a baseline run, evaluated on the same OOD sets and shifts.
      write: also write eval.json and the PNGs into the workdir.
      shift: classifiers only: shift families ("rotate", "corrupt:<name>"; see
        bnnjax.evaluation.shift), each a curve of accuracy, NLL, Brier, ECE and AURC per intensity.
      recalibrate: classifiers only: temperature scaling fitted on config.data.validation_split,
        its test figures before and after (bnnjax.evaluation.recalibration).
      conformal_alphas: split conformal sets (classifiers: LAC and APS) or intervals (regressors:
        mean ± q̂ · std) calibrated on the validation split at each miscoverage alpha; test
        coverage and mean set size or width, and their spread over 20 random calibration draws.
      generative_options: passed to bnnjax.evaluation.generative / density (e.g. k=1000).
    Returns:
      The report (JSON-safe): see bnnjax.evaluation.
    """
    predictive_lib.check_num_samples(num_samples)
    is_classifier = self.task.predictor is not None and self.task.predictor.kind == CLASSIFIER
    if (ood or compare or shift or recalibrate) and not is_classifier:
      raise ValueError(
        f"ood and compare apply to classifiers (as do shift and recalibrate); "
        f"{self.config.model.name!r} is {' and '.join(self.capabilities)}"
      )
    if conformal_alphas and self.task.predictor is None:
      raise ValueError(
        f"conformal_alphas apply to classifiers and regressors; {self.config.model.name!r} is "
        f"{' and '.join(self.capabilities)}"
      )
    shift = shift_lib.check_families(shift)
    conformal_alphas = tuple(conformal.check_alpha(a) for a in conformal_alphas)
    if recalibrate or conformal_alphas:
      data.validation_split(self.config.data)  # a one-line error now, not after the test split
    ood_sets = {
      os.path.basename(os.path.normpath(s)) if os.path.isdir(s) else s: data.load_ood(
        s, self.config.data, self.info.input_shape, data_dir
      )
      for s in ood
    }
    test = self.test_data(data_dir)
    out = {
      "workdir": self.workdir,
      "checkpoint_step": self.step,
      "model": self.config.model.name,
      "data": self.config.data.name,
      "split": data.test_split(self.config.data),
      "num_examples": len(test["x"]),
      "capabilities": list(self.capabilities),
    }
    plots_dir = self.workdir if write else None
    if is_classifier:
      val = self.validation_data(data_dir) if recalibrate or conformal_alphas else None
      out.update(
        self._evaluate_classifier(
          test, ood_sets, num_samples, seed, batch_size, plots_dir, shift, val, recalibrate, conformal_alphas
        )
      )
      if compare is not None:
        out.update(self._compare(compare, ood_sets, num_samples, seed, batch_size, data_dir, out, shift))
      if plots_dir and shift:
        out["shift_plots"] = self._shift_plots(plots_dir, out)
    elif self.task.predictor is not None:
      val = self.validation_data(data_dir) if conformal_alphas else None
      out["regression"] = self._evaluate_regression(
        test, num_samples, seed, batch_size, plots_dir, data_dir, val, conformal_alphas
      )
    if self.task.generative is not None:
      out["generative"] = generative.evaluate(
        self.task.generative,
        self.params,
        test,
        seed=seed,
        out_dir=plots_dir,
        info=self.info,
        **generative_options,
      )
    if self.task.density is not None:
      train_split = data.load_split(self.config.data, self.config.data.train_split, data_dir)
      out["density"] = density.evaluate(
        self.task.density,
        self.params,
        train_split,
        test,
        seed=seed,
        out_dir=plots_dir,
        info=self.info,
        batch_size=batch_size,
        **generative_options,
      )
    out = report.json_safe(out)
    if write:
      report.write_json(self.workdir, out)
    return out

  def _classifier_outputs(self, x, num_samples, rng, batch_size):
    x = self.inputs(x)  # checked and reshaped once, for both calls
    pred = batched.predict(self.task.predictor, self.params, x, num_samples, rng, batch_size)
    drawn = batched.drawn_samples(self.task.predictor, self.params, x[:1], num_samples)
    return pred, classification.scores(pred, drawn), drawn

  def _evaluate_classifier(
    self,
    test,
    ood_sets,
    num_samples,
    seed,
    batch_size,
    plots_dir,
    shift=(),
    val=None,
    recalibrate=False,
    alphas=(),
  ) -> dict:
    key = jax.random.PRNGKey(seed)
    pred, scores_in, drawn = self._classifier_outputs(
      test["x"], num_samples, jax.random.fold_in(key, 0), batch_size
    )
    out = {"num_samples": drawn, **classification.in_distribution(pred, test["y"]), "ood": {}}
    # The 99th-percentile rejection rule of each score, one point of its risk-coverage curve.
    thresholds = {k: float(np.percentile(v, 99.0)) for k, v in scores_in.items()}
    out["selective"] = selective.report(pred.probs, test["y"], scores_in, thresholds)
    if shift:
      out["shift"] = {}
    for j, family in enumerate(shift):
      shift_key = jax.random.fold_in(key, 10_000 + j)

      def predict(x, shift_key=shift_key):
        shifted_pred, shifted_scores, _ = self._classifier_outputs(x, num_samples, shift_key, batch_size)
        return shifted_pred.probs, shifted_scores

      out["shift"][family] = shift_lib.curve(predict, test["x"], test["y"], family, seed, thresholds)
    if val is not None:  # fitted on the validation split, judged on the test split
      val_key = jax.random.fold_in(key, 20_000)
      val_probs = batched.predict(
        self.task.predictor, self.params, self.inputs(val["x"]), num_samples, val_key, batch_size
      ).probs
      out["validation_split"] = data.validation_split(self.config.data)
      if recalibrate:
        out["temperature_scaling"] = recalibration.report(
          val_probs, val["y"], pred.probs, test["y"], seed=seed
        )
      out["conformal"] = [
        self._conformal(val_probs, val["y"], pred.probs, test["y"], alpha, method, seed)
        for alpha in alphas
        for method in conformal.METHODS
      ]
    scores_out = {}
    for j, (name, x) in enumerate(ood_sets.items(), start=1):
      _, scores_out[name], _ = self._classifier_outputs(
        x, num_samples, jax.random.fold_in(key, j), batch_size
      )
      out["ood"][name] = classification.ood(scores_in, scores_out[name])
    out["score_definitions"] = {k: v for k, v in classification.SCORE_DEFINITIONS.items() if k in scores_in}
    out["ood_convention"] = classification.OOD_CONVENTION
    if plots_dir:
      out["plots"] = self._classifier_plots(plots_dir, out, scores_in, scores_out)
    return out

  def _classifier_plots(self, folder, out, scores_in, scores_out) -> list:
    from bnnjax import plots  # pylint: disable=import-outside-toplevel  (matplotlib: only to draw)

    name, data_name, rel = self.config.model.name, self.config.data.name, out["reliability"]
    paths = [
      plots.reliability_diagram(
        rel["bin_edges"],
        rel["confidence"],
        rel["accuracy"],
        rel["count"],
        os.path.join(folder, "reliability.png"),
        title=f"{name} on {data_name}: ECE {out['in_distribution']['ece']:.4f}",
      )
    ]
    sel = out["selective"]
    scores = [k for k in scores_in if k in sel]
    paths.append(
      plots.accuracy_coverage(
        sel["coverage_grid"],
        {k: sel[k]["accuracy_at_coverage"] for k in scores},
        os.path.join(folder, "selective.png"),
        {k: (sel[k]["rejection_rule"]["coverage"], sel[k]["rejection_rule"]["accuracy"]) for k in scores},
        title=f"{name} on {data_name}: selective prediction (star: 99th-percentile rule)",
      )
    )
    for ood_name, scores in scores_out.items():
      paths.append(
        plots.score_histograms(
          scores_in,
          scores,
          os.path.join(folder, f"ood_{ood_name}.png"),
          in_label=data_name,
          out_label=ood_name,
          title=f"{name} (K={out['num_samples']}): {data_name} vs {ood_name}",
        )
      )
    return paths

  @staticmethod
  def _conformal(val_probs, val_labels, test_probs, test_labels, alpha, method, seed) -> dict:
    """Sets calibrated on the whole validation split, scored on the test split; and the spread over
    20 random halves of the validation split: scored on the test split, and scored on the other half."""
    out = conformal.evaluate(val_probs, val_labels, test_probs, test_labels, alpha, method, seed)
    half = len(val_labels) // 2
    if half >= 1.0 / alpha:
      for name, test_arrays in (
        ("splits_to_test", (test_probs, test_labels)),
        ("splits_within_validation", ()),
      ):
        repeated = conformal.repeated_splits(
          val_probs, val_labels, alpha, method, 20, half, *test_arrays, seed=seed
        )
        out[name] = {
          k: repeated[k] for k in ("num_splits", "calibration_examples", "coverage", "mean_set_size")
        }
    return out

  @staticmethod
  def _regression_conformal(calibration, test, alpha, seed) -> dict:
    """Intervals calibrated on the whole validation split, scored on the test split; and the
    spread over 20 random calibration halves of the validation split scored on the test split,
    and over 20 random halves of validation ∪ test (small tables: every held-out row counts)."""
    out = conformal.regression_evaluate(calibration, test, alpha)
    pooled = tuple(
      np.concatenate([np.asarray(a).ravel(), np.asarray(b).ravel()]) for a, b in zip(calibration, test)
    )
    for name, pool, test_arrays in (
      ("splits_to_test", calibration, test),
      ("splits_within_held_out", pooled, None),
    ):
      half = len(pool[2]) // 2
      if half >= 1.0 / alpha:
        repeated = conformal.regression_repeated_splits(pool, alpha, 20, half, test_arrays, seed)
        out[name] = {k: repeated[k] for k in ("num_splits", "calibration_examples", "coverage", "mean_width")}
    return out

  def _shift_plots(self, folder, out) -> list:
    from bnnjax import plots  # pylint: disable=import-outside-toplevel

    paths = []
    for family, ours in out["shift"].items():
      curves = {f"{self.config.model.name} ({self.workdir})": ours}
      if "compare" in out and family in out["compare"].get("shift", {}):
        curves[f"{out['compare']['model']} ({out['compare']['workdir']})"] = out["compare"]["shift"][family]
      name = family.replace(":", "_")
      paths.append(plots.shift_curves(curves, os.path.join(folder, f"shift_{name}.png"), f"{family}"))
    return paths

  def _compare(self, other: "Run", ood_sets, num_samples, seed, batch_size, data_dir, ours, shift=()) -> dict:
    if other.config.data.name != self.config.data.name or other.info.input_shape != self.info.input_shape:
      raise ValueError(
        f"compare: {other.workdir} was trained on {other.config.data.name}, "
        f"{self.workdir} on {self.config.data.name}"
      )
    other._require(other.task.predictor is not None, "compare", "a classifier")  # pylint: disable=protected-access
    theirs = {
      "model": other.config.model.name,
      **other._evaluate_classifier(  # pylint: disable=protected-access
        other.test_data(data_dir), ood_sets, num_samples, seed, batch_size, None, shift
      ),
    }
    return {
      "compare": {
        "workdir": other.workdir,
        **{k: theirs[k] for k in ("model", "num_samples", "in_distribution", "ood", "shift") if k in theirs},
      },
      "auroc_side_by_side": classification.side_by_side(ours, theirs),
    }

  def _evaluate_regression(
    self, test, num_samples, seed, batch_size, plots_dir, data_dir, val=None, alphas=()
  ) -> dict:
    key, x = jax.random.PRNGKey(seed), self.inputs(test["x"])
    pred = batched.predict(self.task.predictor, self.params, x, num_samples, key, batch_size)
    drawn = batched.drawn_samples(self.task.predictor, self.params, x[:1], num_samples)
    out = {"num_samples": drawn, **regression.report(pred, test["y"])}
    if val is not None:  # intervals calibrated on the validation split, judged on the test split
      val_pred = batched.predict(
        self.task.predictor,
        self.params,
        self.inputs(val["x"]),
        num_samples,
        jax.random.fold_in(key, 2),
        batch_size,
      )
      out["validation_split"] = data.validation_split(self.config.data)
      calibration = (val_pred.mean, val_pred.std, np.asarray(val["y"]).reshape(-1))
      held_out = (pred.mean, pred.std, np.asarray(test["y"]).reshape(-1))
      out["conformal"] = [self._regression_conformal(calibration, held_out, alpha, seed) for alpha in alphas]
    if self.preprocessing is not None:  # a csv / npz target: also in its own units, as the UCI table
      out["original_units"] = regression.original_units(out["rmse"], out["nll"], self.preprocessing.y_std)
    if self.info.input_shape == (1,):  # a 1-D input: the predictive beyond the data
      train_split = data.load_split(self.config.data, self.config.data.train_split, data_dir)
      x_grid = regression.input_grid(train_split["x"])
      bands = batched.predict(
        self.task.predictor, self.params, x_grid[:, None], num_samples, jax.random.fold_in(key, 1), batch_size
      )
      out["bands"] = regression.epistemic_near_and_far(x_grid, bands.epistemic_std, train_split["x"])
      if plots_dir:
        from bnnjax import plots  # pylint: disable=import-outside-toplevel

        data_x, data_y = np.asarray(train_split["x"])[:, 0], np.asarray(train_split["y"])
        title = f"{self.config.model.name} on {self.config.data.name} (K={drawn})"
        out["bands"]["plot"] = plots.regression_bands(
          x_grid,
          bands.mean,
          bands.epistemic_std,
          bands.std,
          data_x,
          data_y,
          os.path.join(plots_dir, "regression_bands.png"),
          title=title,
        )
        out["bands"]["split_plot"] = plots.uncertainty_split(
          x_grid,
          bands.mean,
          bands.aleatoric_std,
          bands.epistemic_std,
          data_x,
          data_y,
          os.path.join(plots_dir, "uncertainty_split.png"),
          title=title,
        )
    return out


def _key(rng: Rng) -> jax.Array:
  return jax.random.PRNGKey(rng) if isinstance(rng, (int, np.integer)) else rng


def load(workdir: str, step: Optional[int] = None) -> Run:
  """The run in `workdir`: its newest readable checkpoint (or `step`), config and Task.

  One-line errors (checkpoint.CheckpointError, a ValueError) for a workdir with no
  checkpoint, or a checkpoint that the config's model cannot have written.
  """
  restored = checkpoint.restore_run(workdir, step)
  config = resolve(restored.config)
  # DataInfo.binary follows from the config (checkpoints older than the field lack it).
  info = restored.info._replace(binary=config.data.binarize == "static")
  task = train.build_task(config, info)
  expected = jax.eval_shape(
    task.init,
    jax.random.PRNGKey(0),
    {
      "x": jnp.zeros((1, *info.input_shape), jnp.float32),
      "y": jnp.zeros((1,), jnp.int32 if info.num_classes else jnp.float32),
    },
  )
  checkpoint.check_compatible(restored.params, expected, os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
  params = jax.tree_util.tree_map(jnp.asarray, restored.params)
  return Run(workdir, config, params, info, task, restored.step)


def fit(config: ml_collections.ConfigDict, workdir: str, stop_after: Optional[int] = None) -> Run:
  """Trains `config` in `workdir` (resuming its latest checkpoint) and returns the Run.

  See bnnjax.train.fit; the Run is what `load(workdir)` gives afterwards.
  """
  train.fit(config, workdir, stop_after)
  return load(workdir)
