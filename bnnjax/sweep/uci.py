"""The UCI benchmark as two sweeps: validation runs choose, test runs score (see bnnjax.evaluation.uci).

    <workdir>/validation/<run>/    split i's training rows 80/20: one run per get_grid() point
    <workdir>/validation/chosen.json   per split: the settings chosen and their validation scores
    <workdir>/test/<run>/          split i with its chosen settings, trained on all its training rows
    <workdir>/uci.json, uci.md     the table: test RMSE and log-likelihood over the splits (original units)

Both stages are ordinary sweeps (bnnjax.sweep: parallel processes, job-array tasks, re-runs
that skip finished runs); the test stage needs every split's choice first.
"""

import dataclasses
import json
import os
import time
from typing import Dict, List, Mapping, Optional, Sequence

from bnnjax import config as config_lib, data, run as run_lib
from bnnjax.datasets import uci as uci_data
from bnnjax.evaluation import uci as protocol
from bnnjax.sweep import results
from bnnjax.sweep.launchers import launch
from bnnjax.sweep.points import Trial, make_trials, point_name

VALIDATION, TEST = "validation", "test"
TRAIN_PART, VALIDATION_PART = "train[:80%]", "train[80%:]"
CHOSEN_FILE, SCORE_FILE = "chosen.json", "score.json"
# A test run: all of split i's training rows, scored on its test rows.
TEST_DATA = {"data.train_split": "train", "data.eval_splits": "test", "data.validation_split": ""}


NUM_SPLITS = 20  # the published splits of each table


def protocol_config(model_name: str, uci_name: str = "concrete"):
  """The published protocol's training for `model_name` ("ensemble/mlp", "dropout/mlp",
  "bayes_mlp", ...): one hidden layer of 50 ReLU units, 400 epochs of Adam with a cosine
  schedule, batches of 32, in compiled calls of 200 steps, evaluated and checkpointed at the
  end only. A config file sets its method's own fields on it."""
  c = config_lib.base_config()
  c.data.name, c.data.uci_name, c.model.name = "uci", uci_name, model_name
  c = config_lib.resolve(c)
  c.model.hidden_sizes, c.model.activation = (50,), "relu"
  c.optimizer.lr, c.optimizer.schedule = 1e-3, "cosine"
  c.batch_size, c.num_epochs = 32, 400
  c.steps_per_call = 200
  c.eval_every = c.checkpoint_every = c.log_every = 1_000_000
  c.max_to_keep = 1
  c.progress_bar = False
  return c


def split_sweep(num_splits: int = NUM_SPLITS) -> List[Dict[str, int]]:
  """get_sweep()'s points: splits 0 .. num_splits - 1 at a config's own settings."""
  return [{"data.split_index": i} for i in range(num_splits)]


def base_config(config, uci_name: str = "", data_dir: str = "", extra: Optional[Mapping] = None):
  """The config file's config on data set `uci_name` (folder `data_dir` if given), `extra` set."""
  overrides = {"data.name": "uci", **({"data.uci_name": uci_name} if uci_name else {})}
  if data_dir:
    overrides["data.data_dir"] = data_dir
  return config_lib.with_overrides(config_lib.with_overrides(config, overrides), dict(extra or {}))


def one_call(config, splits: Sequence[int]):
  """`config` training in one compiled call (num_epochs as num_steps = steps_per_call, evaluated
  and checkpointed at the end only): the same steps, one compilation per run. Needs every
  split's training part to have the same number of rows (the benchmark's splits do)."""
  if config.num_steps > 0:
    return config
  sizes = {
    len(
      data.load_split(
        config_lib.with_overrides(config, {"data.split_index": i}).data, config.data.train_split
      )["y"]
    )
    for i in splits
  }
  if len(sizes) != 1:
    return config  # splits of different sizes: epochs as they are
  steps = config.num_epochs * data.steps_per_epoch(sizes.pop(), config.batch_size)
  fields = ("num_steps", "steps_per_call", "eval_every", "log_every", "checkpoint_every")
  return config_lib.with_overrides(config, {f: steps for f in fields})


