"""Data sets as in-memory arrays, and the batch order of training.

`load(name, split)` returns {"x": float32 inputs, "y": labels or targets} for one
split. Splits follow the tfds syntax ("train", "test", "train[:90%]",
"train[90%:]", "train+test") for every data set, tfds-backed or not.

- mnist, fashion_mnist, kmnist: 28x28 grey images in [0, 1], shape (28, 28, 1),
  labels int32 in 0..9. Read through the TFDS builders of `bnnjax.datasets`
  (prepared once into an array_record cache, see there); records come in the
  order tfds wrote them (shuffled, fixed), not in IDX-file order.
- digits: sklearn's 8x8 digits, x / 16 in [0, 1], shape (8, 8, 1), 10 classes.
- diabetes: sklearn's regression set, x [N, 10] and y [N] standardised with the
  train split's mean and std.
- toy_regression: 1-D, y = TOY_SLOPE x + TOY_INTERCEPT + N(0, TOY_NOISE_STD^2),
  x uniform on the two clusters TOY_CLUSTERS with a gap between them (where a
  good posterior should grow uncertain). x [N, 1], y [N].
- heteroscedastic_toy: 1-D, y = hetero_toy_mean(x) + hetero_toy_std(x) N(0, 1): the mean
  sin(1.5 x) + 0.3 x, noise std 0.05 + 0.15 |x| (it grows with |x|); train x uniform on
  HETERO_TOY_RANGE minus the gap HETERO_TOY_GAP. "test" holds TOY_SIZES' test rows drawn as the
  training ones (off the gap) followed by HETERO_TOY_GAP_TEST rows inside the gap, so that
  "test[:1000]" is off the gap and "test[1000:]" in it. x [N, 1], y [N]; not standardised.
- moons: sklearn make_moons (noise 0.05), standardised with train statistics.
- ring: a mixture of RING_MODES Gaussians (std RING_STD) evenly on a circle of
  radius RING_RADIUS. moons and ring are density sets: x [N, 2], y zeros.
- uci: a UCI regression folder (bnnjax.datasets.uci: data.txt, index_*.txt): split
  config.data.split_index of the data set config.data.uci_name under <data_dir>/uci/ (or
  data_dir itself when it holds data.txt). "train" and "test" are that split's rows as its
  index files list them (so "train[:80%]" / "train[80%:]" is the benchmark's 80/20
  validation split); x [N, D] and y [N] standardised with the statistics of
  config.data.train_split's rows only (`target_scale` gives the target's, to report in
  the original units). Only through `load_split` (it needs the config's fields).
- csv, npz: your own file, config.data.path (bnnjax.datasets.tabular): a CSV's target column
  config.data.target, config.data.task "classification" (classes as labels 0..C-1) or
  "regression"; an .npz file's arrays x, y (x_test, y_test). Split at random (test_fraction,
  the data seed) or by config.data.split_column; inputs (CSV) and a regression target
  standardised with config.data.train_split's rows (DataInfo.preprocessing carries the
  statistics into the run). Only through `load_split`.

`seed` draws the synthetic sets and the random 80/20 train/test split of the
sklearn sets; the default 0 is the fixed split every experiment should share
(pass a data seed, not the training seed). The tfds sets ignore it.
"""

import copy
import os
import pathlib
import re
import types
from typing import Dict, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from bnnjax import coresets
from bnnjax import datasets as idx_datasets
from bnnjax.datasets import tabular, uci
from bnnjax.task import DataInfo

Data = Dict[str, np.ndarray]

IMAGE_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "kmnist": "kmnist"}
_NUM_CLASSES = {
  "mnist": 10,
  "fashion_mnist": 10,
  "kmnist": 10,
  "digits": 10,
  "diabetes": 0,
  "toy_regression": 0,
  "heteroscedastic_toy": 0,
  "moons": 0,
  "labelled_moons": 2,
  "ring": 0,
  "uci": 0,
  "csv": 0,  # csv and npz: the file's classes (data_info)
  "npz": 0,
}
TABLES = ("csv", "npz")  # your own file: bnnjax.datasets.tabular
DATASETS = tuple(_NUM_CLASSES)
SPLITS = ("train", "test")
BINARIZE = ("", "static")
_UNIT_INTERVAL_SETS = ("mnist", "fashion_mnist", "kmnist", "digits")  # binarisable

