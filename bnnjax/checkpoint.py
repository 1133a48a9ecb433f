"""Orbax checkpoints of a TrainState: arrays plus plain JSON metadata, never pickle.

Each step directory holds `state` (the TrainState arrays) and `meta` (JSON: model name,
the resolved config). Orbax writes to a temporary directory and renames it when complete,
so a run that dies mid-save keeps its previous checkpoint.

A running fit holds `workdir_lock`: an fcntl lock the OS drops when the process dies, so a
second run on the same workdir is refused while no killed run leaves a stale lock behind.
"""

import contextlib
import datetime
import gc
import hashlib
import io
import json
import logging
import os
import socket
import sys
import time
from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple

import filelock
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bnnjax.task import DataInfo

CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "run.lock"  # the holder's host and pid are in run.lock.json beside it
CHECKSUMS = "checksums"  # the meta item's key of the state's array checksums


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: another model, or every step unreadable."""


class WorkdirBusy(CheckpointError):
  """The workdir's lock is held by another run."""


class CorruptCheckpoint(Exception):
  """A step whose arrays do not match the checksums saved with them (treated as unreadable)."""


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
    raise WorkdirBusy(
      f"workdir {workdir} is in use by another run ({_holder(path)}); wait "
      "for it to end or use another --workdir"
    ) from None
  except OSError as e:
    raise CheckpointError(f"cannot lock workdir {workdir}: {path}: {e.strerror or e}") from None
  try:
    _write_json_atomic(
      path + ".json",
      {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      },
    )
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
  """Saves synchronously (the loop donates its state buffers on the next step), with the
  checksums of the state's arrays in the meta item."""
  meta = {**meta, CHECKSUMS: checksums(state)}
  # When a write fails, TensorStore's callbacks print tracebacks ("Event loop is closed")
  # straight to stderr: held until the save is known to have succeeded, then passed on.
  held = io.StringIO()
  try:
    with _quiet_orbax(), contextlib.redirect_stderr(held):  # orbax logs each failing thread's traceback
      manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
      )
      manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except  (a full disk, a lost mount)
    error = CheckpointError(f"saving checkpoint step {step} in {manager.directory} failed ({_reason(e)})")
  else:
    sys.stderr.write(held.getvalue())
    return
  with contextlib.redirect_stderr(held):
    _settle_failed_save(manager)
  latest = manager.latest_step()
  kept = "none was saved" if latest is None else f"step {latest} is kept"
  raise CheckpointError(f"{error}; the last good checkpoint: {kept}")


def _settle_failed_save(manager: ocp.CheckpointManager) -> None:
  """Lets the save's other threads and writes end while quiet: each would print its own
  traceback (absl's signalling threads, asyncio's unretrieved tasks) after the one line that
  says what failed."""
  with _quiet_orbax():
    try:
      manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except  (the same failure, already reported)
      pass
    gc.collect()


def _path_name(path) -> str:
  """ "params/mlp/~/linear_0/w": a leaf's path whether its containers are NamedTuples,
  tuples, lists or dicts (a saved tree comes back with dicts where the state had tuples)."""
  names = []
  for key in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        names.append(str(getattr(key, attribute)))
        break
    else:
      names.append(str(key))
  return "/".join(names)


def checksums(state: Any) -> Dict[str, str]:
  """{path: sha256 of the array's bytes} for every array of `state` (this process's copy).

  Stored in the meta item at save (where the array files' own bytes are not yet known) and
  recomputed from what a restore read: any byte of the files that changes a value, a
  silently flipped one included, changes its checksum.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if isinstance(leaf, jax.Array):
      if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      leaf = leaf.addressable_data(0)
    data = np.ascontiguousarray(np.asarray(leaf))
    out[_path_name(path)] = hashlib.sha256(data.tobytes()).hexdigest()
  return out


def verify(state: Any, meta: Optional[dict], where: str) -> None:
  """A CorruptCheckpoint naming the first array whose bytes differ from what was saved.

  A checkpoint written before checksums existed (no CHECKSUMS in its meta) passes.
  """
  expected = (meta or {}).get(CHECKSUMS)
  if not expected:
    return
  got = checksums(state)
  for name in sorted(set(expected) | set(got)):
    if expected.get(name) != got.get(name):
      raise CorruptCheckpoint(f"checksum mismatch in {name}: {where} does not hold what was saved")


def _shapes(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(
    tree, is_leaf=lambda x: hasattr(x, "shape") and not isinstance(x, dict)
  )[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


def check_compatible(saved_params, expected_params, where: str) -> None:
  """Raises CheckpointError naming the first parameter that differs."""
  saved, expected = _shapes(saved_params), _shapes(expected_params)
  for name in sorted(set(saved) | set(expected)):
    if saved.get(name) != expected.get(name):
      raise CheckpointError(
        f"checkpoint {where} holds another model: parameter {name} has shape "
        f"{saved.get(name, 'missing')} there, this config expects {expected.get(name, 'missing')}"
      )


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves an unreadable step out of the manager's way, keeping it for inspection; returns where.

  With several processes, process 0 moves it and the others wait for it.
  """
  source = os.path.join(str(manager.directory), str(step))
  aside = os.path.join(os.path.dirname(str(manager.directory)), "unreadable_checkpoints")
  target = os.path.join(aside, f"{step}-{int(time.time())}")
  if jax.process_index() == 0:
    os.makedirs(aside, exist_ok=True)
    os.replace(source, target)
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(f"bnnjax_set_aside_{step}")
  return aside


