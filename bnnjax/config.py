"""The defaults every experiment config starts from, and their validation.

Experiment files in configs/ call `base_config()` and override fields; they stay
declarative. `validate` runs before any data is loaded or anything compiled, so a
bad value is a one-line error that names the field.
"""

import difflib
import importlib.util
import itertools
import math
import os
from typing import Dict, Mapping

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """The loop's fields with their defaults; config.model holds only the model's name here."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"  # see bnnjax.data.DATASETS
  c.data.data_dir = ""  # "" = $BNNJAX_DATA_DIR, else download via tfds
  c.data.train_split = "train"  # tfds split syntax, e.g. "train[:90%]"
  c.data.eval_splits = "test"  # comma separated; metric keys are "<split>/<name>"
  # What anything fitted after training is fitted on (never the test split); "" = none.
  # bnnjax.data.VALIDATION_SPLITS names the canonical one (MNIST: "train[50000:]").
  c.data.validation_split = ""
  c.data.flatten = False
  c.data.binarize = ""  # "" | "static" (a fixed threshold); dynamic binarisation lives in the loss
  c.data.seed = 0  # draws synthetic sets and the sklearn sets' train/test split; not the training seed
  c.data.fallback = ""  # data set to use when c.data.name is found neither locally nor online
  # Tasks of a continual-learning sequence (bnnjax.continual), applied by data.load_split:
  c.data.classes = ()  # keep only these labels (split MNIST); () = all
  c.data.permutation_seed = -1  # >= 0: the inputs' values in a fixed order drawn from it
  # > 0: that many rows of the training split (bnnjax.coresets, of coreset_kind "random" or "k_center")
  # are a coreset, left out of training; coreset_only: train on them alone (VCL's refinement).
  c.data.coreset_size = 0
  c.data.coreset_kind = "random"
  c.data.coreset_only = False
  # with coreset_only: the union of several tasks' coresets, ((permutation_seed, classes), ...), each
  # drawn and permuted as its own task's (VCL's single-head refinement); () = this task's alone.
  c.data.coreset_union = ()
  # name = "uci" (bnnjax.datasets.uci): the data set's folder name under <data_dir>/uci/ ("" when
  # data_dir is the data set's own folder), and which of its fixed train/test splits.
  c.data.uci_name = ""
  c.data.split_index = 0
  # name = "csv" or "npz" (bnnjax.datasets.tabular): your own file; a csv's target column and
  # its input columns (() = all others), "classification" | "regression" ("" for npz: y's dtype);
  # a column (npz: array) of train/test values, else a random split of test_fraction (data seed).
  c.data.path = ""
  c.data.target = ""
  c.data.features = ()
  c.data.task = ""
  c.data.split_column = ""
  c.data.test_fraction = 0.2

  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp"  # a declared bnnjax.task.Model; its default_config() holds the other fields

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # adam | adamw | sgd
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "constant"  # constant | cosine
  c.optimizer.warmup_steps = 0
  c.optimizer.weight_decay = 0.0
  c.optimizer.momentum = 0.9  # sgd only
  c.optimizer.grad_clip = 0.0  # global norm; 0 = off
  # "key=factor,...": the learning rate times factor for the params under a top-level key,
  # e.g. "log_std=10" (or "rho=10" for softplus stds) lets a posterior's scales travel as
  # far as its means in a short run.
  c.optimizer.lr_multipliers = ""

  c.batch_size = 128
  c.num_epochs = 10
  c.num_steps = 0  # > 0 overrides num_epochs
  c.eval_batch_size = 1000
  c.eval_every = 0  # steps; 0 = once per epoch
  c.log_every = 100  # steps between training-metric lines
  c.checkpoint_every = 0  # steps; 0 = once per epoch
  c.max_to_keep = 3
  c.progress_bar = True
  # Optimiser steps per compiled call (one lax.scan): N > 1 trades nothing in the result (the
  # same batches, bit for bit) for fewer dispatches; it must divide the log, eval and
  # checkpoint intervals.
  c.steps_per_call = 1
  c.profile_steps = ""  # "a:b": a jax.profiler trace of steps a..b-1 in <workdir>/profile
  return c


def with_overrides(config: ml_collections.ConfigDict, overrides: Mapping) -> ml_collections.ConfigDict:
  """The resolved `config` with dotted fields set, as --config.a.b=v would: {"model.lr": 1e-3}.

  Every field must exist in the resolved schema (a misspelt one is a one-line ValueError
  naming the closest valid name); the result is resolved again, so an override of
  config.model.name brings that model's fields (keeping the values of those both models have).
  """
  config = resolve(config)
  overrides = dict(overrides)
  if "model.name" in overrides:  # another model: its own schema, before its fields are set
    name = overrides.pop("model.name")
    from bnnjax import models  # pylint: disable=import-outside-toplevel

    schema = models.get(name).default_config()
    # The fields both models have keep their values (hidden_sizes, activation, ...).
    config.model = ml_collections.ConfigDict(
      {**{k: v for k, v in config.model.items() if k in schema}, "name": name}
    )
    config = resolve(config)
  for path, value in overrides.items():
    *parents, leaf = path.split(".")
    node, where = config, "config"
    for key in parents:
      _check_field(node, key, where)
      node, where = node[key], f"{where}.{key}"
      if not isinstance(node, ml_collections.ConfigDict):
        raise ValueError(f"{where} is a value, not a section: cannot set {path!r}")
    _check_field(node, leaf, where)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ValueError(f"{where}.{leaf}: {e}") from None
  return resolve(config)


def _check_field(node: ml_collections.ConfigDict, key: str, where: str) -> None:
  """A one-line ValueError if `node` has no field `key`, naming the closest valid one."""
  if key in node:
    return
  close = difflib.get_close_matches(key, list(node), n=1, cutoff=0.6)
  hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(node))}"
  raise ValueError(f"{where} has no field {key!r}{hint}")


def _merge_strict(schema: ml_collections.ConfigDict, given, where: str) -> ml_collections.ConfigDict:
  """`schema` with the values of `given` written over it; a field the schema lacks is an error.

  Types follow the schema's defaults (ml_collections refuses a str where an int is expected;
  an int is accepted where a float is).
  """
  merged = ml_collections.ConfigDict(schema.to_dict())
  for key in given:
    _check_field(merged, key, where)
    value = given[key]
    if isinstance(merged[key], ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ValueError(f"{where}.{key} is a section; got the value {value!r}")
      merged[key] = _merge_strict(merged[key], value, f"{where}.{key}")
      continue
    try:
      merged[key] = value
    except TypeError:
      raise ValueError(
        f"{where}.{key} must be a {type(merged[key]).__name__} like its default "
        f"{merged[key]!r}, got {value!r}"
      ) from None
  return merged


def resolve(config) -> ml_collections.ConfigDict:
  """The full config: base_config's fields and config.model.name's schema, with `config`'s
  values over them. An unknown or misspelt field anywhere is a one-line ValueError naming
  the closest valid name, raised before any data is read or anything compiled.
  """
  from bnnjax import models  # pylint: disable=import-outside-toplevel

  if not isinstance(config, (ml_collections.ConfigDict, dict)):
    raise ValueError(f"a config must be an ml_collections.ConfigDict, got {type(config).__name__}")
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  given_model = dict(given.pop("model", {}) or {})
  schema = base_config()
  del schema["model"]
  resolved = _merge_strict(schema, given, "config")
  name = given_model.get("name", "mlp")
  model_schema = models.get(name).default_config()
  resolved.model = _merge_strict(model_schema, given_model, "config.model")
  return resolved


def product(axes) -> list:
  """Every combination of dotted-field values: {"a.b": [1, 2], "c": [3]} -> [{"a.b": 1, "c": 3}, ...].

  Config files return such a list from get_sweep(), beside get_config().
  """
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def load_config_file(path: str):
  """The Python module of a config file (configs/x.py): its get_config(), maybe get_sweep()."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"bnnjax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _positive(config, path):
  value = config
  for key in path.split("."):
    value = value[key]
  if not value > 0:
    raise ValueError(f"config.{path} must be positive, got {value!r}")