def _trials(config, points: Sequence[Mapping], splits: Sequence[int]) -> List[Trial]:
  """make_trials of `points` (each {"data.split_index": i, other overrides}), each point's
  config set to train in one call (`one_call`, for its own num_epochs)."""
  trials, configs = [], {}
  for point in points:
    rest = {k: v for k, v in point.items() if k != "data.split_index"}
    key = json.dumps(rest, sort_keys=True)
    if key not in configs:
      configs[key] = one_call(config_lib.with_overrides(config, rest), splits)
    (trial,) = make_trials(configs[key], [point])
    # Named by split and overrides, not position: a run of some splits finds the runs of all.
    name = point_name(point["data.split_index"], trial.overrides)
    trials.append(dataclasses.replace(trial, index=len(trials), point=len(trials), name=name))
  return trials


def validation_trials(config, grid: Sequence[Mapping], splits: Sequence[int]) -> List[Trial]:
  """Runs on "train[:80%]", evaluated on "train[80%:]": one per grid point and split (grid-major)."""
  config = config_lib.with_overrides(
    config,
    {
      "data.train_split": TRAIN_PART,
      "data.eval_splits": f"val={VALIDATION_PART}",
      "data.validation_split": VALIDATION_PART,
    },
  )
  return _trials(config, [{"data.split_index": i, **dict(g)} for g in grid for i in splits], splits)


def test_trials(config, splits: Sequence[int], chosen: Optional[Mapping[int, dict]] = None) -> List[Trial]:
  """One run per split on all its training rows, evaluated on its test rows, with its chosen overrides."""
  config = config_lib.with_overrides(config, TEST_DATA)
  chosen = chosen or {}
  points = [{"data.split_index": i, **chosen.get(i, {}).get("overrides", {})} for i in splits]
  return _trials(config, points, splits)


def _split(trial: Trial) -> int:
  return int(trial.overrides["data.split_index"])


def score_run(trial: Trial, sweep_dir: str, select_noise: bool, num_samples: int, laplace: str = "") -> dict:
  """A finished validation run's score (bnnjax.evaluation.uci.validation_score), cached in its
  workdir's score.json (computed again when its result.json is newer); a log-likelihood of −inf
  for a run that diverged (its settings lose the choice)."""
  workdir = results.trial_dir(sweep_dir, trial)
  result = results.read_result(workdir)
  if result and result.get("diverged"):  # settings that diverge lose the choice
    return {
      "log_likelihood": float("-inf"),
      "diverged": result["error"],
      "overrides": trial.overrides,
      "elapsed_s": result["elapsed_s"],
    }
  if not result or result["status"] != results.FINISHED:
    status = result["status"] if result else results.PENDING
    raise ValueError(
      f"validation run {trial.name} in {sweep_dir} is {status}; run the validation stage first"
    )
  path = os.path.join(workdir, SCORE_FILE)
  score = _cached(path, workdir, {})
  if score is not None:
    return score
  tic = time.perf_counter()
  score = protocol.validation_score(run_lib.load(workdir), select_noise, num_samples, laplace=laplace)
  score.update(overrides=trial.overrides, elapsed_s=result["elapsed_s"] + time.perf_counter() - tic)
  results.write_json(path, score)
  return score


def choose_all(
  trials: Sequence[Trial], sweep_dir: str, select_noise: bool, num_samples: int, laplace: str = ""
) -> Dict[int, dict]:
  """Per split: the validation run with the best log-likelihood, its overrides (with the chosen
  noise std) and the validation time spent on that split; written to chosen.json."""
  by_split: Dict[int, List[dict]] = {}
  for trial in trials:
    by_split.setdefault(_split(trial), []).append(
      score_run(trial, sweep_dir, select_noise, num_samples, laplace)
    )
  chosen = {}
  for split, scored in by_split.items():
    best = protocol.choose(scored)
    chosen[split] = {
      "overrides": {k: v for k, v in best["overrides"].items() if k != "data.split_index"},
      "noise_std": best.get("noise_std"),
      "validation_log_likelihood": best["log_likelihood"],
      "scores": scored,
      "elapsed_s": sum(s["elapsed_s"] for s in scored),
    }
  results.write_json(os.path.join(sweep_dir, CHOSEN_FILE), {str(k): v for k, v in chosen.items()})
  return chosen


