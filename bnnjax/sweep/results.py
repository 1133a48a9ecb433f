"""A sweep's results on disk: one result.json per run, and the tables assembled from them.

    <sweep>/<run name>/result.json   written by the run itself when it ends (finished or failed)
    <sweep>/sweep.json, sweep.md, sweep.csv   assembled from whatever result.json files exist

Assembling reads every run's result afresh, so runs of a job array, parallel processes or
a re-run each add theirs and none is lost. A point run with several seeds is one table row:
each metric as mean ± sample standard deviation (ddof=1) over its finished seeds, and n.
"""

import contextlib
import csv
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import filelock
import numpy as np

from bnnjax import checkpoint
from bnnjax.sweep.points import Trial

RESULT_FILE = "result.json"
FINISHED, FAILED, PENDING, RUNNING = "finished", "failed", "pending", "running"
# The final evaluation record's bookkeeping, not metrics.
_NOT_METRICS = ("step", "epoch")


def trial_dir(sweep_dir: str, trial: Trial) -> str:
  """The run's own workdir inside the sweep's directory."""
  return os.path.join(sweep_dir, trial.name)


def write_json(path: str, value: Any) -> None:
  """Writes `value` as JSON through a temporary file and a rename: readers see all or nothing."""
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
  os.replace(temporary, path)


def write_text(path: str, text: str) -> None:
  """Writes `text` through a temporary file and a rename."""
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  os.replace(temporary, path)


def make_record(
  trial: Trial,
  workdir: str,
  status: str,
  error: Optional[str] = None,
  final: Optional[Dict[str, float]] = None,
  elapsed_s: float = 0.0,
) -> dict:
  """What result.json holds for one run (the config too, so a changed sweep is not skipped)."""
  return {
    "index": trial.index,
    "point": trial.point,
    "seed": trial.seed,
    "overrides": trial.overrides,
    "name": trial.name,
    "workdir": workdir,
    "status": status,
    "error": error,
    "final": final or {},
    "elapsed_s": round(elapsed_s, 2),
    "config": checkpoint.config_to_json(trial.config),
  }


