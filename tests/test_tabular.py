"""Your own data (config.data.name = "csv" / "npz"): the split, the training rows' statistics, a run
that takes raw rows, two short fits on known rules, and every bad file as one line.

Every file is written here, in tmp_path; nothing is read from the shared data folder.
"""

import json

import numpy as np
import pytest

import bnnjax
from bnnjax import config as config_lib, data
from bnnjax.datasets import tabular, uci

N = 300  # rows of the linear and the separable tables


def _write_csv(path, header, rows, delimiter=","):
  with open(path, "w", encoding="utf-8") as f:
    f.write(delimiter.join(header) + "\n")
    for row in rows:
      f.write(delimiter.join(str(c) for c in row) + "\n")
  return str(path)


def _linear_rows(seed=0):
  """y = 3 + 2 a - 0.1 b + 10 c + N(0, 0.1²), the inputs on very different scales."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(N, 3)) * [1.0, 10.0, 0.1] + [0.0, 100.0, 5.0]
  y = 3.0 + 2.0 * x[:, 0] - 0.1 * x[:, 1] + 10.0 * x[:, 2] + 0.1 * rng.normal(size=N)
  return x, y


@pytest.fixture(scope="module")
def linear_csv(tmp_path_factory):
  x, y = _linear_rows()
  path = tmp_path_factory.mktemp("csv") / "linear.csv"
  return _write_csv(path, ["a", "b", "c", "price"], [[*r, t] for r, t in zip(x, y)])


@pytest.fixture(scope="module")
def classes_csv(tmp_path_factory):
  """Two classes named by strings, split by the line a + b / 50 = 0 with a margin; a noise column between."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2 * N, 3)) * [1.0, 50.0, 1.0]
  score = x[:, 0] + x[:, 1] / 50.0
  x = x[np.abs(score) > 0.3][:N]
  labels = np.where(x[:, 0] + x[:, 1] / 50.0 > 0, "up", "down")
  path = tmp_path_factory.mktemp("csv") / "classes.csv"
  return _write_csv(path, ["a", "kind", "b", "noise"], [[r[0], c, r[1], r[2]] for r, c in zip(x, labels)])


def _config(path, target="price", task="regression", **fields):
  c = bnnjax.base_config()
  c.data.name = "csv" if str(path).endswith(".csv") else "npz"
  c.data.path = str(path)
  c.data.target = target
  c.data.task = task
  for key, value in fields.items():
    c.data[key] = value
  return config_lib.resolve(c)


# --- the split and the statistics ------------------------------------------------


def test_the_random_split_is_a_pure_function_of_the_seed(linear_csv):
  x, _ = _linear_rows()
  first = tabular.read_csv(linear_csv, "price", "regression", seed=3)
  again = tabular.read_csv(linear_csv, "price", "regression", seed=3)
  other = tabular.read_csv(linear_csv, "price", "regression", seed=4)
  num_test = round(0.2 * N)
  assert len(first.splits["test"]["y"]) == num_test and len(first.splits["train"]["y"]) == N - num_test
  order = np.random.default_rng(3).permutation(N)  # the test rows are the permutation's first 60
  np.testing.assert_allclose(first.splits["test"]["x"], x[order[:num_test]], rtol=1e-12)
  np.testing.assert_allclose(first.splits["train"]["x"], x[order[num_test:]], rtol=1e-12)
  np.testing.assert_array_equal(first.splits["test"]["y"], again.splits["test"]["y"])
  assert not np.array_equal(first.splits["test"]["y"], other.splits["test"]["y"])
  assert first.features == ("a", "b", "c") and first.task == "regression"