TOY_SLOPE, TOY_INTERCEPT, TOY_NOISE_STD = 2.0, 0.5, 0.1
TOY_CLUSTERS = ((-2.0, -1.0), (1.0, 2.0))  # the gap is (-1, 1)
HETERO_TOY_RANGE, HETERO_TOY_GAP = (-4.0, 4.0), (1.0, 2.5)
HETERO_TOY_GAP_TEST = 200  # test rows inside the gap, after the TOY_SIZES test rows off it
RING_MODES, RING_RADIUS, RING_STD = 8, 2.0, 0.1
MOONS_NOISE = 0.05
LABELLED_MOONS_NOISE = 0.2  # the classes overlap: a classifier's uncertainty has somewhere to show
# (train, test) sizes of the synthetic sets.
TOY_SIZES = {
  "toy_regression": (200, 200),
  "heteroscedastic_toy": (1000, 1000),
  "moons": (2000, 1000),
  "labelled_moons": (200, 1000),  # small enough for full-batch NUTS (bnnjax.methods.hmc)
  "ring": (2000, 1000),
}
TEST_FRACTION = 0.2  # sklearn sets: a fixed random 80/20 split


def num_classes(name: str) -> int:
  """Number of classes; 0 for regression and density sets."""
  _check_name(name)
  return _NUM_CLASSES[name]


def default_data_dir() -> Optional[pathlib.Path]:
  """$BNNJAX_DATA_DIR if set, else None (= the tfds cache, downloading once)."""
  if os.environ.get("BNNJAX_DATA_DIR"):
    return pathlib.Path(os.environ["BNNJAX_DATA_DIR"])
  return None


def find_idx_dir(name: str, data_dir: os.PathLike) -> pathlib.Path:
  """The folder holding `name`'s IDX files: `data_dir/<folder>` or `data_dir` itself.

  `data_dir` may hold mnist/, fashion-mnist/, kmnist/, or be one of them; a folder
  named after another data set is refused rather than silently read as this one.
  """
  _check_name(name)
  if name not in IMAGE_FOLDERS:
    raise ValueError(f"{name!r} is not an IDX data set; IDX sets: {', '.join(IMAGE_FOLDERS)}")
  data_dir = pathlib.Path(data_dir).expanduser()
  if not data_dir.is_dir():
    raise FileNotFoundError(f"data_dir {data_dir} does not exist or is not a folder")
  folder = IMAGE_FOLDERS[name]
  other = [n for n, f in IMAGE_FOLDERS.items() if f == data_dir.name and n != name]
  if other:
    raise ValueError(
      f"data_dir {data_dir} holds {other[0]}, not {name}; pass its parent or {data_dir.parent / folder}"
    )
  for candidate in (data_dir / folder, data_dir):
    if idx_datasets.available_splits(candidate):
      return candidate
  looked_for = [p for s in SPLITS for p in idx_datasets.split_files(data_dir / folder, s)]
  raise FileNotFoundError(
    f"no {name} IDX files in {data_dir} or {data_dir / folder}; looked for {looked_for}"
  )


