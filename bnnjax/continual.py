"""Continual learning: a sequence of tasks, each trained from the one before.

Variational continual learning (Nguyen et al., 2018): the posterior after task t is the prior
of task t + 1, and its means initialise it,

    loss_t = E_q[-log p(y | x, w)] + KL(q_t || q_{t-1}) / N_t     (per example, N_t = task t's size),

with the closed-form KL between mean-field Gaussians (bnnjax.priors.PosteriorPrior); task 1
starts from the prior in the config. Online elastic weight consolidation (Kirkpatrick et al.
2017; Schwarz et al. 2018) trains a point estimate whose penalty is a diagonal Laplace
approximation of the previous tasks,

    loss_t = − mean_i log p(y_i | x_i, w) + λ Σ_j Λ_{t−1,j} (w_j − w*_{t−1,j})² / (2 N_t),
    Λ_t = Λ_{t−1} + F_t      (F_t: the exact diagonal Fisher of task t at its weights w*_t),

saved after task t in <workdir>/task_<t>_fisher as a Gaussian {mean w*_t, std Λ_t^(−1/2)}.
Fine-tuning (the baseline that forgets) only carries the weights over. Each task is an
ordinary run in <workdir>/task_<t>, so each is checkpointed and resumes exactly; finished
tasks are not trained again.

A task is a dict of config overrides, e.g. {"data.permutation_seed": 3} (permuted MNIST)
or {"data.classes": (2, 3)} (split MNIST); `permuted_tasks` and `split_tasks` build them. A
multi-head sequence (split MNIST's, `split_tasks(..., multi_head=True)`) also sets
{"model.head": t}: task t trains head t of a network with one head per task
(bnnjax.models.multihead: "mean_field/multihead" for VCL, "point/multihead" for EWC and
fine-tuning), and a task is always evaluated through its own head (a task's "model.*" overrides
apply to every run that predicts it). Under VCL a head starts as VCL's code adds it: at its first
task its prior is the config's prior and its means and stds a fresh init
(config.model.fresh_modules), not what the earlier tasks' KL-only updates left of them.

Coresets (VCL with config.data.coreset_size > 0, bnnjax.coresets): each task's coreset rows are
left out of its training; the propagated posterior q_t (trained without them) is the next task's
prior, and only a copy of it is refined on the coresets before predicting, each refinement an
ordinary run of `coreset_steps` steps with q_t as its prior and its means as the start:
  - multi-head (as VCL's code): task j ≤ t is predicted by q_t refined on task j's coreset
    through head j, in <workdir>/task_<t>_coreset_<j>;
  - single head (as VCL's code): q_t refined once on the union of the coresets of tasks 1..t
    (config.data.coreset_union), in <workdir>/task_<t>_coresets, predicting every task.
"""

import json
import os
import time
from typing import Dict, List, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import checkpoint, data, metrics, models, train
from bnnjax.config import resolve, with_overrides
from bnnjax.methods import fisher
from bnnjax.models import multihead

METHODS = ("vcl", "ewc", "finetune")
FISHER_EXAMPLES = 2000  # rows of a task's training split the EWC Fisher is estimated on
SEQUENCE_FILE = "sequence.json"


def permuted_tasks(num_tasks: int, seed: int = 0) -> List[dict]:
  """Permuted MNIST: task 1 the identity, task t a fixed pixel permutation drawn from seed + t."""
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
  return [{"data.permutation_seed": -1}] + [{"data.permutation_seed": seed + t} for t in range(1, num_tasks)]


def split_tasks(class_groups: Sequence[Sequence[int]], multi_head: bool = False) -> List[dict]:
  """Split MNIST: one task per group of classes, e.g. ((0, 1), (2, 3), ...); with multi_head, task
  t also selects head t (config.model.head; config.model.head_classes must list the same groups)."""
  return [
    {"data.classes": tuple(int(c) for c in group), **({"model.head": t} if multi_head else {})}
    for t, group in enumerate(class_groups)
  ]


def check_tasks(tasks: Sequence[dict]) -> None:
  """One-line ValueErrors: no task, two identical tasks, overlapping or one-class groups."""
  if not tasks:
    raise ValueError("a continual sequence needs at least one task")
  seen = [json.dumps(task, sort_keys=True) for task in tasks]
  for i, key in enumerate(seen):
    if key in seen[:i]:
      raise ValueError(
        f"tasks {seen.index(key) + 1} and {i + 1} are the same ({key}): "
        "a permutation seed or class group used twice"
      )
  groups = [tuple(t["data.classes"]) for t in tasks if t.get("data.classes")]
  for i, group in enumerate(groups):
    if len(set(group)) < 2:
      raise ValueError(f"class group {group} leaves a task with one class")
    for other in groups[:i]:
      if set(group) & set(other):
        raise ValueError(f"class groups {other} and {group} overlap")


