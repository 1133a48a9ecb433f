"""Your own data: a CSV table or the arrays of an .npz file, split, checked and standardised.

CSV (config.data.name = "csv"): a header row naming the columns, then one row per example
(comma-, semicolon- or tab-separated: the header decides). `target` names the column to
predict; the inputs are the columns `features` names (all the others when empty, less the
split column), each numeric. A classification target may hold any values (strings or
numbers): its classes, sorted (numerically when every value is a number), become labels
0..C-1 and their names are kept (`Table.classes`). A regression target must be numeric.

NPZ (config.data.name = "npz"): arrays `x` [N, ...] (any shape: images stay images) and `y`
[N]; optionally `x_test` and `y_test` (the test split; then `x`, `y` are the train split).
The task follows `y`'s dtype unless named: integers, booleans and strings classify, floats
regress.

The split: a random one, `test_fraction` of the rows (rounded) drawn as the test split by
`random_split(n, num_test, seed)` (the data seed), or a split column (an .npz array of that
name, [N]) whose every value is "train" or "test".

`preprocessing(table, train_rows)` holds what standardising uses: the means and stds of the
rows trained on (bnnjax.datasets.uci.statistics, the benchmark's convention), of the CSV's
inputs and of a regression target (an .npz file's inputs are kept as given). It travels with a
run as plain JSON (DataInfo.preprocessing), so a trained run takes raw rows and answers in the
target's own units (`Preprocessing.inputs`, `Preprocessing.outputs`).

Every problem is a one-line ValueError (FileNotFoundError for a missing file) naming the file
and the column, array or config field, raised while reading, before anything is written.
"""

import csv
import difflib
import functools
import json
import math
import os
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from bnnjax.datasets import uci

TASKS = ("classification", "regression")
SPLIT_VALUES = ("train", "test")
MISSING = ("", "na", "n/a", "nan", "null", "none")  # cells read as missing (case-insensitive)
NPZ_ARRAYS = ("x", "y", "x_test", "y_test")

Split = Dict[str, np.ndarray]


class Table(NamedTuple):
  """A file's examples, split, in its own units (labels already 0..C-1).

  splits: {"train": {"x": [N, ...] float64, "y": [N] int32 labels or float64}, "test": {...}}.
  features: the CSV's input column names in x's column order; () for .npz.
  classes: the class names, label i named classes[i]; () for regression.
  standardise_x: whether the inputs are standardised (CSV) or kept as given (.npz).
  """

  splits: Dict[str, Split]
  features: Tuple[str, ...]
  classes: Tuple[str, ...]
  standardise_x: bool

  @property
  def task(self) -> str:
    return "classification" if self.classes else "regression"


def check_fields(kind: str, path: str, target: str, task: str, test_fraction) -> None:
  """One-line ValueErrors for config.data's fields of a csv or npz data set (nothing is read)."""
  if kind not in ("csv", "npz"):
    raise ValueError(f"unknown table kind {kind!r}; valid: csv, npz")
  if not path:
    raise ValueError(f"config.data.path must name the {kind} file (config.data.name={kind!r})")
  if kind == "csv" and not target:
    raise ValueError("config.data.target must name the column to predict (config.data.name='csv')")
  if kind == "npz" and target:
    raise ValueError("config.data.target applies to csv; an .npz file's target is its array 'y'")
  if task not in TASKS and not (kind == "npz" and task == ""):
    also = " (or '' for npz: from y's dtype)" if kind == "npz" else ""
    raise ValueError(f"config.data.task must be 'classification' or 'regression'{also}, got {task!r}")
  if isinstance(test_fraction, bool) or not (
    isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1
  ):
    raise ValueError(f"config.data.test_fraction must be in (0, 1), got {test_fraction!r}")


def random_split(n: int, num_test: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """(train rows, test rows) of n: the first num_test of default_rng(seed).permutation(n) are the test
  rows (bnnjax.data's convention for its sklearn sets). A pure function of (n, num_test, seed)."""
  order = np.random.default_rng(seed).permutation(n)
  return order[num_test:], order[:num_test]


def num_test_rows(n: int, test_fraction: float, path: str) -> int:
  """round(test_fraction * n), checked to leave at least one row on each side."""
  num_test = int(round(test_fraction * n))
  if not 1 <= num_test <= n - 1:
    raise ValueError(
      f"{path}: config.data.test_fraction={test_fraction} of its {n} rows leaves {num_test} test and "
      f"{n - num_test} training rows; each needs at least one"
    )
  return num_test


# --- CSV ------------------------------------------------------------------------


def _closest(name: str, names: Sequence[str]) -> str:
  close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.0)
  return f"; did you mean {close[0]!r}?" if close else ""