def table(
  trials: Sequence[Trial],
  sweep_dir: str,
  chosen: Mapping[int, dict],
  select_noise: bool,
  num_samples: int,
  laplace: str = "",
) -> dict:
  """The test stage's finished splits scored (`protocol.test_score`, cached in each run's
  score.json) in original units, and their summary."""
  rows = []
  for trial in trials:
    workdir = results.trial_dir(sweep_dir, trial)
    result = results.read_result(workdir)
    if not result or result["status"] != results.FINISHED:
      continue
    split = _split(trial)
    noise_std = chosen[split]["noise_std"] if select_noise or laplace else None
    path = os.path.join(workdir, SCORE_FILE)
    score = _cached(path, workdir, {"noise_std": noise_std})
    if score is None:
      tic = time.perf_counter()
      score = protocol.test_score(run_lib.load(workdir), noise_std, num_samples, laplace=laplace)
      score.update(noise_std=noise_std, elapsed_s=result["elapsed_s"] + time.perf_counter() - tic)
      results.write_json(path, score)
    _, target_std = data.target_scale(trial.config.data)
    rows.append(
      {
        "split": split,
        **protocol.split_result(score, target_std),
        "target_std": target_std,
        "overrides": trial.overrides,
        "noise_std": noise_std,
        "elapsed_s": score["elapsed_s"] + chosen.get(split, {}).get("elapsed_s", 0.0),
      }
    )
  return {"splits": rows, "summary": protocol.summarise(rows) if rows else None}


def _cached(path: str, workdir: str, expected: Mapping) -> Optional[dict]:
  """score.json if it is newer than the run's result.json and holds `expected`'s values."""
  result_path = os.path.join(workdir, results.RESULT_FILE)
  if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(result_path):
    return None
  with open(path, encoding="utf-8") as f:
    score = json.load(f)
  return score if all(score.get(k) == v for k, v in expected.items()) else None


def checked_splits(config, splits: Optional[Sequence[int]]):
  """(the UCI folder of config.data, the split indices: `splits`, or all the folder's when None);
  a one-line ValueError naming the folder's splits when one asked for is not there."""
  folder = data.uci_folder(config.data)
  available = uci_data.num_splits(folder)
  splits = list(range(available)) if splits is None else list(splits)
  if not splits or not all(0 <= i < available for i in splits):
    raise ValueError(f"{folder} has splits 0..{available - 1}; asked for {splits}")
  return folder, splits