def task_config(config, tasks: Sequence[dict], t: int, method: str, workdir: str):
  """The resolved config of task t (0-based): its data, and the previous task's run as its
  weights' start (both methods) and prior (VCL)."""
  overrides = dict(tasks[t])
  if t > 0:
    previous = task_dir(workdir, t - 1)
    overrides["model.init_from"] = previous
    if method == "vcl":
      overrides.update({"model.prior": "posterior", "model.prior_workdir": previous})
      head = tasks[t].get("model.head")
      if head is not None and head not in [task.get("model.head") for task in tasks[:t]]:
        # A new head, as VCL adds it: the config's prior and a fresh init, not what q_{t-1} left.
        overrides["model.fresh_modules"] = (multihead.head_module(head),)
        overrides["model.fresh_prior"] = config.model.prior
    if method == "ewc":
      overrides["model.prior_workdir"] = fisher_dir(workdir, t - 1)
  return with_overrides(config, overrides)


def task_dir(workdir: str, t: int) -> str:
  return os.path.join(workdir, f"task_{t + 1:02d}")


def fisher_dir(workdir: str, t: int) -> str:
  return os.path.join(workdir, f"task_{t + 1:02d}_fisher")


def coreset_dir(workdir: str, t: int, j: int) -> str:
  """The refinement, after task t, on task j's coreset (0-based t and j)."""
  return os.path.join(workdir, f"task_{t + 1:02d}_coreset_{j + 1:02d}")


def union_dir(workdir: str, t: int) -> str:
  """The refinement, after task t, on the union of the coresets of tasks 1..t (single head)."""
  return os.path.join(workdir, f"task_{t + 1:02d}_coresets")


def refine_config(task_config_j, start: str, steps: int, union: Sequence[tuple] = ()):
  """The run refining the posterior in `start` on task j's coreset, or on the union of the
  coresets of the tasks `union` names ((permutation_seed, classes) pairs, config.data.coreset_union):
  its data (the coreset rows alone) and model overrides (task j's head), `start` as prior and initial
  means, `steps` steps of full batches (at most config.batch_size rows)."""
  c = task_config_j
  rows = c.data.coreset_size * max(len(union), 1)
  return with_overrides(
    c,
    {
      "data.coreset_only": True,
      "data.coreset_union": tuple(union),
      "model.init_from": start,
      "model.prior": "posterior",
      "model.prior_workdir": start,
      "model.fresh_modules": (),
      "num_steps": steps,
      "batch_size": min(c.batch_size, rows),
      "eval_every": steps,
      "checkpoint_every": steps,
      "log_every": steps,
      "steps_per_call": 1,
    },
  )


def _check_task(config, task: dict, t: int) -> None:
  """One-line ValueErrors: a head whose classes are not the task's, a coreset not smaller than the
  task's training split."""
  if "model.head" in task:
    head_classes = tuple(tuple(g) for g in config.model.head_classes)
    if tuple(config.data.classes) != head_classes[task["model.head"]]:
      raise ValueError(
        f"task {t + 1} trains on classes {tuple(config.data.classes)} but its head "
        f"{task['model.head']} has config.model.head_classes[{task['model.head']}] = "
        f"{head_classes[task['model.head']]}"
      )
  size = config.data.coreset_size
  if size > 0:
    rows = len(
      data.load_split(with_overrides(config, {"data.coreset_size": 0}).data, config.data.train_split)["y"]
    )
    if size >= rows:
      raise ValueError(
        f"config.data.coreset_size={size} is not smaller than task {t + 1}'s {rows} training rows"
      )


