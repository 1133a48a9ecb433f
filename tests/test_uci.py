"""The UCI regression benchmark: the split-format loader, the protocol's units, bad folders, one run.

A synthetic folder in the benchmark's layout (built in tmp_path) holds a linear target; the
real folders ($BNNJAX_DATA_DIR/uci) are read where present.
"""

import json
import os

import numpy as np
import pytest
from scipy import stats

import bnnjax
from bnnjax import config as config_lib, data, train
from bnnjax.datasets import uci
from bnnjax.evaluation import regression, uci as protocol
from bnnjax.sweep import uci as benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, COLUMNS, TARGET = 40, 4, 2  # target in the middle: features are columns 0, 1, 3
FEATURES = (0, 1, 3)


def _table(seed=0):
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(ROWS, COLUMNS)) * [1.0, 3.0, 1.0, 0.5] + [0.0, 10.0, 0.0, -2.0]
  table[:, TARGET] = (
    50.0 + 20.0 * (2.0 * table[:, 0] - 0.3 * table[:, 1] + table[:, 3]) + rng.normal(size=ROWS)
  )
  return table


def _write_folder(folder, table, num_splits=2, seed=0):
  """A UCI folder: data.txt, the column files and num_splits splits of 32 train / 8 test rows."""
  os.makedirs(folder, exist_ok=True)
  np.savetxt(folder / "data.txt", table, fmt="%.6f", delimiter="\t")
  (folder / "index_features.txt").write_text("\n".join(map(str, FEATURES)) + "\n")
  (folder / "index_target.txt").write_text(f"{TARGET}\n")
  rng = np.random.default_rng(seed)
  for i in range(num_splits):
    order = rng.permutation(ROWS)
    (folder / f"index_train_{i}.txt").write_text("\n".join(map(str, order[:32])) + "\n")
    (folder / f"index_test_{i}.txt").write_text("\n".join(map(str, order[32:])))  # no final newline
  return folder


@pytest.fixture
def folder(tmp_path):
  return _write_folder(tmp_path / "toy", _table())


def _config(folder, split_index=0, **data_fields):
  c = bnnjax.base_config()
  c.data.name = "uci"
  c.data.data_dir = str(folder)
  c.data.split_index = split_index
  for key, value in data_fields.items():
    c.data[key] = value
  return config_lib.resolve(c).data


def test_a_split_is_the_rows_its_index_files_list_in_their_order(folder):
  table = np.loadtxt(folder / "data.txt")
  for i in (0, 1):
    split = uci.read_split(folder, i)
    for part in ("train", "test"):
      rows = np.loadtxt(folder / f"index_{part}_{i}.txt", dtype=int)
      np.testing.assert_allclose(split[part]["x"], table[rows][:, FEATURES])
      np.testing.assert_allclose(split[part]["y"], table[rows, TARGET])
  assert uci.num_splits(folder) == 2


