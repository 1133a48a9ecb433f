"""Where metrics go: a compact console table, metrics.jsonl and TensorBoard events."""
import json
import math
import os
import sys
from typing import Mapping

from tensorboardX import SummaryWriter
from tqdm.auto import tqdm


def _format(value: float) -> str:
  if not math.isfinite(value):
    return str(value)
  return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


class MetricWriter:
  """Writes one record per call to every sink; `close()` flushes them.

  With several processes (jax.distributed) only process 0 writes: `active=False` elsewhere.
  """

  def __init__(self, workdir: str, console=sys.stdout, tensorboard: bool = True, active: bool = True):
    self._active = active
    if not active:
      return
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if tensorboard else None
    self._console = console
    self._header = None

  def write(self, step: int, metrics: Mapping[str, float], console: bool = True) -> None:
    """Appends {step, **metrics} to every sink (the console too if `console`)."""
    if not self._active:
      return
    metrics = {k: float(v) for k, v in sorted(metrics.items())}
    self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for key, value in metrics.items():
        self._tb.add_scalar(key, value, step)
      self._tb.flush()
    if console and self._console is not None:
      self._print_row(step, metrics)

  def _print_row(self, step, metrics):
    keys = tuple(metrics)
    widths = [max(len(k), 10) for k in keys]
    # tqdm.write keeps a running progress bar below the table instead of breaking it.
    if keys != self._header:
      self._header = keys
      tqdm.write(f"{'step':>8}  " + "  ".join(f"{k:>{w}}" for k, w in zip(keys, widths)),
                 file=self._console)
    tqdm.write(f"{step:>8}  " + "  ".join(f"{_format(metrics[k]):>{w}}" for k, w in zip(keys, widths)),
               file=self._console)

  def close(self) -> None:
    """Flushes and closes the files."""
    if not self._active:
      return
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list:
  """The records of metrics.jsonl, in order."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