def _check_finite(node, where: str = "config") -> None:
  """A one-line ValueError naming the first float field (or tuple entry) that is inf or nan."""
  if isinstance(node, (ml_collections.ConfigDict, dict)):
    for key in node:
      _check_finite(node[key], f"{where}.{key}")
  elif isinstance(node, (tuple, list)):
    for value in node:
      _check_finite(value, where)
  elif isinstance(node, float) and not math.isfinite(node):
    raise ValueError(f"{where} must be finite, got {node!r}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the loop-level fields (every number finite); models validate their own `config.model`."""
  _check_finite(config)
  for path in ("optimizer.lr", "batch_size", "eval_batch_size", "max_to_keep"):
    _positive(config, path)
  if config.num_steps <= 0:
    _positive(config, "num_epochs")
  for path in ("eval_every", "checkpoint_every", "num_steps", "log_every"):
    value = config[path.split(".")[0]]
    if value < 0:
      raise ValueError(f"config.{path} must be >= 0, got {value!r}")
  check_steps_per_call(config)
  parse_profile_steps(config.profile_steps)
  if config.optimizer.name not in ("adam", "adamw", "sgd"):
    raise ValueError(
      f"config.optimizer.name: unknown optimizer {config.optimizer.name!r}; choose adam, adamw or sgd"
    )
  if config.optimizer.schedule not in ("constant", "cosine"):
    raise ValueError(
      f"config.optimizer.schedule: unknown schedule {config.optimizer.schedule!r}; choose constant or cosine"
    )
  parse_lr_multipliers(config.optimizer.get("lr_multipliers", ""))
  from bnnjax import data  # pylint: disable=import-outside-toplevel

  data.check_validation_split(config.data)
  data.check_task_fields(config.data)
  if config.data.binarize not in ("", "static"):
    raise ValueError(f"config.data.binarize must be '' or 'static', got {config.data.binarize!r}")


def check_steps_per_call(config, steps_per_epoch: int = 0) -> None:
  """A one-line ValueError if config.steps_per_call is < 1 or does not divide an interval.

  An interval of 0 means once per epoch: it is checked once `steps_per_epoch` is known (> 0).
  """
  n = config.steps_per_call
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"config.steps_per_call must be an integer >= 1, got {n!r}")
  for field in ("log_every", "eval_every", "checkpoint_every"):
    interval = config[field] or steps_per_epoch
    if interval and interval % n:
      what = f"{config[field]}" if config[field] else f"0 = once per epoch of {steps_per_epoch} steps"
      raise ValueError(
        f"config.steps_per_call={n} does not divide config.{field} ({what}); "
        "evaluation, logging and checkpoints land only between calls"
      )


def parse_profile_steps(spec: str):
  """(a, b) of config.profile_steps "a:b" (steps a..b-1 traced), None for ""; a one-line ValueError."""
  if not spec:
    return None
  first, sep, end = spec.partition(":")
  try:
    a, b = int(first), int(end)
  except ValueError:
    a = b = -1
  if not sep or a < 0 or b <= a:
    raise ValueError(f"config.profile_steps must be 'a:b' with 0 <= a < b, got {spec!r}")
  return a, b


def parse_lr_multipliers(spec: str) -> Dict[str, float]:
  """{"rho": 10.0} from "rho=10"; a one-line ValueError naming a malformed entry."""
  multipliers = {}
  for entry in filter(None, (e.strip() for e in spec.split(","))):
    key, _, value = entry.partition("=")
    try:
      factor = float(value)
    except ValueError:
      factor = float("nan")
    if not key or not factor > 0:
      raise ValueError(f"config.optimizer.lr_multipliers: {entry!r} is not 'key=positive factor'")
    multipliers[key.strip()] = factor
  return multipliers