def _is_missing(cell: str) -> bool:
  return cell.strip().lower() in MISSING


def _rows(path: str):
  """(header, [(line number, cells)]) of a CSV file; the delimiter is the header's."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist (config.data.path)")
  with open(path, newline="", encoding="utf-8") as f:
    text = f.read()
  lines = text.splitlines()
  first = next((i for i, line in enumerate(lines) if line.strip()), None)
  if first is None:
    raise ValueError(f"{path} is empty")
  header_line = lines[first]
  delimiter = max(",;\t", key=header_line.count)
  reader = csv.reader(lines[first:], delimiter=delimiter)
  header = [h.strip() for h in next(reader)]
  duplicated = sorted({h for h in header if header.count(h) > 1})
  if duplicated or "" in header:
    what = f"column {duplicated[0]!r} twice" if duplicated else "an unnamed column"
    raise ValueError(f"{path} line {first + 1}: the header names {what}")
  rows = []
  for offset, cells in enumerate(reader, start=first + 2):
    if not cells or all(not c.strip() for c in cells):
      continue
    if len(cells) != len(header):
      raise ValueError(f"{path} line {offset} has {len(cells)} cells, the header {len(header)}")
    rows.append((offset, [c.strip() for c in cells]))
  if not rows:
    raise ValueError(f"{path} has a header but no rows")
  return header, rows


def _column(header, name: str, path: str, field: str) -> int:
  if name not in header:
    raise ValueError(f"{path} has no column {name!r} ({field}){_closest(name, header)}")
  return header.index(name)


def _numbers(rows, index: int, name: str, path: str) -> np.ndarray:
  """Column `index` of the rows as float64 [N]; a missing, non-numeric or infinite cell is an error."""
  values = np.empty(len(rows), np.float64)
  for i, (line, cells) in enumerate(rows):
    cell = cells[index]
    if _is_missing(cell):
      raise ValueError(
        f"{path} line {line} column {name!r}: a missing value ({cell!r}); fill or drop the row"
      )
    try:
      value = float(cell)
    except ValueError:
      raise ValueError(
        f"{path} line {line} column {name!r}: {cell!r} is not a number (inputs must be numeric: "
        "encode it, or leave the column out with config.data.features)"
      ) from None
    if not math.isfinite(value):
      raise ValueError(f"{path} line {line} column {name!r}: {cell!r} is not finite")
    values[i] = value
  return values


def _class_order(values) -> Tuple[str, ...]:
  """Distinct values, sorted numerically when all are numbers, else as strings."""
  distinct = set(values)
  try:
    return tuple(sorted(distinct, key=float))
  except ValueError:
    return tuple(sorted(distinct))


def _labels(values: Sequence[str], where: str) -> Tuple[np.ndarray, Tuple[str, ...]]:
  """Labels 0..C-1 [N] int32 of class values and the class names; one class only is an error."""
  classes = _class_order(values)
  if len(classes) < 2:
    raise ValueError(f"{where}: one class only ({classes[0]!r}); classification needs at least two")
  index = {c: i for i, c in enumerate(classes)}
  return np.asarray([index[v] for v in values], np.int32), classes


def _split_rows(values: Sequence[str], lines: Sequence[int], where: str) -> Tuple[np.ndarray, np.ndarray]:
  """(train rows, test rows) of a split column's values, each "train" or "test"."""
  values = [str(v).strip().lower() for v in values]
  for value, line in zip(values, lines):
    if value not in SPLIT_VALUES:
      at = f" line {line}" if line else ""
      raise ValueError(f"{where}{at}: {value!r} is neither 'train' nor 'test' (config.data.split_column)")
  values = np.asarray(values)
  train, test = np.flatnonzero(values == "train"), np.flatnonzero(values == "test")
  if not len(train) or not len(test):
    raise ValueError(
      f"{where} (config.data.split_column) marks no {'train' if not len(train) else 'test'} row"
    )
  return train, test