def read_result(workdir: str) -> Optional[dict]:
  """The run's result.json, or None if it has none (yet) or it cannot be read."""
  try:
    with open(os.path.join(workdir, RESULT_FILE), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def is_finished(sweep_dir: str, trial: Trial) -> bool:
  """Whether the run finished before with this very config (then a re-run skips it)."""
  result = read_result(trial_dir(sweep_dir, trial))
  return bool(
    result
    and result["status"] == FINISHED
    and result.get("config") == checkpoint.config_to_json(trial.config)
  )


def collect(sweep_dir: str, trials: Sequence[Trial]) -> List[dict]:
  """One row per run: its result.json without the config, or a pending row if it has none."""
  rows = []
  for trial in trials:
    workdir = trial_dir(sweep_dir, trial)
    result = read_result(workdir)
    if result is None or result.get("config") != checkpoint.config_to_json(trial.config):
      result = make_record(trial, workdir, PENDING)
    rows.append({k: v for k, v in result.items() if k != "config"})
  return rows


def _mean_std(values: Sequence[float]) -> Dict[str, float]:
  """{"mean", "std", "n"}; std is the sample standard deviation (None for one value)."""
  values = np.asarray(values, np.float64)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def aggregate(rows: Sequence[dict]) -> List[dict]:
  """One entry per point: its overrides, run counts by status, and each metric's mean ± std.

  Only finished runs count towards the metrics; a failed run is listed with its error.
  """
  points = {}
  for row in rows:
    entry = points.setdefault(
      row["point"],
      {
        "point": row["point"],
        "overrides": row["overrides"],
        "seeds": [],
        "counts": {},
        "errors": [],
        "values": {},
      },
    )
    entry["seeds"].append(row["seed"])
    entry["counts"][row["status"]] = entry["counts"].get(row["status"], 0) + 1
    if row["status"] == FAILED:
      entry["errors"].append({"seed": row["seed"], "error": row["error"]})
    if row["status"] == FINISHED:
      for key, value in row["final"].items():
        if key not in _NOT_METRICS:
          entry["values"].setdefault(key, []).append(value)
  out = []
  for entry in points.values():
    values = entry.pop("values")
    entry["n"] = entry["counts"].get(FINISHED, 0)
    entry["metrics"] = {key: _mean_std(v) for key, v in sorted(values.items())}
    out.append(entry)
  return out


def _cell(stats: Optional[dict]) -> str:
  """ "0.9512 ± 0.0031" (or the value alone for n = 1, "-" for none)."""
  if not stats:
    return "-"
  if stats["std"] is None:
    return f"{stats['mean']:.4g}"
  return f"{stats['mean']:.4g} ± {stats['std']:.2g}"


def _status(counts: Dict[str, int]) -> str:
  return ", ".join(f"{counts[s]} {s}" for s in (FINISHED, FAILED, RUNNING, PENDING) if counts.get(s))


def _axes(points: Sequence[dict]) -> List[str]:
  axes = []
  for entry in points:
    axes += [key for key in entry["overrides"] if key not in axes]
  return axes


def _metric_names(points: Sequence[dict]) -> List[str]:
  return sorted({key for entry in points for key in entry["metrics"]})


def markdown(points: Sequence[dict]) -> str:
  """The Markdown table of `aggregate`'s points, then one line per failed run."""
  axes, metrics = _axes(points), _metric_names(points)
  header = ["point", *axes, "n", "runs", *metrics]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for entry in points:
    cells = [
      str(entry["point"]),
      *(json.dumps(entry["overrides"].get(a, "")) for a in axes),
      str(entry["n"]),
      _status(entry["counts"]),
      *(_cell(entry["metrics"].get(m)) for m in metrics),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  seeded = any(seed is not None for entry in points for seed in entry["seeds"])
  if seeded:
    lines += ["", "Each metric: mean ± sample standard deviation over the n finished seeds."]
  failures = [(entry["point"], e) for entry in points for e in entry["errors"]]
  if failures:
    lines.append("")
    lines += [
      f"- point {p}" + (f" seed {e['seed']}" if e["seed"] is not None else "") + f" failed: {e['error']}"
      for p, e in failures
    ]
  return "\n".join(lines) + "\n"


def to_csv(points: Sequence[dict]) -> str:
  """One CSV row per point: axes, n, run counts, <metric>_mean and <metric>_std."""
  axes, metrics = _axes(points), _metric_names(points)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["point", *axes, "n", "failed", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
  for entry in points:
    stats = [entry["metrics"].get(m, {}) for m in metrics]
    writer.writerow(
      [
        entry["point"],
        *(json.dumps(entry["overrides"].get(a, "")) for a in axes),
        entry["n"],
        entry["counts"].get(FAILED, 0),
        *("" if not s or s[k] is None else repr(s[k]) for s in stats for k in ("mean", "std")),
      ]
    )
  return out.getvalue()


def write_tables(sweep_dir: str, trials: Sequence[Trial], running: Sequence[int] = ()) -> str:
  """Assembles sweep.json, sweep.md and sweep.csv from the result files there are; returns the table.

  Args:
    sweep_dir: the sweep's directory.
    trials: every run of the sweep (its rows are pending until their result.json exists).
    running: indices of runs this process found running elsewhere (marked so, not pending).
  """
  os.makedirs(sweep_dir, exist_ok=True)
  # Assemblers in other processes may finish at the same moment: one at a time, each
  # reading every result afresh, so the last one written is never missing a result.
  with _assembly_lock(sweep_dir):
    rows = collect(sweep_dir, trials)
    for row in rows:
      if row["index"] in running and row["status"] == PENDING:
        row["status"] = RUNNING
    points = aggregate(rows)
    table = markdown(points)
    write_json(os.path.join(sweep_dir, "sweep.json"), {"runs": rows, "points": points})
    write_text(os.path.join(sweep_dir, "sweep.md"), table)
    write_text(os.path.join(sweep_dir, "sweep.csv"), to_csv(points))
  return table


@contextlib.contextmanager
def _assembly_lock(sweep_dir: str):
  """The sweep directory's table lock (waits up to a minute for another assembler)."""
  lock = filelock.FileLock(os.path.join(sweep_dir, "sweep.lock"), timeout=60)
  try:
    lock.acquire()
  except filelock.Timeout:
    raise ValueError(
      f"{sweep_dir}/sweep.lock stayed held for a minute; is another sweep assembling its tables there?"
    ) from None
  try:
    yield
  finally:
    lock.release()
