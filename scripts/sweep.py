r"""Runs every point of a config file's get_sweep(), one workdir each, and tabulates them.

  python scripts/sweep.py --config=configs/mlp_digits.py --workdir=runs/sweep --seeds=0,1,2
  python scripts/sweep.py ... --parallel=2                  # two local processes
  python scripts/sweep.py ... --index=$SLURM_ARRAY_TASK_ID  # one run: a job array's task
  python scripts/sweep.py ... --launcher=slurm --partition=gpu --time=120 --gpus=1

get_sweep() returns a list of {dotted field: value} overrides (see bnnjax.config.product);
--seeds runs each point once per config.seed. Each run writes <workdir>/<run>/result.json;
sweep.json, sweep.md and sweep.csv are assembled from whatever results exist (mean ± std
over seeds, and n). A failing run is recorded with its error and the others go on; running
the sweep again skips finished runs and resumes the others from their checkpoints.
"""

from absl import app, flags, logging

from bnnjax import config as config_lib
from bnnjax import sweep

_CONFIG = flags.DEFINE_string("config", None, "Config file with get_config() and get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory: one sub-directory per run.")
_INDEX = flags.DEFINE_integer("index", -1, "Run only this run (points x seeds, point-major; -1: all).")
_OVERRIDES = flags.DEFINE_multi_string(
  "set", [], "Extra field=value for every point, e.g. --set=num_steps=200 (a JSON value or a string)."
)
_SEEDS = flags.DEFINE_string(
  "seeds",
  "",
  "Comma-separated config.seed values to run each point with, e.g. 0,1,2; empty: each point once, as it is.",
)
_LAUNCHER = flags.DEFINE_string(
  "launcher",
  "local",
  "local (this machine), slurm (a submitit job array) or local_submitit (the same, on this machine).",
)
_PARALLEL = flags.DEFINE_integer(
  "parallel", 1, "Runs at once: local processes, or the job array's parallelism."
)
_PARTITION = flags.DEFINE_string("partition", "", "SLURM partition (empty: the default).")
_TIME = flags.DEFINE_integer("time", 60, "Time limit of each submitted job, in minutes.")
_GPUS = flags.DEFINE_integer("gpus", 0, "GPUs per submitted job.")
_COLLECT = flags.DEFINE_bool("collect", False, "Only assemble the tables from the results there are.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    module = config_lib.load_config_file(_CONFIG.value)
    if not callable(getattr(module, "get_sweep", None)):
      raise ValueError(f"{_CONFIG.value} has no get_sweep()")
    # Every run resolved before any starts: a misspelt field fails the sweep, not each run.
    trials = sweep.make_trials(
      module.get_config(),
      module.get_sweep(),
      sweep.parse_sets(_OVERRIDES.value),
      sweep.parse_seeds(_SEEDS.value),
    )
    sweep.check_launch(_LAUNCHER.value, _PARALLEL.value, _INDEX.value, trials)
    if _COLLECT.value:
      print(sweep.write_tables(_WORKDIR.value, trials), end="")
      return
    records = sweep.launch(
      trials,
      _WORKDIR.value,
      _INDEX.value,
      _LAUNCHER.value,
      _PARALLEL.value,
      _PARTITION.value,
      _TIME.value,
      _GPUS.value,
    )
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  if any(r["status"] == "submitted" for r in records):
    print(
      f"submitted {len(records)} jobs ({', '.join(r['job'] for r in records)}); the tables "
      f"in {_WORKDIR.value} grow as they end (--collect re-assembles them)"
    )
  else:
    with open(f"{_WORKDIR.value}/sweep.md", encoding="utf-8") as f:
      print(f.read(), end="")
  if any(r["status"] == "failed" for r in records):
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