def read_csv(
  path: str,
  target: str,
  task: str,
  *,
  features: Sequence[str] = (),
  split_column: str = "",
  test_fraction: float = 0.2,
  seed: int = 0,
) -> Table:
  """A CSV file's examples, split (see the module doc).

  Args:
    path: the CSV file (a header row, then one example per row).
    target: the column to predict.
    task: "classification" or "regression".
    features: the input columns, in this order; () = every column but target and split_column.
    split_column: a column of "train" / "test" values; "" = a random split.
    test_fraction: the random split's share of test rows.
    seed: the random split's seed (the data seed).
  Returns:
    A Table; x [N, D] float64 in the table's units.
  """
  path = str(path)
  header, rows = _rows(path)
  target_index = _column(header, target, path, "config.data.target")
  split_index = _column(header, split_column, path, "config.data.split_column") if split_column else None
  if split_column == target:
    raise ValueError(f"{path}: config.data.split_column and config.data.target both name {target!r}")
  if features:
    for name in features:
      _column(header, name, path, "config.data.features")
      if name in (target, split_column):
        raise ValueError(f"{path}: config.data.features lists {name!r}, the target or split column")
    names = tuple(features)
  else:
    names = tuple(h for h in header if h not in (target, split_column))
  if not names:
    raise ValueError(f"{path} has no input column beside the target {target!r}")
  x = np.stack([_numbers(rows, header.index(name), name, path) for name in names], axis=1)
  where = f"{path} column {target!r}"
  if task == "classification":
    for line, cells in rows:
      if _is_missing(cells[target_index]):
        raise ValueError(
          f"{where} line {line}: a missing label ({cells[target_index]!r}); fill or drop the row"
        )
    y, classes = _labels([cells[target_index] for _, cells in rows], where)
  elif task == "regression":
    y, classes = _numbers(rows, target_index, target, path), ()
  else:
    raise ValueError(f"config.data.task must be 'classification' or 'regression', got {task!r}")
  if split_index is None:
    train, test = random_split(len(x), num_test_rows(len(x), test_fraction, path), seed)
  else:
    train, test = _split_rows(
      [cells[split_index] for _, cells in rows], [line for line, _ in rows], f"{path} column {split_column!r}"
    )
  splits = {"train": {"x": x[train], "y": y[train]}, "test": {"x": x[test], "y": y[test]}}
  return Table(splits, names, classes, standardise_x=True)


def read_rows(path: str, columns: Sequence[str]) -> np.ndarray:
  """The raw inputs [N, D] float64 of a CSV file's `columns` (a run's Preprocessing.features), in that
  order: rows to hand to Run.predict(..., raw=True). Other columns (a target, if any) are ignored."""
  path = str(path)
  header, rows = _rows(path)
  return np.stack(
    [_numbers(rows, _column(header, name, path, "the run's input columns"), name, path) for name in columns],
    axis=1,
  )


# --- NPZ ------------------------------------------------------------------------


