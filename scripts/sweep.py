r"""Runs every point of a config file's get_sweep(), one workdir each, and tabulates them.

  python scripts/sweep.py --config=configs/bayes_mnist.py --workdir=runs/bayes_sweep
  python scripts/sweep.py --config=configs/bayes_mnist.py --workdir=runs/bayes_sweep --index=3

get_sweep() returns a list of {dotted field: value} overrides (see bnnjax.config.product).
Points run one after another in this process; --index runs one point, so a job array
(SLURM, submitit) can run them in parallel. Re-running resumes each point's checkpoint.
A point that fails is reported and the others still run.
"""
import json
import os
import re

from absl import app, flags, logging

from bnnjax import config as config_lib
from bnnjax import train, writers

_CONFIG = flags.DEFINE_string("config", None, "Config file with get_config() and get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory: one sub-directory per point.")
_INDEX = flags.DEFINE_integer("index", -1, "Run only this point (-1: all).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Extra field=value for every point, e.g. "
                                       "--set=num_steps=200 (a JSON value or a string).")
flags.mark_flags_as_required(["config", "workdir"])


def point_name(index: int, overrides: dict) -> str:
  """A readable directory name: 03-estimator=flipout-lr=0.003."""
  parts = [f"{key.split('.')[-1]}={value}" for key, value in overrides.items()]
  return re.sub(r"[^A-Za-z0-9=.,_+-]", "_", "-".join([f"{index:02d}", *parts]))


def parse_sets(items) -> dict:
  overrides = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"--set expects field=value, got {item!r}")
    try:
      overrides[key] = json.loads(text)
    except json.JSONDecodeError:
      overrides[key] = text
  return overrides


def point_config(config, point: dict, extra: dict, index: int):
  """The resolved config of sweep point `index`; a ValueError names the point and the field."""
  try:
    config = config_lib.with_overrides(config, point)
  except ValueError as e:
    raise ValueError(f"get_sweep()[{index}]: {e}") from None
  try:
    return config_lib.with_overrides(config, extra)
  except ValueError as e:
    raise ValueError(f"--set: {e}") from None


def final_metrics(workdir: str) -> dict:
  evals = [r for r in writers.read_metrics(workdir) if "epoch" in r]
  return evals[-1] if evals else {}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    module = config_lib.load_config_file(_CONFIG.value)
    if not hasattr(module, "get_sweep"):
      raise ValueError(f"{_CONFIG.value} has no get_sweep()")
    points = module.get_sweep()
    extra = parse_sets(_OVERRIDES.value)
    if not -1 <= _INDEX.value < len(points):
      raise ValueError(f"--index={_INDEX.value} but the sweep has {len(points)} points")
    # Every point resolved before any runs: a misspelt field fails the sweep, not each point.
    configs = [point_config(module.get_config(), point, extra, i) for i, point in enumerate(points)]
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  chosen = range(len(points)) if _INDEX.value < 0 else [_INDEX.value]
  summary = []
  for i in chosen:
    workdir = os.path.join(_WORKDIR.value, point_name(i, points[i]))
    print(f"== point {i}: {points[i]} -> {workdir}", flush=True)
    row = {"index": i, "overrides": points[i], "workdir": workdir}
    try:
      train.fit(configs[i], workdir)
      row["final"] = final_metrics(workdir)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
      row["error"] = str(e)
      print(f"error in point {i}: {e}", flush=True)
    summary.append(row)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, "sweep.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  for row in summary:
    result = row.get("error") or {k: round(v, 4) for k, v in row["final"].items()
                                   if k.startswith("test/")}
    print(f"{row['index']:>3}  {row['overrides']}  {result}")
  if any("error" in row for row in summary):
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
