"""The one train loop: every model trains, evaluates, logs and checkpoints through `fit`.

    state = init or restore(workdir)
    repeat: batch = batch_at(train, seed, step)  ─ jit(update) ─ evaluate ─ log ─ checkpoint

The batch at step t is a pure function of (seed, t) and the PRNG key lives in the state, so
a run restarted from a checkpoint replays exactly the steps an uninterrupted run takes.
"""

import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from bnnjax import checkpoint, data, datasets, models, writers
from bnnjax.config import (
  base_config,
  check_steps_per_call,
  parse_lr_multipliers,
  parse_profile_steps,
  resolve,
  validate,
)
from bnnjax.task import DataInfo, Task
from bnnjax.writers import MetricWriter

# Evaluation draws its randomness from its own stream, so evaluating never perturbs training.
_EVAL_STREAM = 0x7E57


class TrainState(NamedTuple):
  """What a checkpoint holds: the trained pytree, the optimizer state, the PRNG key, the step."""

  params: Any
  opt_state: Any
  rng: jax.Array
  step: jax.Array


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The optax optimizer of config.optimizer (schedule, warm-up, lr multipliers, clipping)."""
  if opt.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, opt.lr, opt.warmup_steps, max(total_steps, 1))
  elif opt.warmup_steps > 0:
    lr = optax.linear_schedule(0.0, opt.lr, opt.warmup_steps)
  else:
    lr = opt.lr
  if opt.name == "adam":
    tx = optax.adam(lr)
  elif opt.name == "adamw":
    tx = optax.adamw(lr, weight_decay=opt.weight_decay)
  else:
    tx = optax.sgd(lr, momentum=opt.momentum or None)
  multipliers = parse_lr_multipliers(opt.get("lr_multipliers", ""))
  if multipliers:
    tx = _with_lr_multipliers(tx, multipliers)
  if opt.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
  return tx


def training_optimizer(task: Task, opt: ml_collections.ConfigDict, total_steps: int):
  """config.optimizer's optax optimizer, unless the task's trajectory brings its own rule
  (an SG-MCMC sampler); the trajectory may also refuse a run too short for it."""
  own = None
  if task.trajectory is not None and task.trajectory.optimizer is not None:
    own = task.trajectory.optimizer(total_steps)
  return own if own is not None else make_optimizer(opt, total_steps)


def _with_lr_multipliers(tx, multipliers: Dict[str, float]) -> optax.GradientTransformation:
  """tx, its updates scaled by multipliers[key] under each named top-level key of the params."""

  def labels(params):
    if not isinstance(params, dict):
      raise ValueError("config.optimizer.lr_multipliers needs params that are a dict of top-level keys")
    missing = sorted(set(multipliers) - set(params))
    if missing:
      raise ValueError(
        f"config.optimizer.lr_multipliers names {missing}, but the params' "
        f"top-level keys are {sorted(params)}"
      )
    return {
      key: jax.tree_util.tree_map(lambda _, k=key: k if k in multipliers else "", value)
      for key, value in params.items()
    }

  transforms = {key: optax.chain(tx, optax.scale(factor)) for key, factor in multipliers.items()}
  return optax.multi_transform({"": tx, **transforms}, labels)


def data_mesh(batch_size: int) -> Optional[Mesh]:
  """A 1-D mesh over all devices for data parallelism, or None on one device.

  JAX's own sharding does the work: the batch is split along "data", parameters and
  optimizer state are replicated, and XLA inserts the gradient all-reduce.
  """
  devices = jax.devices()
  if len(devices) == 1:
    return None
  if batch_size % len(devices):
    raise ValueError(
      f"config.batch_size={batch_size} must be divisible by the {len(devices)} devices for data parallelism"
    )
  return Mesh(np.array(devices), ("data",))


class Accumulator(NamedTuple):
  """What a call of the fused update adds up between two logs, on device.

  sums: each training metric summed over the steps since the last log.
  bad: 0, or the step count after the first update whose loss (or, where checked, new
    parameters) were not finite: the first non-finite step, 1-based like the loop's step
    count; an optimizer state that is not finite while they are counts at the call's end.
  """

  sums: Dict[str, jax.Array]
  bad: jax.Array


class Update(NamedTuple):
  """The fused train step of `make_update`.

  run(state, acc, train_data, order, num_steps, check_state=False) -> (state, acc, order):
    `num_steps` (a Python int, one compilation each) optimiser steps in one jitted lax.scan
    (one step: straight-line code, no loop; XLA:CPU runs convolutions inside a loop ~30x slower);
    `state` and `acc` are donated; `check_state` also checks the state for inf and nan.
    `order` is data.epoch_order of the epoch of state.step on the way in and of the returned
    state's step on the way out (redrawn inside the scan at an epoch boundary).
  zeros(state, train_data) -> an Accumulator of zeros (nothing computed: shapes only).
  """

  run: Callable
  zeros: Callable


def make_update(
  task: Task,
  optimizer: optax.GradientTransformation,
  seed: int,
  batch_size: int,
  mesh: Optional[Mesh] = None,
  total_steps: int = 0,
) -> Update:
  """The fused train step: any number of steps per dispatch, each drawing its own batch.

  Step t trains on data.batch_at(train_data, seed, t, batch_size, order): the same batches
  in the same order whatever the number of steps per call, so N steps per call end
  bit-identical to N calls of one step. The permutation of an epoch costs more than a step
  on CPU, so it is drawn once per epoch (inside the scan when a call crosses an epoch).
  Every step's loss is checked for inf and nan; with `check_state` (a call that ends where
  the loop saves) also every step's new parameters, and the optimizer state at the call's
  end. A pass over the whole state costs about a sixth of a Bayesian step's memory traffic
  (XLA's cost analysis), so other calls skip it: a non-finite state shows in the next loss,
  and no state is saved unchecked. The first failing step is kept in `Accumulator.bad`.
  A task with a `trajectory` (SWAG, SG-MCMC) has params {"weights", "collected"}: the step
  differentiates and optimises the weights only, then collects (`total_steps`: the run's length).
  """

  def one_step(state: TrainState, train_data, order):
    batch = data.batch_at(train_data, seed, state.step, batch_size, order)
    if mesh is not None:
      batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P("data")))
    rng, step_rng = jax.random.split(state.rng)
    if task.trajectory is None:
      grad_fn = jax.value_and_grad(task.loss, has_aux=True)
      (loss, metrics), grads = grad_fn(state.params, step_rng, batch, state.step)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    else:  # only the weights are differentiated and optimised; the rest is collected
      weights = state.params["weights"]
      loss_of_weights = lambda w: task.loss({**state.params, "weights": w}, step_rng, batch, state.step)  # noqa: E731
      (loss, metrics), grads = jax.value_and_grad(loss_of_weights, has_aux=True)(weights)
      updates, opt_state = optimizer.update(grads, state.opt_state, weights)
      weights = optax.apply_updates(weights, updates)
      collected = task.trajectory.collect(state.params["collected"], weights, state.step + 1, total_steps)
      params = {**state.params, "weights": weights, "collected": collected}
    return TrainState(params, opt_state, rng, state.step + 1), {"loss": loss, **metrics}

  def run(state: TrainState, acc: Accumulator, train_data, order, num_steps: int, check_state: bool = False):
    n = data.num_examples(train_data)
    per_epoch = data.steps_per_epoch(n, batch_size)

    def body(carry, _):
      state, acc, order = carry
      state, metrics = one_step(state, train_data, order)
      finite = jnp.isfinite(metrics["loss"])
      if check_state:
        finite = finite & _all_finite(state.params)
      bad = jnp.where((acc.bad == 0) & ~finite, state.step, acc.bad)
      sums = jax.tree_util.tree_map(jnp.add, acc.sums, metrics)
      order = jax.lax.cond(
        state.step % per_epoch == 0,
        lambda: data.epoch_order(seed, state.step // per_epoch, n).astype(order.dtype),
        lambda: order,
      )
      return (state, Accumulator(sums, bad), order), None

    if num_steps == 1:  # no loop: XLA:CPU gives convolutions inside a loop slow layouts
      (state, acc, order), _ = body((state, acc, order), None)
    else:
      (state, acc, order), _ = jax.lax.scan(body, (state, acc, order), None, length=num_steps)
    if check_state:  # the optimizer state (twice the params for Adam) once, at the call's end
      bad = jnp.where((acc.bad == 0) & ~_all_finite(state.opt_state), state.step, acc.bad)
      acc = acc._replace(bad=bad)
    return state, acc, order

  shapes = {}  # the metrics' shapes, traced once

  def zeros(state: TrainState, train_data) -> Accumulator:
    if not shapes:
      order = jax.ShapeDtypeStruct((data.num_examples(train_data),), jnp.int32)
      shapes["metrics"] = jax.eval_shape(one_step, state, train_data, order)[1]
    sums = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["metrics"])
    return Accumulator(sums, jnp.zeros((), jnp.int32))

  return Update(jax.jit(run, static_argnames=("num_steps", "check_state"), donate_argnums=(0, 1)), zeros)


def evaluate_split(evaluate_fn, params, rng, split_data, batch_size: int) -> Dict[str, float]:
  """Batch-size-weighted means of `evaluate_fn` over a whole split."""
  totals, count = {}, 0
  for i, batch in enumerate(data.eval_batches(split_data, batch_size)):
    n = len(batch["y"])
    metrics = evaluate_fn(params, jax.random.fold_in(rng, i), batch)
    for key, value in metrics.items():
      totals[key] = totals.get(key, 0.0) + n * value
    count += n
  return {key: float(value) / count for key, value in totals.items()}


def resolve_fallback(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config itself, or a copy on `config.data.fallback` if its data set cannot be had.

  Only an automatic data location falls back: a data_dir the user named must hold the data.
  """
  d = config.data
  automatic = not d.data_dir and data.default_data_dir() is None
  if not d.fallback or not automatic or d.name not in data.IMAGE_FOLDERS:
    return config
  try:
    datasets.prepared_builder(d.name)  # already prepared, or downloads it now
    return config
  except datasets.DownloadUnavailable as e:
    print(
      f"{d.name} not found ({e}); training on {d.fallback!r} instead "
      f"(config.data.fallback). Point --config.data.data_dir at MNIST IDX files to use it."
    )
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.name, config.data.train_split, config.data.eval_splits = d.fallback, "train", "test"
  return config


def check_workdir(workdir: str) -> None:
  """Creates `workdir`; a one-line ValueError if it cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ValueError(f"workdir {workdir!r} is not writable: {e.strerror or e}") from None


# Fields that define the run: resuming a workdir under a different value would not be a resume.
_IDENTITY_FIELDS = ("seed", "batch_size", "model", "data", "optimizer")


def check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
  """A CheckpointError if `workdir` holds a run whose identity fields differ from `config`'s."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  now = checkpoint.config_to_json(config)
  defaults = _default_fields(config)
  for field in _IDENTITY_FIELDS:
    # A field that a newer bnnjax added is absent from an older run's config.json: it
    # counts as its default, so upgrading does not block resuming at the same settings.
    if isinstance(saved.get(field), dict) and field in defaults:
      saved[field], now[field] = ({**defaults[field], **saved[field]}, {**defaults[field], **now[field]})
    if saved.get(field) != now.get(field):
      raise checkpoint.CheckpointError(
        f"workdir {workdir} holds a run with another config.{field}: saved {saved.get(field)}, "
        f"now {now.get(field)}; use a new --workdir"
      )


def _default_fields(config) -> dict:
  """The default data, optimizer and model sections, as config.json would hold them."""
  defaults = base_config()
  defaults.model = models.get(config.model.name).default_config()
  return {k: v for k, v in checkpoint.config_to_json(defaults).items() if isinstance(v, dict)}


def total_steps(config, num_train: int) -> int:
  """config.num_steps if set, else num_epochs full passes over num_train examples."""
  if config.num_steps > 0:
    return config.num_steps
  return config.num_epochs * data.steps_per_epoch(num_train, config.batch_size)


def restore_references(model: models.Model, model_config) -> Dict[str, Any]:
  """The params of the runs that `model`'s workdir fields name ({} where none is set)."""
  return {
    field: checkpoint.restore_params(model_config[field])[0]
    for field in model.workdir_fields
    if model_config[field]
  }


def build_task(config: ml_collections.ConfigDict, info: DataInfo) -> Task:
  """The Task of a resolved config: its model's make_task on its own section, with the
  runs its workdir fields name read from disk here."""
  model = models.get(config.model.name)
  return model.make_task(config.model, info, restore_references(model, config.model))


def _prepare(config: ml_collections.ConfigDict, workdir: str):
  """The checks that need the data, then (config, task, train, evals, info)."""
  config = resolve_fallback(config)
  check_same_run(workdir, config)
  train, evals, info = data.load_splits(config.data)
  if config.batch_size > info.num_train:
    raise ValueError(
      f"config.batch_size={config.batch_size} exceeds the {info.num_train} "
      f"training examples of {config.data.name}:{config.data.train_split}"
    )
  return config, build_task(config, info), train, evals, info


def optimised_params(task: Task, params):
  """The part of `params` that the optimizer updates: all of it, or a trajectory's "weights"
  (its "collected" part, SWAG's moments or the kept samples, is not differentiated)."""
  return params if task.trajectory is None else params["weights"]


def _initial_state(
  task: Task, optimizer, train, seed: int, manager, sharding: Optional[NamedSharding] = None
) -> TrainState:
  """A fresh state, or the latest readable checkpoint's (which must be of the same model).

  `sharding` (replicated over a data-parallel mesh) is where a restored state is read to:
  with several processes each one reads its own copy, never transferring between hosts.
  """
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = task.init(init_rng, jax.tree_util.tree_map(lambda a: jnp.asarray(a[:1]), train))
  opt_state = optimizer.init(optimised_params(task, params))
  state = TrainState(params, opt_state, train_rng, jnp.asarray(0, jnp.int32))
  target = (
    state
    if sharding is None
    else jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), state)
  )
  restored = checkpoint.restore(manager, target)
  if restored is None:
    return state
  logging.info("resumed from %s at step %d", manager.directory, restored[1])
  return restored[0]