def run_benchmark(
  config,
  grid: Sequence[Mapping],
  select_noise: bool,
  workdir: str,
  *,
  stage: str = "all",
  index: int = -1,
  parallel: int = 1,
  splits: Optional[Sequence[int]] = None,
  num_samples: int = 1000,
  method: str = "",
  command: str = "",
  laplace: str = "",
) -> Optional[dict]:
  """Runs the benchmark's stages for one data set and method.

  Args:
    config: from `base_config` (data set chosen).
    grid: the config file's get_grid(): overrides chosen on the validation rows ([] = none).
    select_noise: the noise std is fixed in training and chosen on the validation rows.
    workdir: the benchmark's directory (see the module doc).
    stage: "validation", "test", "table" or "all" (each in turn).
    index: with one stage, run only this run of it (a job array's task; -1: all).
    parallel: local processes per stage.
    splits: the split indices to run (None: every split of the folder).
    num_samples: K draws of the predictive for the validation scores.
    method, command: recorded in the table.
    laplace: "" or a Laplace structure fitted to each (point) run before it is scored; its noise
      std is chosen with it on the validation rows (bnnjax.evaluation.uci.validation_score).
  Returns:
    The table's dict (uci.json), or None before the test stage has a finished split.
  """
  if stage not in ("all", VALIDATION, TEST, "table"):
    raise ValueError(f"--stage={stage!r} is not one of all, {VALIDATION}, {TEST}, table")
  if index >= 0 and stage == "all":
    raise ValueError("--index runs one run of one stage: give --stage=validation or --stage=test")
  folder, splits = checked_splits(config, splits)
  # Every run of both stages resolved and its split read and checked (config.validate) before
  # anything is written: a bad file is one line and leaves no directory behind.
  val_trials = validation_trials(config, grid, splits)
  test_trials(config, splits)
  val_dir, test_dir = os.path.join(workdir, VALIDATION), os.path.join(workdir, TEST)
  if stage in ("all", VALIDATION) and val_trials:
    records = launch(val_trials, val_dir, index, "local", parallel)
    if stage == VALIDATION:
      return None
    if any(r["status"] != results.FINISHED and not r.get("diverged") for r in records):
      raise ValueError(f"some validation runs did not finish: see {val_dir}/sweep.md")
  chosen = choose_all(val_trials, val_dir, select_noise, num_samples, laplace) if val_trials else {}
  final = test_trials(config, splits, chosen)
  if stage in ("all", TEST):
    launch(final, test_dir, index, "local", parallel)
  out = table(final, test_dir, chosen, select_noise, num_samples, laplace)
  if out["summary"] is None:
    return None
  return write_table(workdir, out, folder, method, command, "validation" if val_trials else "none")


def write_table(workdir: str, out: dict, folder, method: str, command: str, chosen_by: str) -> dict:
  """`out` ({"splits", "summary"}) with the data set's name, method, command and how settings
  were chosen, written to <workdir>/uci.json and uci.md; returns it."""
  out.update(data=data_name(folder), method=method, command=command, chosen_by=chosen_by)
  results.write_json(os.path.join(workdir, "uci.json"), out)
  results.write_text(os.path.join(workdir, "uci.md"), protocol.markdown([out]))
  return out


def data_name(folder) -> str:
  return os.path.basename(os.path.normpath(str(folder)))


def run_nuts_benchmark(
  config,
  nuts: Mapping,
  workdir: str,
  *,
  splits: Optional[Sequence[int]] = None,
  method: str = "hmc",
  command: str = "",
) -> dict:
  """HMC's reference posterior on every split (`protocol.nuts_score`): one full-batch NUTS
  posterior per split on all its training rows, nothing chosen on validation rows (the noise
  std is sampled). Each split's score is cached in <workdir>/test/split_<i>/score.json with its
  settings, so a job array can run one split each (`splits=[i]`) and a last call, with every
  split, only reads them and writes the table (uci.json, uci.md).
  """
  folder, splits = checked_splits(config, splits)
  settings = {k: list(v) if isinstance(v, tuple) else v for k, v in nuts.items()}
  rows = []
  for i in splits:
    split_config = config_lib.with_overrides(config, {"data.split_index": i, **TEST_DATA})
    path = os.path.join(workdir, TEST, f"split_{i}", SCORE_FILE)
    score = None
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        score = json.load(f)
      score = score if score.get("settings") == settings and score.get("seed") == config.seed else None
    if score is None:
      tic = time.perf_counter()
      score = protocol.nuts_score(split_config, nuts, config.seed)
      score.update(settings=settings, seed=config.seed, elapsed_s=time.perf_counter() - tic)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      results.write_json(path, score)
    _, target_std = data.target_scale(split_config.data)
    diagnostics = {k: score[k] for k in ("noise_std", "rhat_noise", "divergences", "acceptance")}
    rows.append(
      {
        "split": i,
        **protocol.split_result(score, target_std),
        "target_std": target_std,
        **diagnostics,
        "elapsed_s": score["elapsed_s"],
      }
    )
  out = {"splits": rows, "summary": protocol.summarise(rows)}
  return write_table(workdir, out, folder, method, command, "none: the noise std is sampled with the weights")
