"""Where a sweep's runs execute: this process, N local processes, or a submitit job array.

Every launcher calls `run_trial`, which trains one run in its own workdir, writes its
result.json (finished, or failed with the error) and never raises for a failing run, so
the others go on. A run that finished before with the same config is skipped; one whose
workdir another process holds (the workdir lock) is left to it.
"""

import concurrent.futures
import json
import multiprocessing
import os
import time
from typing import List, Optional, Sequence

from bnnjax import checkpoint, train, writers
from bnnjax.sweep import results
from bnnjax.sweep.points import Trial

LAUNCHERS = ("local", "local_submitit", "slurm")


def check_launch(launcher: str, parallel: int, index: int, trials: Sequence[Trial]) -> None:
  """One-line ValueErrors for a launch that cannot be: unknown launcher, parallel < 1, bad index."""
  if launcher not in LAUNCHERS:
    raise ValueError(f"--launcher={launcher!r} is not one of {', '.join(LAUNCHERS)}")
  if parallel < 1:
    raise ValueError(f"--parallel must be at least 1, got {parallel}")
  if not -1 <= index < len(trials):
    seeds = len({t.seed for t in trials})
    what = (
      f"{len(trials)} runs ({len(trials) // seeds} points x {seeds} seeds)"
      if trials[0].seed is not None
      else f"{len(trials)} points"
    )
    raise ValueError(f"--index={index} but the sweep has {what}")
  if index >= 0 and (launcher != "local" or parallel > 1):
    raise ValueError(
      "--index runs one run in this process (a job array's task); it takes "
      "neither --parallel nor another --launcher"
    )


def final_metrics(workdir: str) -> dict:
  """The run's last evaluation record ({} if it has none)."""
  evals = [r for r in writers.read_metrics(workdir) if "epoch" in r]
  return evals[-1] if evals else {}


def _last_provenance(workdir: str) -> dict:
  """The run's latest provenance.json entry: what produced its result."""
  with open(os.path.join(workdir, writers.PROVENANCE_FILE), encoding="utf-8") as f:
    return json.load(f)[-1]