def _kept(manager) -> str:
  """What a run that stops on a non-finite value leaves behind, in words."""
  latest = manager.latest_step()
  if latest is None:
    return f"no checkpoint was saved in {manager.directory}"
  return f"the last good checkpoint in {manager.directory} (step {latest}) is kept"


def _means(acc: Accumulator, count: int, step: int, manager) -> Dict[str, float]:
  """The mean training metrics since the last log; a FloatingPointError naming the first
  non-finite step if there was one since then (nothing after it is ever saved)."""
  bad = int(acc.bad)
  if bad:
    raise FloatingPointError(
      f"the training loss, parameters or optimizer state are not finite after step {bad}; "
      f"not checkpointed; {_kept(manager)}"
    )
  return {f"train/{k}": float(v) / count for k, v in acc.sums.items()}


def _all_finite(tree) -> jax.Array:
  """Whether every floating-point entry of `tree` is finite, as one reduction."""
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class _Profiler:
  """A jax.profiler trace of the calls that run steps a..b-1 (config.profile_steps), in
  <workdir>/profile (TensorBoard's profile plugin or Perfetto read it)."""

  def __init__(self, workdir: str, steps: Optional[tuple], active: bool = True):
    self._dir = os.path.join(workdir, "profile")
    self._steps = steps if active else None
    self._on = False

  def before(self, step: int, num_steps: int) -> None:
    """Starts the trace before the first call that runs a step in [a, b)."""
    if self._steps is None or self._on:
      return
    a, b = self._steps
    if step < b and step + num_steps > a:
      jax.profiler.start_trace(self._dir)
      self._on = True

  def after(self, step: int, state) -> None:
    """Stops it once step b is done (the steps' work waited for, so the trace holds it)."""
    if self._on and step >= self._steps[1]:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self._on:
      jax.profiler.stop_trace()
      self._on, self._steps = False, None