def read_npz(
  path: str, task: str = "", *, split_column: str = "", test_fraction: float = 0.2, seed: int = 0
) -> Table:
  """An .npz file's examples, split (see the module doc); never unpickles (object arrays are refused).

  Args:
    path: the .npz file: x [N, ...], y [N], optionally x_test, y_test.
    task: "classification", "regression" or "" (from y's dtype).
    split_column: the name of an array [N] of "train" / "test" values (not with x_test).
    test_fraction, seed: the random split when the file holds neither x_test nor a split array.
  Returns:
    A Table; x keeps its shape per example, as float64.
  """
  path = str(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist (config.data.path)")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except ValueError as e:
    raise ValueError(f"{path}: cannot read it without unpickling ({e}); save plain numeric arrays") from None
  except Exception as e:  # pylint: disable=broad-except  (a zip that is not one, a truncated file)
    raise ValueError(f"{path} is not a readable .npz file: {type(e).__name__}: {e}") from None
  for name in ("x", "y"):
    if name not in arrays:
      raise ValueError(f"{path} has no array {name!r}{_closest(name, arrays)} (arrays: {', '.join(arrays)})")
  if ("x_test" in arrays) != ("y_test" in arrays):
    have, lack = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
    raise ValueError(f"{path} has {have!r} but no {lack!r}")
  if split_column and "x_test" in arrays:
    raise ValueError(f"{path} holds x_test: config.data.split_column {split_column!r} does not apply")
  parts = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in arrays else [])
  for xs, ys in parts:
    x, y = arrays[xs], arrays[ys]
    if y.ndim != 1:
      raise ValueError(f"{path}: array {ys!r} has shape {y.shape}; targets must be [N]")
    if x.ndim < 2 or len(x) != len(y):
      raise ValueError(
        f"{path}: array {xs!r} has shape {x.shape}, {ys!r} has {len(y)} rows; x must be [N, ...]"
      )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
      raise ValueError(f"{path}: array {xs!r} is of dtype {x.dtype}, not numeric")
    bad = np.argwhere(~np.isfinite(x.astype(np.float64)))
    if len(bad):
      raise ValueError(
        f"{path}: array {xs!r} holds a NaN or infinite value at {tuple(int(i) for i in bad[0])}"
      )
  if len(parts) == 2 and arrays["x_test"].shape[1:] != arrays["x"].shape[1:]:
    raise ValueError(
      f"{path}: x_test's examples have shape {arrays['x_test'].shape[1:]}, x's {arrays['x'].shape[1:]}"
    )
  y_all = np.concatenate([arrays["y"]] + ([arrays["y_test"]] if len(parts) == 2 else []))
  if not task:
    task = "regression" if np.issubdtype(y_all.dtype, np.floating) else "classification"
  if task == "classification":
    values = [str(v) for v in y_all.tolist()]
    if any(_is_missing(v) for v in values):
      raise ValueError(
        f"{path}: array 'y' holds a missing label ({next(v for v in values if _is_missing(v))!r})"
      )
    y_all, classes = _labels(values, f"{path} array 'y'")
  elif task == "regression":
    if not (np.issubdtype(y_all.dtype, np.number) or y_all.dtype == bool):
      raise ValueError(f"{path}: array 'y' is of dtype {y_all.dtype}; a regression target must be numeric")
    y_all = y_all.astype(np.float64)
    if not np.all(np.isfinite(y_all)):
      raise ValueError(
        f"{path}: array 'y' holds a NaN or infinite value at {int(np.argmax(~np.isfinite(y_all)))}"
      )
    classes = ()
  else:
    raise ValueError(f"config.data.task must be 'classification', 'regression' or '', got {task!r}")
  if len(parts) == 2:
    n = len(arrays["y"])
    splits = {
      "train": {"x": arrays["x"].astype(np.float64), "y": y_all[:n]},
      "test": {"x": arrays["x_test"].astype(np.float64), "y": y_all[n:]},
    }
    return Table(splits, (), classes, standardise_x=False)
  x = arrays["x"].astype(np.float64)
  if split_column:
    if split_column not in arrays:
      raise ValueError(
        f"{path} has no array {split_column!r} (config.data.split_column){_closest(split_column, arrays)}"
      )
    values = arrays[split_column]
    if values.shape != (len(x),):
      raise ValueError(f"{path}: array {split_column!r} has shape {values.shape}, x has {len(x)} rows")
    train, test = _split_rows(values.tolist(), [0] * len(x), f"{path} array {split_column!r}")
  else:
    train, test = random_split(len(x), num_test_rows(len(x), test_fraction, path), seed)
  splits = {"train": {"x": x[train], "y": y_all[train]}, "test": {"x": x[test], "y": y_all[test]}}
  return Table(splits, (), classes, standardise_x=False)


@functools.lru_cache(maxsize=8)
def _read_cached(kind, path, stamp, target, task, features, split_column, test_fraction, seed) -> Table:
  del stamp  # part of the key only: a file rewritten in place is read again
  if kind == "csv":
    table = read_csv(
      path, target, task, features=features, split_column=split_column, test_fraction=test_fraction, seed=seed
    )
  else:
    table = read_npz(path, task, split_column=split_column, test_fraction=test_fraction, seed=seed)
  for split in table.splits.values():
    for array in split.values():
      array.flags.writeable = False  # shared by every caller of the cache
  return table


