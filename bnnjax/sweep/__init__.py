"""Sweeps: each get_sweep() point (times a seeds axis) in its own workdir, tabulated.

    trials = sweep.make_trials(module.get_config(), module.get_sweep(), seeds=(0, 1, 2))
    sweep.launch(trials, "runs/sweep", parallel=2)   # or launcher="slurm", index=i, ...

Each run writes <sweep>/<run>/result.json; sweep.json, sweep.md and sweep.csv are
assembled from whatever results exist, so job-array tasks, parallel processes and re-runs
all add to the same tables. See points, results and launchers.
"""

from bnnjax.sweep.launchers import LAUNCHERS, check_launch, launch, make_executor, run_trial
from bnnjax.sweep.points import Trial, make_trials, parse_seeds, parse_sets, point_name
from bnnjax.sweep.results import aggregate, collect, markdown, write_tables

__all__ = [
  "LAUNCHERS",
  "Trial",
  "aggregate",
  "check_launch",
  "collect",
  "launch",
  "make_executor",
  "make_trials",
  "markdown",
  "parse_seeds",
  "parse_sets",
  "point_name",
  "run_trial",
  "write_tables",
]