def save_ewc_penalty(run, config, workdir: str, t: int, rows: int = FISHER_EXAMPLES) -> None:
  """After task t: Λ_t = Λ_{t−1} + F_t (F_t on `rows` random training rows of task t, scaled to
  the task's size) and the Gaussian {mean w*_t, log_std −½ log Λ_t} saved in fisher_dir(t)."""
  train_data = data.load_split(config.data, config.data.train_split)
  pick = np.random.default_rng(t).permutation(len(train_data["y"]))[:rows]
  method, network = models.COMPOSED.get(config.model.name, config.model.name.partition("/")[::2])
  if method != "point":
    raise ValueError(f"EWC trains a point estimate (mlp or point/<network>), got {config.model.name!r}")
  models.get(config.model.name)  # fills models.NETWORKS
  forward = models.NETWORKS[network].build(config.model, run.info, run.info.num_classes)
  x = run.inputs(train_data["x"][pick])
  task_fisher = fisher.diagonal_fisher(forward, run.params, x, classification=True)
  precision = jax.tree_util.tree_map(lambda f: f * (len(train_data["y"]) / len(pick)), task_fisher)
  if t > 0:
    previous, _ = checkpoint.restore_params(fisher_dir(workdir, t - 1))
    precision = jax.tree_util.tree_map(
      lambda p, log_std: p + jnp.exp(-2.0 * log_std), precision, previous["log_std"]
    )
  # The floor keeps a weight no task has used (Λ = 0) finite and free: a std of 1e6.
  log_std = jax.tree_util.tree_map(lambda p: -0.5 * jnp.log(p + 1e-12), precision)
  manager = checkpoint.make_manager(fisher_dir(workdir, t))
  meta = {
    "model": config.model.name,
    "config": checkpoint.config_to_json(config),
    "data_info": run.info._asdict(),
  }
  checkpoint.save(manager, 0, {"params": {"mean": run.params, "log_std": log_std}}, meta)
  manager.wait_until_finished()


def _check_same_sequence(workdir: str, record: dict) -> None:
  """Writes the sequence's description, or refuses a workdir holding another sequence."""
  path = os.path.join(workdir, SEQUENCE_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if saved != record:
      raise ValueError(
        f"{workdir} holds another continual sequence (its tasks or method differ: "
        f"saved {saved['method']} {saved['tasks']}); use a new workdir"
      )
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2)


class Result(NamedTuple):
  """accuracy[i][j]: test accuracy on task j after training task i (every j, seen or not); nll and
  ece the same for the predictive NLL and the expected calibration error (bnnjax.metrics)."""

  method: str
  accuracy: np.ndarray  # [T, T]
  nll: np.ndarray  # [T, T]
  ece: np.ndarray  # [T, T]

  @staticmethod
  def seen_mean(matrix: np.ndarray) -> np.ndarray:
    """[T] the mean of matrix[i, :i + 1] (the tasks seen so far) after each task i."""
    return np.array([matrix[i, : i + 1].mean() for i in range(len(matrix))])

  def average_accuracy(self) -> np.ndarray:
    """[T] mean accuracy over the tasks seen so far, after each task."""
    return self.seen_mean(self.accuracy)

  def backward_transfer(self) -> float:
    """mean_j<T (R[T, j] - R[j, j]): negative when learning later tasks forgets earlier ones."""
    last = len(self.accuracy) - 1
    if last == 0:
      return 0.0
    return float(np.mean([self.accuracy[last, j] - self.accuracy[j, j] for j in range(last)]))