def load(
  name: str,
  split: str = "train",
  data_dir: Optional[os.PathLike] = None,
  *,
  flatten: bool = False,
  binarize: str = "",
  seed: int = 0,
) -> Data:
  """One split of data set `name` as {"x": float32, "y": int32 labels or float32 targets}."""
  _check_name(name)
  if binarize not in BINARIZE:
    raise ValueError(f"unknown binarize {binarize!r}; valid: {BINARIZE}")
  if binarize and name not in _UNIT_INTERVAL_SETS:
    raise ValueError(f"binarize={binarize!r} needs inputs in [0, 1]; {name} has none")
  for base in _split_names(split):
    if base not in SPLITS:
      raise ValueError(
        f"unknown split {base!r} in {split!r}; valid: {', '.join(SPLITS)} "
        "with tfds slices such as train[:90%]"
      )
  if name == "uci" or name in TABLES:
    raise ValueError(
      f"{name} loads through data.load_split(config.data, split): it needs its config.data fields"
    )
  if name in IMAGE_FOLDERS:
    data = _load_images(name, split, data_dir)
  else:
    data = _slice(_SYNTHETIC_LOADERS[name](seed), split)
  x = _binarize(data["x"], binarize)
  if flatten:
    x = x.reshape(len(x), -1)
  return {"x": x, "y": data["y"]}


def _binarize(x: np.ndarray, binarize: str) -> np.ndarray:
  if binarize == "static":
    return (x > 0.5).astype(np.float32)  # a fixed threshold: the same binary image every epoch
  return x


def load_idx_folder(folder: os.PathLike, split: str = "test", *, binarize: str = "") -> np.ndarray:
  """Images of any folder of MNIST-format IDX files (bring your own OOD set), as `load` gives them.

  Read directly, not through tfds: such a folder has no builder. [N, H, W, 1] in [0, 1].
  """
  images_file = idx_datasets.split_files(folder, split)[0]
  if not os.path.isfile(images_file):
    raise FileNotFoundError(f"{folder} has no {os.path.basename(images_file)}")
  images = idx_datasets.read_idx(images_file)
  if images.ndim != 3:
    raise ValueError(f"{images_file} holds an array of shape {images.shape}, expected N x H x W images")
  return _binarize(images[..., None].astype(np.float32) / 255.0, binarize)


# --- IDX image sets through tfds --------------------------------------------------


def _load_images(name: str, split: str, data_dir: Optional[os.PathLike]) -> Data:
  if not data_dir:
    data_dir = default_data_dir()
  folder = None if data_dir is None else find_idx_dir(name, data_dir)
  if folder is not None:  # a missing split must fail here, naming its files, not deep in tfds
    present = idx_datasets.available_splits(folder)
    for base in _split_names(split):
      if base not in present:
        raise FileNotFoundError(
          f"{name} split {base!r} is not in {folder}; looked for "
          f"{list(idx_datasets.split_files(folder, base))}"
        )
  builder = idx_datasets.prepared_builder(name, folder)
  images, labels = idx_datasets.read_split(builder, split)
  return {"x": images.astype(np.float32) / 255.0, "y": labels.astype(np.int32)}


# --- small sets built in memory --------------------------------------------------


def _split_names(split: str) -> Tuple[str, ...]:
  """Base split names of a tfds split spec, e.g. "train[:90%]+test" -> ("train", "test")."""
  if not isinstance(split, str) or not split.strip():
    raise ValueError(f"split must be a non-empty string such as 'train', got {split!r}")
  return tuple(re.match(r"\s*([^\[\s]*)", part).group(1) for part in split.split("+"))


def _slice(splits: Dict[str, Data], spec: str) -> Data:
  """Applies a tfds split spec to in-memory splits, with tfds' own rounding."""
  infos = {s: types.SimpleNamespace(num_examples=len(d["y"])) for s, d in splits.items()}
  parts = tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)
  return {k: np.concatenate([splits[p.splitname][k][p.from_ : p.to] for p in parts]) for k in ("x", "y")}


def _train_test(x: np.ndarray, y: np.ndarray, num_test: int, seed: int) -> Dict[str, Data]:
  order = np.random.default_rng(seed).permutation(len(x))
  test, train = order[:num_test], order[num_test:]
  return {"train": {"x": x[train], "y": y[train]}, "test": {"x": x[test], "y": y[test]}}