def _reason(error: BaseException, limit: int = 160) -> str:
  """An exception in one short line: TensorStore's errors run to pages of JSON specs."""
  text = " ".join(str(error).split())
  text = text if len(text) <= limit else text[:limit] + " ..."
  return f"{error.__class__.__name__}: {text}"


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
  """Silences orbax's, absl's and asyncio's log lines while a doubtful step is tried.

  asyncio is among them because orbax reads with `run_until_complete` and closes the loop
  without awaiting the other reads: those that failed too print "Task exception was never
  retrieved" with a page of TensorStore spec whenever the garbage collector finds them.
  """
  loggers = [logging.getLogger(name) for name in ("absl", "orbax", "orbax.checkpoint", "asyncio")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def _collect_failed_io() -> None:
  """Collects the reads that a failed restore left to orbax now, while quiet (see `_quiet_orbax`)."""
  with _quiet_orbax():
    gc.collect()


def restore(manager: ocp.CheckpointManager, target_state: Any) -> Optional[Tuple[Any, int]]:
  """The newest readable checkpoint as a state like `target_state` (its shardings too), or None.

  A step that cannot be read (a corrupt or truncated file, or arrays that fail their
  checksums) is set aside, one warning line each, and the previous one is tried; a line
  names the step used. A checkpoint of another model is an error.
  """
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
  errors = {}
  for step in sorted(manager.all_steps(), reverse=True):
    where = os.path.join(str(manager.directory), str(step))
    try:
      with _quiet_orbax():
        saved = manager.item_metadata(step)["state"].tree
        check_compatible(saved["params"], target_state.params, where)
        restored = manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )
        verify(restored.state, restored.meta, where)
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      errors[step] = _reason(e)
    if step in errors:
      _collect_failed_io()
      continue
    # Only once a readable step is found: unreadable ones stay put if none is (a disk that
    # is back later still has them), and the error below names each.
    for bad_step, reason in errors.items():
      aside = _set_aside(manager, bad_step)
      logging.warning("checkpoint step %d is unreadable (%s); moved to %s", bad_step, reason, aside)
    manager.reload()
    if errors:
      logging.warning(
        "resuming from checkpoint step %d in %s, the newest readable one", step, manager.directory
      )
    return restored.state, step
  if errors:
    raise CheckpointError(
      f"no readable checkpoint in {manager.directory}: "
      + "; ".join(f"step {s}: {r}" for s, r in errors.items())
    )
  return None


def _local_target(manager: ocp.CheckpointManager, step: int):
  """The saved tree as arrays on this process's first device, whatever topology wrote it."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  saved = manager.item_metadata(step)["state"].tree
  return jax.tree_util.tree_map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
    saved,
    is_leaf=lambda m: hasattr(m, "shape") and not isinstance(m, dict),
  )


class Restored(NamedTuple):
  """A run's checkpoint as read from disk; `bnnjax.load` builds a `bnnjax.Run` from it."""

  params: Any
  config: ml_collections.ConfigDict
  info: DataInfo  # the data the model was built for (input shape, classes, N)
  step: Optional[int] = None  # the checkpoint step read


def restore_run(workdir: str, step: Optional[int] = None) -> Restored:
  """The newest readable checkpoint of a finished or running run (or the given step).

  A newer step that cannot be read (or fails its checksums) is skipped with one warning
  line naming it and the step used instead; nothing is moved (the run may be live).
  """
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
      with _quiet_orbax():
        restored = manager.restore(
          s,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_local_target(manager, s)), meta=ocp.args.JsonRestore()
          ),
        )
        verify(restored.state, restored.meta, os.path.join(directory, str(s)))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"step {s}: {_reason(e)}")
      restored = None
    if restored is None:
      _collect_failed_io()
      continue
    if errors:
      logging.warning("using checkpoint step %d of %s, not the newest: %s", s, directory, "; ".join(errors))
    meta = restored.meta
    info = meta["data_info"]
    info = DataInfo(**{**info, "input_shape": tuple(info["input_shape"])})
    return Restored(restored.state["params"], ml_collections.ConfigDict(meta["config"]), info, s)
  raise CheckpointError(f"no readable checkpoint in {directory}: " + "; ".join(errors))


def restore_params(workdir: str, step: Optional[int] = None) -> Tuple[Any, ml_collections.ConfigDict]:
  """(params, config) of a run, for initialising or comparing with another model."""
  run = restore_run(workdir, step)
  return run.params, run.config


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON types (tuples become lists), as config.json holds it."""
  return json.loads(config.to_json_best_effort())