def fit(config: ml_collections.ConfigDict, workdir: str, stop_after: Optional[int] = None) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  eval_every, checkpoint_every and log_every of 0 each mean once per epoch.
  `stop_after` ends the run early after that many steps in total (checkpointing first), as a
  pre-emption would; the same call without it later continues to the configured length.
  The workdir is locked for the whole call (by process 0 of a jax.distributed run): a
  second run on it is a one-line checkpoint.WorkdirBusy naming the holder.
  """
  config = resolve(config)
  validate(config)
  check_workdir(workdir)
  with checkpoint.workdir_lock(workdir, active=jax.process_index() == 0):
    return _train(config, workdir, stop_after)


def _train(config: ml_collections.ConfigDict, workdir: str, stop_after: Optional[int]) -> TrainState:
  """fit's work, in a workdir it holds the lock of."""
  config, task, train, evals, info = _prepare(config, workdir)
  num_steps = total_steps(config, info.num_train)
  per_epoch = data.steps_per_epoch(info.num_train, config.batch_size)
  eval_every = config.eval_every or per_epoch
  checkpoint_every = config.checkpoint_every or per_epoch
  log_every = config.log_every or per_epoch
  check_steps_per_call(config, per_epoch)
  profile = parse_profile_steps(config.profile_steps)
  if profile is not None and profile[1] > num_steps:
    raise ValueError(
      f"config.profile_steps={config.profile_steps!r} lies outside the run's steps 0..{num_steps}"
    )
  optimizer = training_optimizer(task, config.optimizer, num_steps)
  manager = checkpoint.make_manager(workdir, config.max_to_keep)
  mesh = data_mesh(config.batch_size)
  replicated = None if mesh is None else NamedSharding(mesh, P())
  state = _initial_state(task, optimizer, train, config.seed, manager, replicated)
  lead = jax.process_index() == 0  # with jax.distributed, one process writes the files
  if lead:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      json.dump(checkpoint.config_to_json(config), f, indent=2)
    writers.append_provenance(workdir, int(state.step))
  meta = {
    "model": config.model.name,
    "config": checkpoint.config_to_json(config),
    "data_info": info._asdict(),
  }

  update = make_update(task, optimizer, config.seed, config.batch_size, mesh, num_steps)
  evaluate_fn = jax.jit(task.evaluate)
  eval_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), _EVAL_STREAM)
  train, evals, state = jax.device_put((train, evals, state), replicated)
  last = num_steps if stop_after is None else min(stop_after, num_steps)
  calls_per = config.steps_per_call

  step = int(state.step)
  writer = MetricWriter(workdir, active=lead, start_step=step)
  bar = tqdm(
    total=num_steps,
    initial=step,
    disable=not (config.progress_bar and lead),
    unit="step",
    dynamic_ncols=True,
    leave=False,
  )
  profiler = _Profiler(workdir, profile, active=lead)
  clock = {"train": 0.0, "eval": 0.0}
  start_step = step
  try:
    tic, tic_step = time.perf_counter(), step
    order = data.epoch_order(config.seed, step // per_epoch, info.num_train)
    acc, count = update.zeros(state, train), 0
    mark = time.perf_counter()
    while step < last:
      # Calls end on multiples of steps_per_call, where every log, evaluation and checkpoint lands.
      n = min(calls_per - step % calls_per, last - step)
      saving = (step + n) % checkpoint_every == 0 or step + n == last
      profiler.before(step, n)
      state, acc, order = update.run(state, acc, train, order, num_steps=n, check_state=saving)
      step, count = step + n, count + n
      profiler.after(step, state)
      bar.update(n)
      if step % log_every == 0 or step % eval_every == 0 or saving:
        means = _means(acc, count, step, manager)  # raises at the first non-finite step
        means["train/steps_per_sec"] = (step - tic_step) / max(time.perf_counter() - tic, 1e-9)
        writer.write(step, means, console=False)
        acc, count, tic, tic_step = update.zeros(state, train), 0, time.perf_counter(), step
      if step % eval_every == 0 or step == num_steps:
        now = time.perf_counter()
        clock["train"] += now - mark
        results = {
          f"{name}/{k}": v
          for name, split in evals.items()
          for k, v in evaluate_split(
            evaluate_fn, state.params, eval_rng, split, config.eval_batch_size
          ).items()
        }
        mark = time.perf_counter()
        clock["eval"] += mark - now
        tic += mark - now  # steps/s counts training time only
        writer.write(step, {**results, "epoch": step / per_epoch}, console=True)
      if saving:
        checkpoint.save(manager, step, state, meta)
    jax.block_until_ready(state)
    clock["train"] += time.perf_counter() - mark
  finally:
    profiler.close()
    bar.close()
    writer.close()
    manager.wait_until_finished()
  if lead and step > start_step:
    print(
      f"steps {start_step}..{step}: {clock['train']:.1f} s training "
      f"({(step - start_step) / max(clock['train'], 1e-9):.1f} steps/s), "
      f"{clock['eval']:.1f} s evaluating"
    )
  return state
