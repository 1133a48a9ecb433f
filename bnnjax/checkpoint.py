"""Orbax checkpoints of a TrainState: arrays plus plain JSON metadata, never pickle.

Each step directory holds `state` (the TrainState arrays) and `meta` (JSON: model name,
the resolved config). Orbax writes to a temporary directory and renames it when complete,
so a run that dies mid-save keeps its previous checkpoint.

A running fit holds `workdir_lock`: an fcntl lock the OS drops when the process dies, so a
second run on the same workdir is refused while no killed run leaves a stale lock behind.
"""
import contextlib
import datetime
import json
import logging
import os
import socket
import time
from typing import Any, Iterator, NamedTuple, Optional, Tuple

import filelock
import jax
import ml_collections
import orbax.checkpoint as ocp

from bnnjax.task import DataInfo

CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "run.lock"  # the holder's host and pid are in run.lock.json beside it


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: another model, or every step unreadable."""


class WorkdirBusy(CheckpointError):
  """The workdir's lock is held by another run."""


@contextlib.contextmanager
def workdir_lock(workdir: str, active: bool = True) -> Iterator[None]:
  """Holds <workdir>/run.lock for the block; `active=False` (processes other than 0) skips it.

  Raises:
    WorkdirBusy: another live process holds it; the one line names its host and pid.
    CheckpointError: the lock file cannot be opened (a directory, not ours to write).
  """
  if not active:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  lock = filelock.FileLock(path, timeout=0)
  try:
    lock.acquire()
  except filelock.Timeout:
    raise WorkdirBusy(f"workdir {workdir} is in use by another run ({_holder(path)}); wait "
                      "for it to end or use another --workdir") from None
  except OSError as e:
    raise CheckpointError(f"cannot lock workdir {workdir}: {path}: {e.strerror or e}") from None
  try:
    _write_json_atomic(path + ".json", {
        "host": socket.gethostname(), "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    yield
  finally:
    with contextlib.suppress(OSError):
      os.remove(path + ".json")
    lock.release()


def _holder(path: str) -> str:
  """'host H, pid P, since T' from the holder record beside the lock, or why it is unknown."""
  try:
    with open(path + ".json", encoding="utf-8") as f:
      record = json.load(f)
    return f"host {record['host']}, pid {record['pid']}, since {record['started']}"
  except (OSError, ValueError, KeyError, TypeError):
    return f"holder unknown: {path}.json unreadable"


def _write_json_atomic(path: str, value: Any) -> None:
  """Writes `value` as JSON to path through a temporary file and a rename."""
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
  os.replace(temporary, path)


def make_manager(workdir: str, max_to_keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
  """The orbax manager of <workdir>/checkpoints: a `state` item (arrays) and a `meta` item (JSON)."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
  handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  """Saves synchronously: the loop donates its state buffers on the next step."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)), force=True)
  manager.wait_until_finished()


def _shapes(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and not isinstance(x, dict))[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


def check_compatible(saved_params, expected_params, where: str) -> None:
  """Raises CheckpointError naming the first parameter that differs."""
  saved, expected = _shapes(saved_params), _shapes(expected_params)
  for name in sorted(set(saved) | set(expected)):
    if saved.get(name) != expected.get(name):
      raise CheckpointError(
          f"checkpoint {where} holds another model: parameter {name} has shape "
          f"{saved.get(name, 'missing')} there, this config expects {expected.get(name, 'missing')}")


def _set_aside(manager: ocp.CheckpointManager, step: int) -> None:
  """Moves an unreadable step out of the manager's way, keeping it for inspection."""
  source = os.path.join(str(manager.directory), str(step))
  aside = os.path.join(os.path.dirname(str(manager.directory)), "unreadable_checkpoints")
  os.makedirs(aside, exist_ok=True)
  os.replace(source, os.path.join(aside, f"{step}-{int(time.time())}"))
  logging.warning("moved unreadable checkpoint %s to %s", source, aside)


def restore(manager: ocp.CheckpointManager, target_state: Any) -> Optional[Tuple[Any, int]]:
  """The newest readable checkpoint as a state shaped like `target_state`, or None.

  A step that cannot be read (a corrupt or truncated file) is set aside with a warning
  and the previous one is tried; a checkpoint of another model is an error.
  """
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
  errors = []
  for step in sorted(manager.all_steps(), reverse=True):
    where = os.path.join(str(manager.directory), str(step))
    try:
      saved = manager.item_metadata(step)["state"].tree
      check_compatible(saved["params"], target_state.params, where)
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"step {step}: {e.__class__.__name__}: {e}")
      logging.warning("unreadable checkpoint %s: %s", where, e)
      continue
    for bad_step in [s for s in manager.all_steps() if s > step]:
      _set_aside(manager, bad_step)
    manager.reload()
    return restored.state, step
  if errors:
    raise CheckpointError(f"no readable checkpoint in {manager.directory}: " + "; ".join(errors))
  return None


def _local_target(manager: ocp.CheckpointManager, step: int):
  """The saved tree as arrays on this process's first device, whatever topology wrote it."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  saved = manager.item_metadata(step)["state"].tree
  return jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved,
      is_leaf=lambda m: hasattr(m, "shape") and not isinstance(m, dict))


class Restored(NamedTuple):
  """A run's checkpoint as read from disk; `bnnjax.load` builds a `bnnjax.Run` from it."""
  params: Any
  config: ml_collections.ConfigDict
  info: DataInfo  # the data the model was built for (input shape, classes, N)


def restore_run(workdir: str, step: Optional[int] = None) -> Restored:
  """The newest readable checkpoint of a finished or running run (or the given step)."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise CheckpointError(f"no checkpoints in {workdir} (looked for {directory})")
  manager = make_manager(workdir, create=False)
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f"no checkpoints in {directory}")
  errors = []
  for s in steps:
    try:
      restored = manager.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_local_target(manager, s)), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"step {s}: {e.__class__.__name__}: {e}")
      continue
    meta = restored.meta
    info = meta["data_info"]
    info = DataInfo(**{**info, "input_shape": tuple(info["input_shape"])})
    return Restored(restored.state["params"], ml_collections.ConfigDict(meta["config"]), info)
  raise CheckpointError(f"no readable checkpoint in {directory}: " + "; ".join(errors))


def restore_params(workdir: str, step: Optional[int] = None) -> Tuple[Any, ml_collections.ConfigDict]:
  """(params, config) of a run, for initialising or comparing with another model."""
  run = restore_run(workdir, step)
  return run.params, run.config


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON types (tuples become lists), as config.json holds it."""
  return json.loads(config.to_json_best_effort())
