"""The runs of a sweep: each get_sweep() point, once per seed, as a resolved config and a name.

    trials = make_trials(get_config(), get_sweep(), extra={"num_steps": 200}, seeds=(0, 1, 2))

Every config is resolved here, before anything runs: a misspelt field stops the whole
sweep up front, naming the point.
"""

import dataclasses
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections

from bnnjax import config as config_lib


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of a sweep: a point's config with one seed, in its own sub-directory.

  Attributes:
    index: its position among all the sweep's runs (what --index and a job array count).
    point: its get_sweep() index; the runs of one point differ only in `seed`.
    overrides: the point's {dotted field: value}, as get_sweep() gave them.
    seed: config.seed set by the seeds axis, or None without one.
    name: its sub-directory, e.g. "03-lr=0.003-hidden_sizes=(64,)-seed=1".
    config: the resolved config it trains.
  """

  index: int
  point: int
  overrides: Dict[str, Any]
  seed: Optional[int]
  name: str
  config: ml_collections.ConfigDict


def point_name(index: int, overrides: Mapping, seed: Optional[int] = None) -> str:
  """A readable directory name: 03-estimator=flipout-lr=0.003 (then -seed=1 with a seeds axis)."""
  parts = [f"{key.split('.')[-1]}={value}" for key, value in overrides.items()]
  if seed is not None:
    parts.append(f"seed={seed}")
  return re.sub(r"[^A-Za-z0-9=.,_+-]", "_", "-".join([f"{index:02d}", *parts]))


def parse_sets(items: Sequence[str]) -> Dict[str, Any]:
  """{"num_steps": 200} from ["num_steps=200"]: each value JSON if it parses, else a string."""
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


def parse_seeds(text: str) -> Tuple[int, ...]:
  """(0, 1, 2) from "0,1,2"; () from "". A one-line ValueError for a repeat or a non-integer."""
  seeds = []
  for entry in filter(None, (e.strip() for e in text.split(","))):
    try:
      seed = int(entry)
    except ValueError:
      raise ValueError(f"--seeds: {entry!r} is not an integer") from None
    if seed in seeds:
      raise ValueError(f"--seeds lists {seed} twice: each seed runs once per point")
    seeds.append(seed)
  return tuple(seeds)


def point_config(config, point: Mapping, extra: Mapping, index: int) -> ml_collections.ConfigDict:
  """The resolved config of sweep point `index`; a ValueError names the point and the field."""
  try:
    config = config_lib.with_overrides(config, point)
  except ValueError as e:
    raise ValueError(f"get_sweep()[{index}]: {e}") from None
  try:
    return config_lib.with_overrides(config, extra)
  except ValueError as e:
    raise ValueError(f"--set: {e}") from None


def make_trials(
  config, points: Sequence[Mapping], extra: Optional[Mapping] = None, seeds: Sequence[int] = ()
) -> List[Trial]:
  """Every (point, seed) run of a sweep, point-major, each config resolved and validated.

  Args:
    config: the config file's get_config().
    points: its get_sweep(): a list of {dotted field: value}.
    extra: overrides for every point (--set), applied after the point's own.
    seeds: config.seed values to run each point with; () runs each point once as it is.
  Returns:
    The trials, index i = point * len(seeds) + seed position.
  """
  if not points:
    raise ValueError("get_sweep() returned no points")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"the seeds {list(seeds)} repeat one: each seed runs once per point")
  trials = []
  for p, overrides in enumerate(points):
    overrides = dict(overrides)
    if seeds and "seed" in overrides:
      raise ValueError(f"get_sweep()[{p}] sets seed itself; drop it or the seeds axis")
    resolved = point_config(config, overrides, extra or {}, p)
    for seed in seeds or (None,):
      trial_config = resolved if seed is None else config_lib.with_overrides(resolved, {"seed": seed})
      config_lib.validate(trial_config)
      trials.append(Trial(len(trials), p, overrides, seed, point_name(p, overrides, seed), trial_config))
  return trials