def test_statistics_come_from_the_training_rows_only(tmp_path):
  """Hand values: train rows a = 1, 2, 3 (mean 2, std sqrt(2/3)), y = 10, 20, 30; a test row far away."""
  rows = [[1, 10, "train"], [2, 20, "train"], [100, 0, "test"], [3, 30, "train"]]
  path = _write_csv(tmp_path / "t.csv", ["a", "y", "part"], rows, delimiter=";")
  config = _config(path, target="y", split_column="part")
  train, test = data.load_split(config.data, "train"), data.load_split(config.data, "test")
  std = np.sqrt(2 / 3)
  np.testing.assert_allclose(train["x"][:, 0], [-1 / std, 0, 1 / std], rtol=1e-6)
  np.testing.assert_allclose(test["x"][:, 0], [98 / std], rtol=1e-6)
  y_std = 10 * std
  np.testing.assert_allclose(train["y"], [-10 / y_std, 0, 10 / y_std], rtol=1e-6)
  np.testing.assert_allclose(test["y"], [-20 / y_std], rtol=1e-6)
  assert data.target_scale(config.data) == pytest.approx((20.0, y_std))
  info = data.data_info(config.data, train)
  prep = tabular.Preprocessing.from_json(info.preprocessing)
  assert prep.x_mean == pytest.approx((2.0,)) and prep.features == ("a",) and info.num_classes == 0


def test_a_validation_slice_of_train_is_excluded_from_the_statistics(linear_csv):
  config = _config(linear_csv, train_split="train[:80%]", validation_split="train[80%:]")
  config_lib.validate(config)
  table = tabular.read_csv(linear_csv, "price", "regression")
  fit_rows = table.splits["train"]["x"][: round(0.8 * 240)]
  prep = data.data_info(config.data, data.load_split(config.data, "train[:80%]")).preprocessing
  np.testing.assert_allclose(json.loads(prep)["x_mean"], fit_rows.mean(0), rtol=1e-9)
  assert len(data.load_split(config.data, data.validation_split(config.data))["y"]) == 48
  with pytest.raises(ValueError, match="shares 48 examples"):
    config_lib.validate(_config(linear_csv, train_split="train", validation_split="train[80%:]"))


def test_classes_become_labels_in_sorted_order(classes_csv, tmp_path):
  table = tabular.read_csv(classes_csv, "kind", "classification")
  assert table.classes == ("down", "up") and table.features == ("a", "b", "noise")
  x, y = table.splits["train"]["x"], table.splits["train"]["y"]
  np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1] / 50.0 > 0).astype(np.int32))
  numbers = _write_csv(tmp_path / "n.csv", ["a", "c"], [[0, 10], [1, 2], [2, 10], [3, 2.5]])
  table = tabular.read_csv(numbers, "c", "classification", test_fraction=0.5)
  assert table.classes == ("2", "2.5", "10")  # numerically, not as strings


def test_npz_images_keep_their_shape_and_the_task_follows_the_dtype(tmp_path):
  rng = np.random.default_rng(0)
  x, y = rng.uniform(size=(20, 4, 4, 1)), rng.integers(3, size=20) + 5
  np.savez(tmp_path / "img.npz", x=x, y=y, x_test=x[:6], y_test=y[:6])
  config = _config(tmp_path / "img.npz", target="", task="")
  train, test = data.load_split(config.data, "train"), data.load_split(config.data, "test")
  assert train["x"].shape == (20, 4, 4, 1) and test["x"].shape == (6, 4, 4, 1)
  np.testing.assert_allclose(train["x"], x, rtol=1e-6)  # images kept as given
  np.testing.assert_array_equal(train["y"], y - 5)  # classes 5, 6, 7 -> 0, 1, 2
  assert data.data_info(config.data, train).num_classes == 3
  split = np.array(["train", "test"] * 10)
  np.savez(tmp_path / "reg.npz", x=x.reshape(20, -1), y=np.arange(20.0), part=split)
  config = _config(tmp_path / "reg.npz", target="", task="", split_column="part", flatten=True)
  train = data.load_split(config.data, "train")
  evens = np.arange(0.0, 20.0, 2.0)
  np.testing.assert_allclose(train["y"], (evens - evens.mean()) / evens.std(), rtol=1e-6)