def test_standardised_with_the_trained_on_rows_only(folder):
  raw = uci.read_split(folder, 1)
  train = data.load_split(_config(folder, 1), "train")
  test = data.load_split(_config(folder, 1), "test")
  x_mean, x_std = raw["train"]["x"].mean(0), raw["train"]["x"].std(0)
  np.testing.assert_allclose(test["x"], (raw["test"]["x"] - x_mean) / x_std, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(train["y"].mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(train["y"].std(), 1.0, atol=1e-5)
  assert data.target_scale(_config(folder, 1)) == pytest.approx(
    (raw["train"]["y"].mean(), raw["train"]["y"].std())
  )
  # The 80/20 validation split: statistics of the first 80% of the training rows, never the rest's.
  c = _config(folder, 1, train_split="train[:80%]", validation_split="train[80%:]")
  first = raw["train"]["y"][:26]  # round(0.8 * 32) = 26
  val = data.load_split(c, "train[80%:]")
  np.testing.assert_allclose(val["y"], (raw["train"]["y"][26:] - first.mean()) / first.std(), rtol=1e-5)
  config = bnnjax.base_config()
  config.data = c
  config_lib.validate(config)  # no overlap: accepted
  c.validation_split = "train[70%:]"
  with pytest.raises(ValueError, match=r"shares \d+ examples"):
    data.check_validation_split(c)


def test_the_real_folders_load(uci_data_dir):
  shapes = {
    "concrete": (927, 103, 8),
    "energy": (691, 77, 8),
    "yacht": (277, 31, 6),
    "wine-quality-red": (1439, 160, 11),
  }
  for name, (n_train, n_test, dim) in shapes.items():
    c = _config("", 19, uci_name=name, data_dir=str(uci_data_dir))
    folder = data.uci_folder(c)
    assert folder == uci_data_dir / "uci" / name and uci.num_splits(folder) == 20
    train, test = data.load_split(c, "train"), data.load_split(c, "test")
    assert train["x"].shape == (n_train, dim) and test["x"].shape == (n_test, dim)
  # concrete split 0's first training row is data.txt's row index_train_0[0], target column 8
  table = np.loadtxt(uci_data_dir / "uci" / "concrete" / "data.txt")
  row = int(np.loadtxt(uci_data_dir / "uci" / "concrete" / "index_train_0.txt")[0])
  raw = uci.read_split(uci_data_dir / "uci" / "concrete", 0)
  np.testing.assert_array_equal(raw["train"]["x"][0], table[row, :8])
  assert raw["train"]["y"][0] == table[row, 8]


def test_gaussian_scored_back_in_original_units():
  """Known answer: a Gaussian predictive N(mu, s^2) on z = (y - m) / c is N(m + c mu, (c s)^2) on y."""
  rng = np.random.default_rng(0)
  m, c = 35.7, 16.7  # concrete's scale
  y = m + c * rng.normal(size=50)
  z = (y - m) / c
  mu, s = z + 0.3 * rng.normal(size=50), 0.4
  nll_z = -stats.norm.logpdf(z, mu, s).mean()
  rmse_z = np.sqrt(np.mean((mu - z) ** 2))
  out = regression.original_units(rmse_z, nll_z, c)
  assert out["log_likelihood"] == pytest.approx(stats.norm.logpdf(y, m + c * mu, c * s).mean(), rel=1e-12)
  assert out["rmse"] == pytest.approx(np.sqrt(np.mean((m + c * mu - y) ** 2)), rel=1e-12)
  assert out["log_likelihood"] == pytest.approx(-nll_z - np.log(c))  # 2.8 nats below, for concrete
  # The K-sample mixture: K identical draws are the one Gaussian; two draws are the mixture.
  assert protocol.mixture_log_likelihood(np.stack([mu] * 3), s, z).mean() == pytest.approx(-nll_z)
  two = protocol.mixture_log_likelihood(np.stack([mu, mu + 1.0]), s, z)
  expected = np.log(0.5 * stats.norm.pdf(z, mu, s) + 0.5 * stats.norm.pdf(z, mu + 1.0, s))
  np.testing.assert_allclose(two, expected, rtol=1e-10)


def test_the_noise_std_chosen_is_the_residuals_rms():
  """One draw: the Gaussian likelihood's best std is the RMS of the residuals (on the grid)."""
  rng = np.random.default_rng(1)
  y = rng.normal(size=2000)
  means = (y + 0.25 * rng.normal(size=2000))[None]
  best = protocol.best_noise_std(means, y)
  grid = np.asarray(protocol.NOISE_GRID)
  rms = np.sqrt(np.mean((means[0] - y) ** 2))
  assert best["noise_std"] == grid[np.argmin(np.abs(np.log(grid / rms)))]
  summary = protocol.mean_se([1.0, 2.0, 6.0])
  assert summary["se"] == pytest.approx(np.std([1, 2, 6], ddof=1) / np.sqrt(3)) and summary["median"] == 2.0


def _break(folder, kind):
  """Damages the folder one way; returns the file the error must name."""
  if kind == "missing index file":
    os.remove(folder / "index_test_0.txt")
    return "index_test_0.txt"
  if kind == "index out of range":
    (folder / "index_test_0.txt").write_text("3\n40\n")
    return "index_test_0.txt"
  if kind == "train and test overlap":
    train = (folder / "index_train_0.txt").read_text().split()
    (folder / "index_test_0.txt").write_text("\n".join(train[:2]))
    return "index_test_0.txt"
  if kind == "target among features":
    (folder / "index_features.txt").write_text("0 1 2 3\n")
    return "index_features.txt"
  if kind == "non-numeric cell":
    lines = (folder / "data.txt").read_text().splitlines()
    cells = lines[5].split("\t")
    cells[1] = "abc"
    lines[5] = "\t".join(cells)
    (folder / "data.txt").write_text("\n".join(lines))
    return "data.txt line 6"
  raise AssertionError(kind)


@pytest.mark.parametrize(
  "kind",
  [
    "missing index file",
    "index out of range",
    "train and test overlap",
    "target among features",
    "non-numeric cell",
  ],
)
def test_a_bad_folder_is_one_line_naming_the_file_and_nothing_is_written(folder, tmp_path, kind):
  named = _break(folder, kind)
  with pytest.raises((ValueError, FileNotFoundError)) as error:
    uci.read_split(folder, 0)
  assert named in str(error.value) and "\n" not in str(error.value)
  module = config_lib.load_config_file(os.path.join(REPO, "configs", "uci_point.py"))
  workdir = tmp_path / "bench"
  with pytest.raises((ValueError, FileNotFoundError), match=named):
    config = benchmark.base_config(module.get_config(), data_dir=str(folder))
    benchmark.run_benchmark(config, module.get_grid(), module.SELECT_NOISE, str(workdir))
  assert not workdir.exists()


def test_a_split_that_does_not_exist_names_the_ones_there_are(folder):
  with pytest.raises(
    FileNotFoundError, match=r"index_train_7.txt is missing: split 7 does not exist \(splits 0..1\)"
  ):
    uci.read_split(folder, 7)


def test_one_split_through_both_stages_scores_in_original_units(folder, tmp_path):
  """A validation run chooses the noise std on the 80/20 rows, the test run is scored under it;
  the table's RMSE and log-likelihood are the test predictive's mapped back to the target's units."""
  module = config_lib.load_config_file(os.path.join(REPO, "configs", "uci_point.py"))
  extra = {"num_epochs": 60, "batch_size": 8, "optimizer.lr": 1e-2}
  config = benchmark.base_config(module.get_config(), data_dir=str(folder), extra=extra)
  workdir = tmp_path / "bench"
  grid = [{}, {"optimizer.lr": 1e38}]  # the second diverges: it loses the choice, the benchmark goes on
  out = benchmark.run_benchmark(config, grid, module.SELECT_NOISE, str(workdir), splits=[0], method="point")
  (row,) = out["splits"]
  assert out["summary"]["n"] == 1 and os.path.isfile(workdir / "uci.md")
  val_trial, diverging = benchmark.validation_trials(config, grid, [0])
  assert (
    val_trial.config.data.train_split == "train[:80%]"
    and val_trial.config.data.eval_splits == "val=train[80%:]"
  )
  chosen = benchmark.choose_all([val_trial, diverging], str(workdir / "validation"), True, 1)[0]  # cached
  assert chosen["overrides"] == {} and chosen["scores"][1]["log_likelihood"] == float("-inf")
  assert "not finite" in chosen["scores"][1]["diverged"]
  (trial,) = benchmark.test_trials(config, [0], {0: chosen})
  run = bnnjax.load(str(workdir / "test" / trial.name))
  assert (
    run.config.data.train_split == "train" and run.config.model.noise_std == 0.3
  )  # trained at the fixed std
  raw = uci.read_split(folder, 0)
  y_mean, y_std = raw["train"]["y"].mean(), raw["train"]["y"].std()
  pred = np.asarray(run.predict(data.load_split(run.config.data, "test")["x"], num_samples=1).mean)
  rmse = np.sqrt(np.mean((y_mean + y_std * pred - raw["test"]["y"]) ** 2))
  assert row["rmse"] == pytest.approx(rmse, rel=1e-4)
  assert row["rmse"] < 0.5 * raw["test"]["y"].std()  # it learnt the linear target
  ll = stats.norm.logpdf(raw["test"]["y"], y_mean + y_std * pred, chosen["noise_std"] * y_std).mean()
  assert row["log_likelihood"] == pytest.approx(ll, rel=1e-4)


def test_a_laplace_posterior_is_chosen_with_its_noise_std_and_centred_on_the_map(
  folder, tmp_path, monkeypatch
):
  """configs/uci_laplace.py's scoring: KFAC Laplace fitted under each std of the grid, the best kept;
  the linearised predictive's mean is the point estimate's output."""
  module = config_lib.load_config_file(os.path.join(REPO, "configs", "uci_laplace.py"))
  extra = {"num_epochs": 60, "batch_size": 8, "optimizer.lr": 1e-2}
  config = benchmark.base_config(module.get_config(), data_dir=str(folder), extra=extra)
  (trial,) = benchmark.validation_trials(config, [{}], [0])
  train.fit(trial.config, str(tmp_path / "run"))
  run = bnnjax.load(str(tmp_path / "run"))
  grid = (0.05, 0.2, 0.8)  # three fits, not the grid's 21
  monkeypatch.setattr(protocol, "LAPLACE_NOISE_GRID", grid)
  score = protocol.validation_score(run, True, 64, laplace=module.LAPLACE)
  val = run.validation_data()

  def by_hand(std):
    means, stds = protocol.laplace_means(run, "kfac", std, val["x"], 64)
    assert np.all(np.asarray(stds) == np.float32(std))
    return protocol.mixture_log_likelihood(means, std, val["y"]).mean()

  lls = [by_hand(std) for std in grid]
  assert score["noise_std"] == grid[int(np.argmax(lls))] and score["log_likelihood"] == pytest.approx(
    max(lls)
  )
  test = run.test_data()
  means, _ = protocol.laplace_means(run, "kfac", score["noise_std"], test["x"], 4000)
  point = np.asarray(run.predict(test["x"], 1).mean)
  se = np.asarray(means).std(0) / np.sqrt(4000)
  assert np.all(np.abs(np.asarray(means).mean(0) - point) < 5 * se + 1e-5)  # GLM: centred on the MAP
  assert np.all(se > 0)


def test_the_nuts_reference_scores_every_draw_in_original_units_and_caches_each_split(folder, tmp_path):
  """configs/uci_hmc.py's path: one NUTS posterior per split (weights and noise std), its test
  predictive the mixture of every draw, scored in the target's units; a second call reads the
  cached score instead of sampling again."""
  module = config_lib.load_config_file(os.path.join(REPO, "configs", "uci_hmc.py"))
  assert module.NUTS and not module.get_grid()
  config = benchmark.base_config(module.get_config(), data_dir=str(folder))
  nuts = dict(module.NUTS, num_chains=2, num_warmup=30, num_samples=20, map_steps=500, max_num_doublings=5)
  workdir = tmp_path / "hmc"
  out = benchmark.run_nuts_benchmark(config, nuts, str(workdir), splits=[1])
  (row,) = out["splits"]
  score_file = workdir / "test" / "split_1" / "score.json"
  score = json.loads(score_file.read_text())
  raw = uci.read_split(folder, 1)
  y_std = raw["train"]["y"].std()
  assert row["rmse"] == pytest.approx(score["rmse"] * y_std, rel=1e-6)
  assert row["log_likelihood"] == pytest.approx(-score["nll"] - np.log(y_std), rel=1e-6)
  assert row["rmse"] < 0.5 * raw["test"]["y"].std()  # the linear target is learnt
  # The noise's posterior sits near the residual std of the target (1 in its units), not at its start.
  assert 0.3 < score["noise_std"] * y_std < 3.0 and score["divergences"] >= 0
  mtime = os.path.getmtime(score_file)
  again = benchmark.run_nuts_benchmark(config, nuts, str(workdir), splits=[1])
  assert os.path.getmtime(score_file) == mtime and again["splits"] == out["splits"]
  assert os.path.isfile(workdir / "uci.md") and "| toy | hmc | 1 |" in (workdir / "uci.md").read_text()
  sgmcmc = config_lib.load_config_file(os.path.join(REPO, "configs", "uci_sgmcmc.py")).get_config()
  with pytest.raises(
    ValueError,
    match=r"^NUTS samples the weights of the point/mlp network; config.model.name is 'sgmcmc/mlp'$",
  ):
    benchmark.run_nuts_benchmark(
      benchmark.base_config(sgmcmc, data_dir=str(folder)), nuts, str(tmp_path / "x")
    )