def _standardise(splits: Dict[str, Data], keys=("x", "y")) -> Dict[str, Data]:
  """Centres and scales with the train split's statistics (the test split must not leak in)."""
  stats = {k: (splits["train"][k].mean(0), splits["train"][k].std(0)) for k in keys}
  return {
    s: {k: ((v - stats[k][0]) / stats[k][1]).astype(np.float32) if k in keys else v for k, v in d.items()}
    for s, d in splits.items()
  }


def _digits(seed: int) -> Dict[str, Data]:
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

  bunch = load_digits()
  x = (bunch.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
  y = bunch.target.astype(np.int32)
  return _train_test(x, y, round(TEST_FRACTION * len(x)), seed)


def _diabetes(seed: int) -> Dict[str, Data]:
  from sklearn.datasets import load_diabetes  # pylint: disable=import-outside-toplevel

  x, y = load_diabetes(return_X_y=True, scaled=False)
  return _standardise(_train_test(x, y, round(TEST_FRACTION * len(x)), seed))


def _toy_regression(seed: int) -> Dict[str, Data]:
  rng = np.random.default_rng(seed)
  num_train, num_test = TOY_SIZES["toy_regression"]
  n = num_train + num_test
  cluster = rng.integers(len(TOY_CLUSTERS), size=n)
  low, high = np.asarray(TOY_CLUSTERS).T
  x = rng.uniform(low[cluster], high[cluster])
  y = TOY_SLOPE * x + TOY_INTERCEPT + TOY_NOISE_STD * rng.standard_normal(n)
  return _first_rest(x[:, None].astype(np.float32), y.astype(np.float32), num_train)


def hetero_toy_mean(x):
  """heteroscedastic_toy's noise-free target: sin(1.5 x) + 0.3 x."""
  return np.sin(1.5 * x) + 0.3 * x


def hetero_toy_std(x):
  """heteroscedastic_toy's noise std at x: 0.05 + 0.15 |x|."""
  return 0.05 + 0.15 * np.abs(x)


def _heteroscedastic_toy(seed: int) -> Dict[str, Data]:
  rng = np.random.default_rng(seed)
  num_train, num_test = TOY_SIZES["heteroscedastic_toy"]
  (low, high), (gap_low, gap_high) = HETERO_TOY_RANGE, HETERO_TOY_GAP
  # Off the gap: uniform on [low, high] with the gap's width cut out of it.
  u = rng.uniform(low, high - (gap_high - gap_low), num_train + num_test)
  x = np.concatenate(
    [np.where(u < gap_low, u, u + (gap_high - gap_low)), rng.uniform(gap_low, gap_high, HETERO_TOY_GAP_TEST)]
  )
  y = hetero_toy_mean(x) + hetero_toy_std(x) * rng.standard_normal(len(x))
  return _first_rest(x[:, None].astype(np.float32), y.astype(np.float32), num_train)


def _moons(seed: int) -> Dict[str, Data]:
  from sklearn.datasets import make_moons  # pylint: disable=import-outside-toplevel

  num_train, num_test = TOY_SIZES["moons"]
  x, _ = make_moons(num_train + num_test, noise=MOONS_NOISE, random_state=seed)
  return _standardise(_first_rest(x, np.zeros(len(x), np.float32), num_train), keys=("x",))


def _labelled_moons(seed: int) -> Dict[str, Data]:
  """Two interleaved half circles, labels 0 / 1, inputs standardised with the train split's
  statistics."""
  from sklearn.datasets import make_moons  # pylint: disable=import-outside-toplevel

  num_train, num_test = TOY_SIZES["labelled_moons"]
  x, y = make_moons(num_train + num_test, noise=LABELLED_MOONS_NOISE, random_state=seed)
  return _standardise(_first_rest(x, y.astype(np.int32), num_train), keys=("x",))


def _ring(seed: int) -> Dict[str, Data]:
  rng = np.random.default_rng(seed)
  n = sum(TOY_SIZES["ring"])
  angle = 2 * np.pi * rng.integers(RING_MODES, size=n) / RING_MODES
  centres = RING_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
  x = (centres + RING_STD * rng.standard_normal((n, 2))).astype(np.float32)
  return _first_rest(x, np.zeros(n, np.float32), TOY_SIZES["ring"][0])


def _first_rest(x: np.ndarray, y: np.ndarray, num_train: int) -> Dict[str, Data]:
  """Samples are i.i.d., so the first num_train are the train split and the rest the test."""
  return {"train": {"x": x[:num_train], "y": y[:num_train]}, "test": {"x": x[num_train:], "y": y[num_train:]}}


_SYNTHETIC_LOADERS = {
  "digits": _digits,
  "diabetes": _diabetes,
  "toy_regression": _toy_regression,
  "heteroscedastic_toy": _heteroscedastic_toy,
  "moons": _moons,
  "labelled_moons": _labelled_moons,
  "ring": _ring,
}


def _check_name(name: str) -> None:
  if name not in _NUM_CLASSES:
    raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")


# --- the one data path: from a config.data section -----------------------------


def parse_eval_splits(spec: str) -> Dict[str, str]:
  """ "val=train[90%:],test" -> {"val": "train[90%:]", "test": "test"}."""
  splits = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    name, _, split = item.partition("=")
    splits[name.strip()] = (split or name).strip()
  return splits


def load_split(data_config, split: str, data_dir: Optional[os.PathLike] = None) -> Data:
  """One split, as the config asks (name, data seed, flattening, binarisation).

  Every caller (the loop, `Run.evaluate`, the scripts) loads through here, so the split a
  run is evaluated on is, example for example, the split its loop evaluated. `data_dir`
  overrides `data_config.data_dir` (a run moved to another machine).
  """
  d = data_config
  if tuple(d.coreset_union) and d.coreset_size > 0 and split == d.train_split:
    return _coreset_union(d, split, data_dir)
  if d.name == "uci":
    data = _load_uci(d, split, data_dir)
  elif d.name in TABLES:
    table, prep = _table(d, data_dir)
    data = prep.standardise(_slice(table.splits, split))
    if d.flatten:
      data["x"] = data["x"].reshape(len(data["x"]), -1)
  else:
    data = load(
      d.name, split, data_dir or d.data_dir or None, flatten=d.flatten, binarize=d.binarize, seed=d.seed
    )
  data = keep_classes(data, tuple(d.classes))
  if d.coreset_size > 0 and split == d.train_split:  # a continual task's coreset: its rest, or it alone
    data = coresets.split_data(data, d)
  return permute_inputs(data, d.permutation_seed)


def _coreset_union(d, split: str, data_dir) -> Data:
  """The coresets of the tasks d.coreset_union names, each drawn and permuted as in its own task,
  concatenated in that order."""
  parts = []
  for seed, classes in d.coreset_union:
    task = copy.deepcopy(d)
    task.permutation_seed, task.classes, task.coreset_union = int(seed), tuple(int(c) for c in classes), ()
    parts.append(load_split(task, split, data_dir))
  return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def uci_folder(data_config, data_dir: Optional[os.PathLike] = None) -> pathlib.Path:
  """The folder of config.data's UCI data set: data_dir (or config.data.data_dir, else
  $BNNJAX_DATA_DIR) when it holds data.txt, else <that>/uci/<uci_name> or <that>/<uci_name>."""
  root = data_dir or data_config.data_dir or default_data_dir()
  if not root:
    raise ValueError("uci needs config.data.data_dir (a UCI folder, or one holding uci/) or $BNNJAX_DATA_DIR")
  return uci.find_folder(data_config.uci_name, root)


def _uci_splits(data_config, data_dir) -> Tuple[Dict[str, Data], uci.Statistics]:
  """Split config.data.split_index in the table's units, and the statistics of its train_split rows."""
  splits = uci.read_split(uci_folder(data_config, data_dir), data_config.split_index)
  return splits, uci.statistics(_slice(splits, data_config.train_split))


def _load_uci(data_config, split: str, data_dir) -> Data:
  splits, stats = _uci_splits(data_config, data_dir)
  return uci.standardise(_slice(splits, split), stats)


def _table(data_config, data_dir=None) -> Tuple[tabular.Table, tabular.Preprocessing]:
  """config.data's csv or npz file, split in its own units, and the statistics of its train_split rows.
  A relative config.data.path is taken from data_dir (or config.data.data_dir) when given."""
  d = data_config
  table = tabular.read(
    d.name,
    os.path.join(str(data_dir or d.data_dir or ""), d.path) if d.path else "",
    target=d.target,
    task=d.task,
    features=tuple(d.features),
    split_column=d.split_column,
    test_fraction=d.test_fraction,
    seed=d.seed,
  )
  return table, tabular.preprocessing(table, _slice(table.splits, d.train_split))


def target_scale(data_config, data_dir: Optional[os.PathLike] = None) -> Tuple[float, float]:
  """(mean, std) of a uci, csv or npz regression target over config.data.train_split's rows:
  y = mean + std * (what the model sees). Metrics in the target's own units use them
  (bnnjax.evaluation.regression.original_units)."""
  if data_config.name in TABLES:
    _, prep = _table(data_config, data_dir)
    if prep.classes:
      raise ValueError(
        f"target_scale: {data_config.path} is a classification table; its labels have no scale"
      )
    return prep.y_mean, prep.y_std
  if data_config.name != "uci":
    raise ValueError(f"target_scale: {data_config.name} targets have no recorded scale (uci, csv, npz only)")
  _, stats = _uci_splits(data_config, data_dir)
  return stats.y_mean, stats.y_std


def keep_classes(data: Data, classes) -> Data:
  """The examples whose label is in `classes` (all if empty); labels keep their values."""
  if not classes:
    return data
  keep = np.isin(data["y"], np.asarray(classes))
  return {k: v[keep] for k, v in data.items()}


def input_permutation(seed: int, size: int) -> Optional[np.ndarray]:
  """The fixed permutation of an input's `size` values drawn from `seed` (None for seed < 0)."""
  if seed < 0:
    return None
  return np.random.default_rng(seed).permutation(size)


def permute_inputs(data: Data, seed: int) -> Data:
  """Every input's values (pixels) in the order input_permutation(seed) gives (permuted MNIST)."""
  x = data["x"]
  order = input_permutation(seed, int(np.prod(x.shape[1:])))
  if order is None:
    return data
  return {**data, "x": x.reshape(len(x), -1)[:, order].reshape(x.shape)}


# The split everything fitted after training is fitted on (temperature, conformal
# calibration, hyper-parameters): the last 10,000 training images, as uncertainty-baselines
# does. A run that uses it trains on train[:50000]. Never fit on the test split.
VALIDATION_SPLITS = {"mnist": "train[50000:]", "fashion_mnist": "train[50000:]"}
_SPLIT_SIZES = {
  "mnist": {"train": 60000, "test": 10000},
  "fashion_mnist": {"train": 60000, "test": 10000},
  "kmnist": {"test": 10000},
}


def validation_split(data_config) -> str:
  """config.data.validation_split; a one-line ValueError (naming the canonical one) if unset."""
  if data_config.validation_split:
    return data_config.validation_split
  canonical = VALIDATION_SPLITS.get(data_config.name)
  hint = (
    f"; for {data_config.name} the canonical one is {canonical!r} (train on 'train[:50000]')"
    if canonical
    else ""
  )
  raise ValueError(f"config.data.validation_split is not set: nothing is fitted on the test split{hint}")


def split_indices(data_config, split: str) -> set:
  """The (base split, index) pairs a split spec covers, for overlap checks."""
  d = data_config
  if d.name in _SPLIT_SIZES:
    sizes = _SPLIT_SIZES[d.name]
  elif d.name == "uci":
    sizes = {s: len(v["y"]) for s, v in _uci_splits(d, None)[0].items()}
  elif d.name in TABLES:
    sizes = {s: len(v["y"]) for s, v in _table(d)[0].splits.items()}
  else:
    sizes = {s: len(v["y"]) for s, v in _SYNTHETIC_LOADERS[d.name](d.seed).items()}
  infos = {s: types.SimpleNamespace(num_examples=n) for s, n in sizes.items()}
  parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
  return {(p.splitname, i) for p in parts for i in range(*slice(p.from_, p.to).indices(sizes[p.splitname]))}


def check_validation_split(data_config) -> None:
  """A one-line ValueError if the validation split shares examples with the training split."""
  d = data_config
  if not d.validation_split:
    return
  shared = split_indices(d, d.train_split) & split_indices(d, d.validation_split)
  if shared:
    raise ValueError(
      f"config.data.validation_split {d.validation_split!r} shares {len(shared)} "
      f"examples with config.data.train_split {d.train_split!r}; train on the rest "
      f"(e.g. 'train[:50000]' beside 'train[50000:]')"
    )


def test_split(data_config) -> str:
  """The split named "test" in data_config.eval_splits, else the last one named there."""
  named = parse_eval_splits(data_config.eval_splits)
  return named.get("test", list(named.values())[-1]) if named else "test"


def data_info(data_config, train: Data) -> DataInfo:
  """What the model may know of its data, from the training split (a csv or npz file's classes and
  preprocessing from the file)."""
  prep = _table(data_config)[1] if data_config.name in TABLES else None
  return DataInfo(
    input_shape=tuple(train["x"].shape[1:]),
    num_classes=len(prep.classes) if prep else num_classes(data_config.name),
    num_train=len(train["x"]),
    binary=data_config.binarize == "static",
    preprocessing=prep.to_json() if prep else "",
  )


def load_splits(data_config, data_dir: Optional[os.PathLike] = None):
  """(train split, {eval name: split}, DataInfo) of a config.data section."""
  train = load_split(data_config, data_config.train_split, data_dir)
  evals = {
    name: load_split(data_config, split, data_dir)
    for name, split in parse_eval_splits(data_config.eval_splits).items()
  }
  return train, evals, data_info(data_config, train)


def check_task_fields(data_config) -> None:
  """One-line ValueErrors for config.data.classes, permutation_seed and the coreset fields."""
  d = data_config
  if d.name == "uci":  # the folder and split read and checked now: a bad file fails before any run starts
    if d.binarize or d.flatten or d.permutation_seed >= 0:
      raise ValueError("uci inputs are a table: config.data.binarize, flatten, permutation_seed do not apply")
    _uci_splits(d, None)
  table_fields = {
    "path": "",
    "target": "",
    "task": "",
    "features": (),
    "split_column": "",
    "test_fraction": 0.2,
  }
  if d.name in TABLES:  # the file read and checked now, as uci's
    if d.binarize or d.permutation_seed >= 0:
      raise ValueError(f"{d.name}: config.data.binarize and permutation_seed do not apply to your own file")
    _table(d)
  else:
    for field, default in table_fields.items():
      if (tuple(d[field]) if isinstance(default, tuple) else d[field]) != default:
        raise ValueError(f"config.data.{field} applies to csv and npz; config.data.name is {d.name!r}")
  classes = tuple(d.classes)
  if classes:
    if len(set(classes)) != len(classes) or len(classes) < 2:
      raise ValueError(f"config.data.classes must name at least two distinct classes, got {classes}")
    if num_classes(d.name) and not all(0 <= c < num_classes(d.name) for c in classes):
      raise ValueError(
        f"config.data.classes {classes} are not all classes of {d.name} (0..{num_classes(d.name) - 1})"
      )
  if d.coreset_kind not in coresets.KINDS or d.coreset_size < 0 or (d.coreset_only and d.coreset_size < 1):
    raise ValueError(
      f"config.data.coreset_size must be >= 0 (>= 1 with coreset_only) and coreset_kind one of "
      f"{', '.join(coresets.KINDS)}, got {d.coreset_size!r} and {d.coreset_kind!r}"
    )
  union = tuple(d.coreset_union)
  if union and not d.coreset_only:
    raise ValueError("config.data.coreset_union (coresets to train on) needs config.data.coreset_only=True")
  pair = lambda t: isinstance(t, (tuple, list)) and len(t) == 2 and isinstance(t[1], (tuple, list))  # noqa: E731
  for task in union:
    if not (pair(task) and all(isinstance(v, int) for v in (task[0], *task[1]))):
      raise ValueError(
        f"config.data.coreset_union holds (permutation_seed, classes) pairs such as (3, ()), got {task!r}"
      )


def load_ood(spec: str, data_config, input_shape, data_dir: Optional[os.PathLike] = None) -> np.ndarray:
  """Inputs [N, *input_shape] of an OOD set for a run trained on `data_config`.

  `spec` is a data set name (its test split, looked up beside the run's own data: a run
  trained on .../mnist finds .../fashion-mnist) or a folder of MNIST-format t10k IDX files.
  Binarised and flattened as the run's data; a shape other than the model's is an error.
  """
  d = data_config
  if os.path.isdir(spec):
    x = load_idx_folder(spec, "test", binarize=d.binarize)
  else:
    x = load(spec, "test", _ood_data_dir(data_dir or d.data_dir), binarize=d.binarize)["x"]
  if d.flatten and x.ndim > 2:
    x = x.reshape(len(x), -1)
  if tuple(x.shape[1:]) != tuple(input_shape):
    raise ValueError(
      f"OOD set {spec!r} has inputs of shape {tuple(x.shape[1:])}, but the model "
      f"was trained on {tuple(input_shape)} ({d.name})"
    )
  return x


def _ood_data_dir(data_dir) -> Optional[str]:
  """Where to look for a named OOD set: the parent of a data set's own folder."""
  if not data_dir:
    return None
  path = os.path.normpath(str(data_dir))
  return os.path.dirname(path) if os.path.basename(path) in IMAGE_FOLDERS.values() else path


# --- batches ------------------------------------------------------------------


def num_examples(data: Data) -> int:
  """The number of examples N of a split {"x": [N, ...], "y": [N, ...]}."""
  return len(data["y"])


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped, a different part each epoch)."""
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if batch_size > n:
    raise ValueError(f"batch_size {batch_size} exceeds the {n} examples of the split")
  return n // batch_size


def epoch_order(seed, epoch, n: int) -> jax.Array:
  """The order in which epoch `epoch` visits the n examples."""
  return jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), n)


def batch_at(data: Data, seed, step, batch_size: int, order: Optional[jax.Array] = None) -> Data:
  """Training batch number `step`: a pure function of (seed, step), jittable with traced both.

  Epoch e = step // steps_per_epoch visits epoch_order(seed, e, N) =
  jax.random.permutation(fold_in(PRNGKey(seed), e), N) in consecutive chunks of
  batch_size (the remainder is dropped), so resuming at any step reproduces the
  same stream. `data` should live on device.

  `order`, if given, must be epoch_order(seed, step // steps_per_epoch, N); it is
  only a cache: the permutation sorts N keys, which on CPU costs 20-60 ms for
  N = 60000, far more than a training step, so a loop should compute it once per
  epoch and pass it in. Without it, batch_at computes it itself.
  """
  n = num_examples(data)
  steps = steps_per_epoch(n, batch_size)
  step = jnp.asarray(step)
  epoch, position = step // steps, step % steps
  if order is None:
    order = epoch_order(seed, epoch, n)
  indices = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
  return {k: jnp.take(v, indices, axis=0) for k, v in data.items()}


def eval_batches(data: Data, batch_size: int) -> Iterator[Data]:
  """Consecutive batches covering the split once, the last one possibly smaller."""
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  for start in range(0, num_examples(data), batch_size):
    yield {k: v[start : start + batch_size] for k, v in data.items()}