def fit_sequence(
  config,
  tasks: Sequence[dict],
  workdir: str,
  method: str = "vcl",
  num_samples: int = 16,
  eval_split: str = "test",
  coreset_steps: int = 100,
  refine_last_only: bool = False,
) -> Result:
  """Trains every task in turn (resuming where a previous call stopped) and evaluates each
  trained run on every task's test split.

  Args:
    config: the base config (a mean-field model for "vcl"; any model with init_from for
      "finetune"); its data section is task 1's before the task overrides.
    tasks: config.data overrides, one dict per task.
    workdir: the sequence's folder: task_01/, task_02/, ..., sequence.json, continual.json.
    method: "vcl", "ewc" (config.model.ewc_lambda is λ) or "finetune".
    num_samples: K of the predictive used for the accuracy matrix.
    eval_split: "test", or "validation" (config.data.validation_split: to choose λ or β
      without looking at the test split).
    coreset_steps: the steps of each coreset refinement (VCL with config.data.coreset_size > 0).
    refine_last_only: refine on the coresets only after the last task (T refinements instead of
      T(T+1)/2 with a multi-head network); rows before the last then hold the propagated
      posterior's predictions (continual.json's "refined_rows" lists the rows that are refined).
  Returns:
    The Result; continual.json in workdir holds it too.
  """
  from bnnjax import run as run_lib  # pylint: disable=import-outside-toplevel

  if method not in METHODS:
    raise ValueError(f"unknown continual method {method!r}; choose one of {', '.join(METHODS)}")
  check_tasks(tasks)
  config = resolve(config)
  if config.data.coreset_size > 0 and method != "vcl":
    raise ValueError(f"a coreset refines a VCL posterior; --method={method} takes config.data.coreset_size=0")
  if coreset_steps < 1:
    raise ValueError(f"coreset_steps must be >= 1, got {coreset_steps}")
  configs = [task_config(config, tasks, t, method, workdir) for t in range(len(tasks))]
  for t, task_config_t in enumerate(configs):
    _check_task(task_config_t, tasks[t], t)
  record = {"method": method, "tasks": [_plain(t) for t in tasks], "model": config.model.name}
  if config.data.coreset_size > 0:
    record["coreset"] = f"{config.data.coreset_kind}:{config.data.coreset_size}:{coreset_steps}"
  _check_same_sequence(workdir, record)
  if eval_split not in ("test", "validation"):
    raise ValueError(f"eval_split must be 'test' or 'validation', got {eval_split!r}")
  pick = data.test_split if eval_split == "test" else data.validation_split
  tests = [data.load_split(c.data, pick(c.data)) for c in configs]
  size = len(tasks)
  accuracy, nll, ece = np.zeros((size, size)), np.zeros((size, size)), np.zeros((size, size))
  start, refined_rows = time.time(), []
  for i, task_config_i in enumerate(configs):
    train.fit(task_config_i, task_dir(workdir, i))
    run = run_lib.load(task_dir(workdir, i))
    if method == "ewc" and i < size - 1 and not os.path.isdir(fisher_dir(workdir, i)):
      save_ewc_penalty(run, task_config_i, workdir, i)
    refine = config.data.coreset_size > 0 and (i == size - 1 or not refine_last_only)
    predicting = _predicting_runs(run, configs, tasks, i, workdir, coreset_steps if refine else 0)
    refined_rows += [i] if refine else []
    for j, test in enumerate(tests):
      pred = predicting[j].predict(test["x"], num_samples=num_samples, rng=j)
      scores = metrics.classification_metrics(pred.probs, test["y"])
      accuracy[i, j], nll[i, j], ece[i, j] = scores["accuracy"], scores["nll"], scores["ece"]
  result = Result(method, accuracy, nll, ece)
  _write(workdir, result, time.time() - start, refined_rows)
  return result


def _with_task_model(run, task: dict):
  """The run predicting through the task's model overrides (its head), the same params."""
  from bnnjax import run as run_lib  # pylint: disable=import-outside-toplevel

  overrides = {k: v for k, v in task.items() if k.startswith("model.")}
  if all(run.config.model[k.partition(".")[2]] == v for k, v in overrides.items()):
    return run
  config = with_overrides(run.config, overrides)
  return run_lib.Run(run.workdir, config, run.params, run.info, train.build_task(config, run.info), run.step)


def _predicting_runs(run, configs, tasks, i: int, workdir: str, steps: int) -> list:
  """The run predicting each task after task i: task i's run through the task's head, or with a
  coreset its refinements (see the module doc) of `steps` steps (0: none), trained here where not
  finished yet."""
  from bnnjax import run as run_lib  # pylint: disable=import-outside-toplevel

  if configs[i].data.coreset_size == 0 or steps == 0:
    return [_with_task_model(run, task) for task in tasks]
  start = task_dir(workdir, i)
  if not any("model.head" in task for task in tasks):  # one head: one refinement on the union
    union = [(c.data.permutation_seed, tuple(c.data.classes)) for c in configs[: i + 1]]
    train.fit(refine_config(configs[i], start, steps, union), union_dir(workdir, i))
    return [run_lib.load(union_dir(workdir, i))] * len(tasks)
  refined = {}
  for j in range(i + 1):
    train.fit(refine_config(configs[j], start, steps), coreset_dir(workdir, i, j))
    refined[j] = run_lib.load(coreset_dir(workdir, i, j))
  return [refined[j] if j in refined else _with_task_model(run, task) for j, task in enumerate(tasks)]


def _plain(task: dict) -> Dict[str, object]:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in task.items()}


def _write(workdir: str, result: Result, seconds: float, refined_rows: list) -> None:
  report = {
    "method": result.method,
    "accuracy": result.accuracy.tolist(),
    "nll": result.nll.tolist(),
    "ece": result.ece.tolist(),
    "average_accuracy": result.average_accuracy().tolist(),
    "average_nll": Result.seen_mean(result.nll).tolist(),
    "average_ece": Result.seen_mean(result.ece).tolist(),
    "backward_transfer": result.backward_transfer(),
    "refined_rows": refined_rows,  # the rows predicted by coreset refinements
    "seconds": seconds,  # this call's wall time (training what was not finished, and evaluating)
    "convention": "accuracy[i][j]: test accuracy on task j after training task i; average_*[i]: "
    "the mean over tasks 0..i",
  }
  with open(os.path.join(workdir, "continual.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
