"""Where metrics go: a compact console table, metrics.jsonl and TensorBoard events; and
provenance.json, what produced them."""

import datetime
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from typing import Mapping, Optional, Tuple

import jax
import jaxlib
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
PROVENANCE_FILE = "provenance.json"


def _format(value: float) -> str:
  if not math.isfinite(value):
    return str(value)
  return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


class MetricWriter:
  """Writes one record per call to every sink; `close()` flushes them.

  With several processes (jax.distributed) only process 0 writes: `active=False` elsewhere.
  """

  def __init__(
    self, workdir: str, console=sys.stdout, tensorboard: bool = True, active: bool = True, start_step: int = 0
  ):
    """Appends to <workdir>/metrics.jsonl; `start_step`: the step a resumed run continues from.

    Records after `start_step` that a crashed run left are dropped (`keep_metrics_through`),
    and TensorBoard is told to purge its events after that step too.
    """
    self._active = active
    if not active:
      return
    keep_metrics_through(workdir, start_step)
    self._jsonl_path = os.path.join(workdir, METRICS_FILE)
    self._jsonl = open(self._jsonl_path, "a", encoding="utf-8")
    self._tb = EventFile(os.path.join(workdir, "tensorboard"), purge_step=start_step) if tensorboard else None
    self._console = console
    self._header = None

  def write(self, step: int, metrics: Mapping[str, float], console: bool = True) -> None:
    """Appends {step, **metrics} to every sink (the console too if `console`)."""
    if not self._active:
      return
    metrics = {k: float(v) for k, v in sorted(metrics.items())}
    try:
      self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
      self._jsonl.flush()
      if self._tb is not None:
        self._tb.write(step, metrics)
    except OSError as e:  # a full disk, a lost mount: one line, not a traceback
      reason = e.strerror or e
      raise OSError(f"writing the metrics of step {step} to {self._jsonl_path} failed ({reason})") from None
    if console and self._console is not None:
      self._print_row(step, metrics)

  def _print_row(self, step, metrics):
    keys = tuple(metrics)
    widths = [max(len(k), 10) for k in keys]
    # tqdm.write keeps a running progress bar below the table instead of breaking it.
    if keys != self._header:
      self._header = keys
      tqdm.write(f"{'step':>8}  " + "  ".join(f"{k:>{w}}" for k, w in zip(keys, widths)), file=self._console)
    tqdm.write(
      f"{step:>8}  " + "  ".join(f"{_format(metrics[k]):>{w}}" for k, w in zip(keys, widths)),
      file=self._console,
    )

  def close(self) -> None:
    """Flushes and closes the files."""
    if not self._active:
      return
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


class EventFile:
  """TensorBoard scalars, written and flushed synchronously by the caller.

  tensorboardX's SummaryWriter writes from a background thread: a full disk kills that
  thread with a traceback, its bounded queue then fills and the run hangs in `add_scalar`.
  Written here, the same failure is an OSError in the loop, reported in one line.
  """

  def __init__(self, folder: str, purge_step: int = 0):
    """Opens a new events file in `folder`; `purge_step` > 0 (a resumed run) tells TensorBoard
    to hide the events of steps >= purge_step that earlier files hold."""
    os.makedirs(folder, exist_ok=True)
    self._events = EventsWriter(os.path.join(folder, "events"))
    if purge_step:
      self._events.write_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))
    self._events.flush()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """One scalar event per (name, value) at `step`, flushed to disk."""
    for name, value in scalars.items():
      event = Event(wall_time=time.time(), step=step, summary=tb_summary.scalar(name, value))
      self._events.write_event(event)
    self._events.flush()

  def close(self) -> None:
    self._events.close()


def read_metrics(workdir: str) -> list:
  """The records of <workdir>/metrics.jsonl, in order.

  A last line cut short (a run killed mid-write) is left out; the next run on the workdir
  removes it from the file (`keep_metrics_through`). A malformed line before the last is a
  one-line ValueError naming it.
  """
  with open(os.path.join(workdir, METRICS_FILE), encoding="utf-8") as f:
    return _parse(f.read().splitlines(), os.path.join(workdir, METRICS_FILE))


def _parse(lines, path: str) -> list:
  """The JSON records of `lines`; the last one may be truncated and is then dropped."""
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if number == len(lines):
        break
      raise ValueError(f"{path} line {number} is not JSON: {line[:80]!r}") from None
  return records


def keep_metrics_through(workdir: str, step: int) -> None:
  """Rewrites metrics.jsonl (atomically) with only the records of steps <= `step`.

  The one rule for a resumed run: it continues from its restored checkpoint's step, so the
  records a crashed run wrote after that step are dropped and are written again by the
  replayed steps. Steps never repeat a record or go backwards; a truncated last line goes too.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return
  records = [r for r in read_metrics(workdir) if r["step"] <= step]
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  os.replace(temporary, path)


def provenance(start_step: int) -> dict:
  """What is producing a run now: bnnjax (and its git commit), jax, devices, python, host, time."""
  import bnnjax  # pylint: disable=import-outside-toplevel  (bnnjax imports this module)

  commit, dirty = git_commit(os.path.dirname(os.path.abspath(bnnjax.__file__)))
  devices = jax.devices()
  return {
    "start_step": start_step,
    "bnnjax": bnnjax.__version__,
    "git_commit": commit,
    "git_dirty": dirty,
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "devices": {
      "platform": devices[0].platform,
      "count": len(devices),
      "kinds": sorted({d.device_kind for d in devices}),
      "process_count": jax.process_count(),
    },
    "python": platform.python_version(),
    "host": socket.gethostname(),
    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def git_commit(folder: str) -> Tuple[Optional[str], Optional[bool]]:
  """(HEAD commit, whether tracked files differ from it) of the git checkout holding `folder`.

  (None, None) where it is not in a git checkout (an installed package) or git is missing.
  """

  def git(*args):
    return subprocess.run(
      ["git", "-C", folder, *args], capture_output=True, text=True, timeout=20, check=True
    ).stdout.strip()

  try:
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return None, None
  return commit, dirty


def append_provenance(workdir: str, start_step: int) -> None:
  """Appends this fit's `provenance` to <workdir>/provenance.json (a list, one entry per fit)."""
  path = os.path.join(workdir, PROVENANCE_FILE)
  entries = []
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        entries = list(json.load(f))
    except (ValueError, TypeError):
      entries = []  # a file cut short by a crash: start it again
  entries.append(provenance(start_step))
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "w", encoding="utf-8") as f:
    json.dump(entries, f, indent=2)
  os.replace(temporary, path)