def uci_split_as_csv(folder, index, path):
  """Split `index` of a UCI folder as one CSV: its train rows then its test rows (index-file order),
  columns x0.. and y, and a column "part" saying which."""
  split = uci.read_split(folder, index)
  width = split["train"]["x"].shape[1]
  rows = [
    [*map(repr, x), repr(y), part]
    for part in ("train", "test")
    for x, y in zip(split[part]["x"].tolist(), split[part]["y"].tolist())
  ]
  return _write_csv(path, [f"x{i}" for i in range(width)] + ["y", "part"], rows)


def test_a_uci_split_written_as_csv_loads_as_the_uci_path_does(uci_data_dir, tmp_path):
  """The same rows, the same training statistics: the csv path is the uci path for a table."""
  c = bnnjax.base_config()
  c.data.name, c.data.uci_name, c.data.data_dir, c.data.split_index = "uci", "concrete", str(uci_data_dir), 3
  c.data.train_split, c.data.validation_split = "train[:80%]", "train[80%:]"
  by_uci = config_lib.resolve(c).data
  path = uci_split_as_csv(data.uci_folder(by_uci), 3, tmp_path / "concrete.csv")
  by_csv = _config(
    path, "y", split_column="part", train_split="train[:80%]", validation_split="train[80%:]"
  ).data
  for split in ("train[:80%]", "train[80%:]", "test"):
    a, b = data.load_split(by_uci, split), data.load_split(by_csv, split)
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], b["y"])
  assert data.target_scale(by_uci) == data.target_scale(by_csv)


# --- runs that take raw rows ------------------------------------------------------


def _fit(config, workdir, steps=200):
  config.model.name = "mlp"
  config = config_lib.resolve(config)
  config.model.hidden_sizes = (32,)
  config.num_steps = steps
  config.batch_size = 60
  config.optimizer.lr = 1e-2
  config.eval_every = config.checkpoint_every = config.log_every = steps
  config.progress_bar = False
  return bnnjax.fit(config, str(workdir))


@pytest.mark.slow
def test_a_regressor_on_raw_rows_is_its_own_evaluation_in_original_units(linear_csv, tmp_path):
  run = _fit(_config(linear_csv), tmp_path / "reg")
  table = tabular.read_csv(linear_csv, "price", "regression")
  raw_x, raw_y = table.splits["test"]["x"], table.splits["test"]["y"]
  np.testing.assert_array_equal(
    tabular.read_rows(linear_csv, run.preprocessing.features)[:3], _linear_rows()[0][:3]
  )
  on_raw = run.predict(raw_x, raw=True)
  seen = run.predict(run.test_data()["x"])
  prep = run.preprocessing
  np.testing.assert_allclose(on_raw.mean, prep.y_mean + prep.y_std * np.asarray(seen.mean), rtol=1e-5)
  np.testing.assert_allclose(on_raw.std, prep.y_std * np.asarray(seen.std), rtol=1e-5)
  report = run.evaluate()["regression"]
  rmse = float(np.sqrt(np.mean((on_raw.mean - raw_y) ** 2)))
  assert report["original_units"]["rmse"] == pytest.approx(rmse, rel=1e-4)
  assert rmse < 0.3  # the rule is learnt: the target's std is 2.3, its noise 0.1


@pytest.mark.slow
def test_a_classifier_on_raw_rows_names_its_classes(classes_csv, tmp_path):
  run = _fit(_config(classes_csv, target="kind", task="classification"), tmp_path / "cls")
  table = tabular.read_csv(classes_csv, "kind", "classification")
  raw_x = table.splits["test"]["x"]
  on_raw = run.predict(raw_x, raw=True)
  np.testing.assert_allclose(on_raw.probs, run.predict(run.test_data()["x"]).probs, rtol=1e-5, atol=1e-7)
  names = np.asarray(run.preprocessing.classes)[np.argmax(on_raw.probs, axis=1)]
  truth = np.where(raw_x[:, 0] + raw_x[:, 1] / 50.0 > 0, "up", "down")
  accuracy = float(np.mean(names == truth))
  assert run.evaluate()["in_distribution"]["accuracy"] == pytest.approx(accuracy)
  assert accuracy >= 0.95
  with pytest.raises(ValueError, match=r"takes \[B, 3\]: columns a, b, noise"):
    run.predict(raw_x[:, :2], raw=True)