def read(
  kind: str,
  path: str,
  *,
  target: str = "",
  task: str = "",
  features: Sequence[str] = (),
  split_column: str = "",
  test_fraction: float = 0.2,
  seed: int = 0,
) -> Table:
  """read_csv or read_npz (kind "csv" or "npz"), the fields checked first (check_fields); cached
  while the file is unchanged (its arrays are read-only)."""
  check_fields(kind, path, target, task, test_fraction)
  path = os.path.abspath(os.path.expanduser(str(path)))
  stamp = (os.stat(path).st_mtime_ns, os.stat(path).st_size) if os.path.isfile(path) else None
  return _read_cached(
    kind, path, stamp, target, task, tuple(features), split_column, float(test_fraction), int(seed)
  )


# --- standardisation, carried by a run ------------------------------------------


class Preprocessing(NamedTuple):
  """What a run applies to raw rows, from the training rows' statistics (uci.statistics).

  features: the CSV's input columns in order; () for .npz.
  classes: class names, label i named classes[i]; () for regression.
  x_mean, x_std: [D] per input column; () where inputs are kept as given (.npz).
  y_mean, y_std: a regression target's; 0 and 1 for a classifier.
  """

  features: Tuple[str, ...]
  classes: Tuple[str, ...]
  x_mean: Tuple[float, ...]
  x_std: Tuple[float, ...]
  y_mean: float
  y_std: float

  def to_json(self) -> str:
    """Plain JSON text (what DataInfo.preprocessing and so the checkpoint's metadata hold)."""
    return json.dumps(self._asdict())

  @classmethod
  def from_json(cls, text: str) -> "Preprocessing":
    fields = json.loads(text)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

  def standardise(self, split: Split) -> Split:
    """{"x", "y"} in the table's units -> what the model sees (float32; labels int32 unchanged)."""
    out = {"x": self.inputs(split["x"])}
    if self.classes:
      out["y"] = np.asarray(split["y"], np.int32)
    else:
      out["y"] = ((np.asarray(split["y"], np.float64) - self.y_mean) / self.y_std).astype(np.float32)
    return out

  def inputs(self, x) -> np.ndarray:
    """Raw inputs [B, D] ([B, ...] kept for .npz) -> standardised float32; one line for a wrong width."""
    x = np.asarray(x, np.float64)
    if not self.x_mean:
      return x.astype(np.float32)
    if x.ndim != 2 or x.shape[1] != len(self.x_mean):
      raise ValueError(
        f"raw rows of shape {x.shape}; the run takes [B, {len(self.x_mean)}]: "
        f"columns {', '.join(self.features)}"
      )
    return ((x - np.asarray(self.x_mean)) / np.asarray(self.x_std)).astype(np.float32)

  def outputs(self, pred):
    """A predictive in the target's own units: a RegressionPredictive's mean shifted and scaled, its
    stds scaled by y_std; a classifier's unchanged (its labels are classes[i])."""
    if self.classes:
      return pred
    scale = self.y_std
    return pred._replace(
      mean=np.asarray(pred.mean) * scale + self.y_mean,
      std=np.asarray(pred.std) * scale,
      aleatoric_std=np.asarray(pred.aleatoric_std) * scale,
      epistemic_std=np.asarray(pred.epistemic_std) * scale,
    )


def preprocessing(table: Table, train_rows: Split) -> Preprocessing:
  """The Preprocessing of `table` from `train_rows` (the rows trained on, in the table's units)."""
  flat = {"x": np.asarray(train_rows["x"]).reshape(len(train_rows["x"]), -1), "y": train_rows["y"]}
  stats = uci.statistics(flat)
  x_mean, x_std = (
    (tuple(map(float, stats.x_mean)), tuple(map(float, stats.x_std))) if table.standardise_x else ((), ())
  )
  y_mean, y_std = (0.0, 1.0) if table.classes else (stats.y_mean, stats.y_std)
  return Preprocessing(table.features, table.classes, x_mean, x_std, float(y_mean), float(y_std))


def from_json(text: str) -> Optional[Preprocessing]:
  """DataInfo.preprocessing's text as a Preprocessing; None for "" (a run of another data set)."""
  return Preprocessing.from_json(text) if text else None
