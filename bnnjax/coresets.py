"""Coresets of variational continual learning (Nguyen et al., 2018): a few rows of each task's
training split kept out of its training, on which a copy of the posterior is refined before
prediction (bnnjax.continual).

- "random": `size` rows drawn without replacement (numpy default_rng of the seed).
- "k_center": greedy farthest-point selection (as VCL's code): the first row, then repeatedly the
  row whose Euclidean distance (flattened inputs) to the nearest row chosen so far is largest
  (the first such row on a tie).

config.data.coreset_size > 0 selects a coreset of config.data.coreset_kind in the training split
(after config.data.classes); data.load_split then returns the rest of it, or only the coreset rows
with config.data.coreset_only (the refinement's data).
"""

import numpy as np

KINDS = ("random", "k_center")


def random_rows(num_rows: int, size: int, seed) -> np.ndarray:
  """[size] distinct row indices in 0..num_rows-1, drawn by numpy's default_rng(seed)."""
  return np.random.default_rng(seed).choice(num_rows, size, replace=False)


def k_center_rows(x: np.ndarray, size: int) -> np.ndarray:
  """[size] row indices of x [N, ...] chosen greedily: row 0, then the farthest from those chosen."""
  flat = np.asarray(x, np.float64).reshape(len(x), -1)
  chosen = [0]
  nearest = np.sum((flat - flat[0]) ** 2, axis=1)  # squared distance to the nearest chosen row
  for _ in range(1, size):
    chosen.append(int(np.argmax(nearest)))
    nearest = np.minimum(nearest, np.sum((flat - flat[chosen[-1]]) ** 2, axis=1))
  return np.asarray(chosen)


def select(x: np.ndarray, kind: str, size: int, seed) -> np.ndarray:
  """The coreset's row indices [size] in x [N, ...]; a one-line ValueError for an unknown kind or
  a coreset as large as the split (nothing would be left to train on)."""
  if kind not in KINDS:
    raise ValueError(f"config.data.coreset_kind must be one of {', '.join(KINDS)}, got {kind!r}")
  if not 0 < size < len(x):
    raise ValueError(
      f"config.data.coreset_size={size} must lie in 1..{len(x) - 1}: the training split has {len(x)} rows"
    )
  return random_rows(len(x), size, seed) if kind == "random" else k_center_rows(x, size)


def split_data(data: dict, data_config) -> dict:
  """The training split's rest (coreset rows removed) or, with data_config.coreset_only, the coreset
  rows alone (in the order chosen). The random coreset's seed mixes the data seed with the task
  (permutation seed and classes), so that each task draws its own rows."""
  d = data_config
  seed = [int(d.seed), int(d.permutation_seed) + 1, *(int(c) for c in d.classes)]
  rows = select(data["x"], d.coreset_kind, int(d.coreset_size), seed)
  if d.coreset_only:
    return {k: v[rows] for k, v in data.items()}
  rest = np.ones(len(data["x"]), bool)
  rest[rows] = False
  return {k: v[rest] for k, v in data.items()}