# --- bad input: one line each, nothing written ------------------------------------


def _bad(tmp_path, kind):
  """(config, what the message must hold) of one bad file."""
  rows = [
    [1.0, 2.0, "x", "train"],
    [2.0, 3.0, "y", "train"],
    [3.0, 1.0, "x", "test"],
    [4.0, 5.0, "y", "test"],
  ]
  header = ["a", "b", "label", "part"]
  csv_path = tmp_path / "bad.csv"
  if kind == "missing file":
    return _config(tmp_path / "absent.csv", "label", "classification"), "absent.csv does not exist"
  if kind == "missing target":
    _write_csv(csv_path, header, rows)
    return _config(
      csv_path, "lable", "classification"
    ), "bad.csv has no column 'lable' .*did you mean 'label'"
  if kind == "non-numeric cell":
    rows[2][1] = "abc"
    _write_csv(csv_path, header, rows)
    return _config(csv_path, "label", "classification"), "bad.csv line 4 column 'b': 'abc' is not a number"
  if kind == "NaN cell":
    rows[1][0] = "NaN"
    _write_csv(csv_path, header, rows)
    return _config(csv_path, "label", "classification"), "bad.csv line 3 column 'a': a missing value"
  if kind == "one class":
    _write_csv(csv_path, header, [r[:2] + ["x"] + r[3:] for r in rows])
    config = _config(csv_path, "label", "classification", split_column="part")
    return config, "bad.csv column 'label': one class only"
  if kind == "split value":
    rows[3][3] = "val"
    _write_csv(csv_path, header, rows)
    config = _config(csv_path, "label", "classification", split_column="part")
    return config, "bad.csv column 'part' line 5: 'val' is neither 'train' nor 'test'"
  if kind == "npz lengths":
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    return _config(tmp_path / "bad.npz", "", ""), r"bad.npz: array 'x' has shape \(5, 2\), 'y' has 4 rows"
  if kind == "regression text":
    _write_csv(csv_path, header, rows)
    config = _config(csv_path, "label", "regression", split_column="part")
    return config, "bad.csv line 2 column 'label': 'x' is not a number"
  raise AssertionError(kind)


@pytest.mark.parametrize(
  "kind",
  [
    "missing file",
    "missing target",
    "non-numeric cell",
    "NaN cell",
    "one class",
    "split value",
    "npz lengths",
    "regression text",
  ],
)
def test_a_bad_file_is_one_line_and_nothing_is_written(tmp_path, kind):
  config, message = _bad(tmp_path, kind)
  workdir = tmp_path / "run"
  with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
    bnnjax.fit(config, str(workdir))
  assert "\n" not in str(error.value)
  assert not workdir.exists()


def test_config_fields_are_strict(linear_csv):
  c = bnnjax.base_config()
  c.data.name = "csv"
  c.data.targt = "price"
  with pytest.raises(ValueError, match="did you mean 'target'"):
    config_lib.resolve(c)
  with pytest.raises(ValueError, match="config.data.task must be 'classification' or 'regression'"):
    config_lib.validate(_config(linear_csv, task="regresion"))
  with pytest.raises(ValueError, match=r"config.data.test_fraction must be in \(0, 1\)"):
    config_lib.validate(_config(linear_csv, test_fraction=1.0))
  digits = bnnjax.base_config()
  digits.data.name = "digits"
  digits.data.path = linear_csv
  with pytest.raises(ValueError, match="config.data.path applies to csv and npz"):
    config_lib.validate(config_lib.resolve(digits))