def _one_line(error: BaseException) -> str:
  """bnnjax's own errors as they are; anything else as 'Class: first line'."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  if isinstance(error, (ValueError, FileNotFoundError, FloatingPointError)):
    return text
  return f"{error.__class__.__name__}: {text}"


def run_trial(trial: Trial, sweep_dir: str, trials: Optional[Sequence[Trial]] = None) -> dict:
  """Trains one run in <sweep_dir>/<trial.name> and returns its record (see results.make_record).

  Args:
    trial: the run.
    sweep_dir: the sweep's directory.
    trials: every run of the sweep: given, the tables are assembled afterwards (what each
      task of a job array does, so that the tables grow as tasks end).
  """
  workdir = results.trial_dir(sweep_dir, trial)
  if results.is_finished(sweep_dir, trial):
    print(f"== run {trial.index} ({trial.name}): finished before, skipped", flush=True)
    return results.read_result(workdir)
  print(
    f"== run {trial.index}: {trial.overrides}"
    + (f" seed {trial.seed}" if trial.seed is not None else "")
    + f" -> {workdir}",
    flush=True,
  )
  tic = time.perf_counter()
  try:
    train.fit(trial.config, workdir)
    record = results.make_record(
      trial, workdir, results.FINISHED, final=final_metrics(workdir), elapsed_s=time.perf_counter() - tic
    )
    record["provenance"] = _last_provenance(workdir)
  except checkpoint.WorkdirBusy as e:
    print(f"run {trial.index} left to the process running it: {e}", flush=True)
    return results.make_record(trial, workdir, results.RUNNING, error=str(e))
  except Exception as e:  # pylint: disable=broad-except  (one failing run must not end the sweep)
    record = results.make_record(
      trial, workdir, results.FAILED, error=_one_line(e), elapsed_s=time.perf_counter() - tic
    )
    # A run whose loss left the finite numbers (the NaN guard): an outcome of its settings, which
    # a hyper-parameter search counts as a loss rather than as a fault.
    record["diverged"] = isinstance(e, FloatingPointError)
    print(f"error in run {trial.index}: {record['error']}", flush=True)
  os.makedirs(workdir, exist_ok=True)
  results.write_json(os.path.join(workdir, results.RESULT_FILE), record)
  if trials is not None:
    results.write_tables(sweep_dir, trials)
  return record


def run_local(trials: Sequence[Trial], sweep_dir: str, all_trials: Sequence[Trial]) -> List[dict]:
  """The runs one after another in this process, the tables assembled after each."""
  return [run_trial(trial, sweep_dir, all_trials) for trial in trials]


def _run_logged(trial: Trial, sweep_dir: str, all_trials: Sequence[Trial]) -> dict:
  """run_trial in a worker process, its output (fds 1 and 2) going to <run>/output.log."""
  workdir = results.trial_dir(sweep_dir, trial)
  os.makedirs(workdir, exist_ok=True)
  saved = os.dup(1), os.dup(2)
  with open(os.path.join(workdir, "output.log"), "a", encoding="utf-8") as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
      return run_trial(trial, sweep_dir, all_trials)
    finally:
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)


def run_parallel(
  trials: Sequence[Trial], sweep_dir: str, processes: int, all_trials: Sequence[Trial]
) -> List[dict]:
  """The runs in `processes` local worker processes (spawned: JAX does not survive a fork).

  Each run's console output goes to <run>/output.log; a line here reports each as it ends.
  """
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
    futures = {pool.submit(_run_logged, trial, sweep_dir, all_trials): trial for trial in trials}
    records = {}
    for future in concurrent.futures.as_completed(futures):
      trial = futures[future]
      try:
        records[trial.index] = future.result()
      except Exception as e:  # pylint: disable=broad-except  (a worker that died)
        records[trial.index] = results.make_record(
          trial, results.trial_dir(sweep_dir, trial), results.FAILED, error=_one_line(e)
        )
      _report(records[trial.index])
  return [records[trial.index] for trial in trials]


def _report(record: dict) -> None:
  """One line for a run that ended in another process."""
  error = f": {record['error']}" if record["status"] == results.FAILED else ""
  print(f"run {record['index']} ({record['name']}): {record['status']}{error}", flush=True)


def make_executor(
  launcher: str, folder: str, partition: str = "", time_min: int = 60, gpus: int = 0, parallel: int = 1
):
  """A submitit executor: SLURM (`launcher="slurm"`) or submitit's LocalExecutor.

  Args:
    launcher: "slurm" or "local_submitit".
    folder: where submitit keeps its pickles and each job's logs.
    partition: the SLURM partition ("" = the cluster's default).
    time_min: each job's time limit in minutes.
    gpus: GPUs per job.
    parallel: at most this many array tasks at once.
  """
  import submitit  # pylint: disable=import-outside-toplevel  (only sweeps that submit need it)

  if launcher == "local_submitit":
    executor = submitit.LocalExecutor(folder)
    executor.update_parameters(timeout_min=time_min, gpus_per_node=gpus)
    return executor
  try:
    executor = submitit.AutoExecutor(folder, cluster="slurm")
  except RuntimeError as e:  # no srun on this machine
    raise ValueError(f"--launcher=slurm: {_one_line(e).split(': ', 1)[-1]}") from None
  parameters = {
    "timeout_min": time_min,
    "gpus_per_node": gpus,
    "slurm_array_parallelism": parallel,
    "name": "bnnjax-sweep",
  }
  if partition:
    parameters["slurm_partition"] = partition
  executor.update_parameters(**parameters)
  return executor


def run_submitit(
  trials: Sequence[Trial],
  sweep_dir: str,
  executor,
  all_trials: Sequence[Trial],
  wait: bool = True,
  parallel: int = 1,
) -> List[dict]:
  """Submits the runs as a job array; each task assembles the tables when its run ends.

  Args:
    trials: the runs to submit.
    sweep_dir: the sweep's directory.
    executor: from `make_executor`.
    all_trials: every run of the sweep, for the tables.
    wait: wait for the jobs and return their records; else return "submitted" records
      naming each job.
    parallel: with the local executor (which starts a whole array at once), at most this
      many tasks run at a time.
  """
  if not wait:
    jobs = _submit(executor, trials, sweep_dir, all_trials)
    return [
      {**results.make_record(t, results.trial_dir(sweep_dir, t), "submitted"), "job": job.job_id}
      for t, job in zip(trials, jobs)
    ]
  records = []
  for start in range(0, len(trials), parallel):
    chunk = trials[start : start + parallel]
    for trial, job in zip(chunk, _submit(executor, chunk, sweep_dir, all_trials)):
      try:
        records.append(job.result())
      except Exception as e:  # pylint: disable=broad-except  (a job that died or timed out)
        records.append(
          results.make_record(
            trial,
            results.trial_dir(sweep_dir, trial),
            results.FAILED,
            error=f"job {job.job_id}: {_one_line(e)}",
          )
        )
      _report(records[-1])
  return records


def _submit(executor, trials, sweep_dir, all_trials) -> list:
  """executor.map_array(run_trial, ...); a one-line ValueError if submitting fails."""
  try:
    return executor.map_array(
      run_trial, list(trials), [sweep_dir] * len(trials), [list(all_trials)] * len(trials)
    )
  except Exception as e:  # pylint: disable=broad-except  (sbatch missing, a refused submission)
    raise ValueError(f"submitting {len(trials)} jobs failed: {_one_line(e)}") from None


def launch(
  trials: Sequence[Trial],
  sweep_dir: str,
  index: int = -1,
  launcher: str = "local",
  parallel: int = 1,
  partition: str = "",
  time_min: int = 60,
  gpus: int = 0,
) -> List[dict]:
  """Runs (or submits) the sweep's runs, or only run `index`, and assembles its tables.

  Returns:
    The records of the runs launched: status finished, failed, running (elsewhere) or,
    for a SLURM job array not waited for, submitted.
  """
  check_launch(launcher, parallel, index, trials)
  chosen = list(trials) if index < 0 else [trials[index]]
  if launcher == "local" and parallel == 1:
    records = run_local(chosen, sweep_dir, trials)
  elif launcher == "local":
    records = run_parallel(chosen, sweep_dir, parallel, trials)
  else:
    executor = make_executor(
      launcher, os.path.join(sweep_dir, "submitit"), partition, time_min, gpus, parallel
    )
    records = run_submitit(chosen, sweep_dir, executor, trials, wait=launcher != "slurm", parallel=parallel)
  results.write_tables(
    sweep_dir, trials, running=[r["index"] for r in records if r["status"] == results.RUNNING]
  )
  return records
