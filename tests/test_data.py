"""bnnjax.data: known label counts of the IDX files, tfds slices, batch order, bad input."""

import gzip
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnnjax
from bnnjax import data, datasets

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session", autouse=True)
def tfds_cache(tmp_path_factory):
  """Prepared records go to a per-session folder, never the user's ~/.cache."""
  with pytest.MonkeyPatch.context() as patch:
    path = tmp_path_factory.mktemp("tfds")
    patch.setenv("BNNJAX_TFDS_DIR", str(path))
    yield path


@pytest.fixture(scope="session")
def mnist_train(shared_data_dir):
  return data.load("mnist", "train", shared_data_dir)


@pytest.fixture(scope="session")
def mnist_test(shared_data_dir):
  return data.load("mnist", "test", shared_data_dir)


def counts(labels):
  return np.bincount(labels, minlength=10).tolist()


# --- IDX image sets -----------------------------------------------------------


def test_mnist_shapes_and_label_counts(mnist_train, mnist_test):
  assert mnist_train["x"].shape == (60000, 28, 28, 1) and mnist_train["x"].dtype == np.float32
  assert mnist_train["y"].dtype == np.int32
  assert counts(mnist_train["y"]) == MNIST_TRAIN_COUNTS
  assert mnist_test["x"].shape == (10000, 28, 28, 1)
  assert counts(mnist_test["y"]) == MNIST_TEST_COUNTS


def test_mnist_pixels_are_the_idx_pixels_over_255(mnist_test, shared_data_dir):
  """Records are shuffled when written, so compare per-class pixel sums with the IDX file."""
  images = datasets.read_idx(shared_data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
  labels = datasets.read_idx(shared_data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
  x, y = mnist_test["x"], mnist_test["y"]
  assert x.min() == 0.0 and x.max() == 1.0
  for digit in range(10):
    expected = images[labels == digit].sum(dtype=np.int64)
    assert np.rint(x[y == digit] * 255).astype(np.int64).sum() == expected


def test_data_dir_may_be_the_mnist_folder_itself(mnist_test, shared_data_dir):
  direct = data.load("mnist", "test", shared_data_dir / "mnist")
  np.testing.assert_array_equal(direct["y"], mnist_test["y"])
  np.testing.assert_array_equal(direct["x"], mnist_test["x"])


def test_flatten_and_static_binarisation(shared_data_dir):
  binary = data.load("mnist", "test", shared_data_dir, flatten=True, binarize="static")
  images = datasets.read_idx(shared_data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
  assert binary["x"].shape == (10000, 784)
  assert set(np.unique(binary["x"])) == {0.0, 1.0}
  # x > 0.5 <=> pixel / 255 > 0.5 <=> pixel >= 128
  assert binary["x"].sum() == (images >= 128).sum()


def test_tfds_slices_partition_the_split(mnist_train):
  head = data.load("mnist", "train[:90%]")
  tail = data.load("mnist", "train[90%:]")
  assert (len(head["y"]), len(tail["y"])) == (54000, 6000)
  np.testing.assert_array_equal(np.concatenate([head["y"], tail["y"]]), mnist_train["y"])


def test_fashion_mnist_has_6000_and_1000_per_class(shared_data_dir):
  train = data.load("fashion_mnist", "train", shared_data_dir)
  test = data.load("fashion_mnist", "test", shared_data_dir)
  assert counts(train["y"]) == [6000] * 10 and counts(test["y"]) == [1000] * 10
  assert train["x"].shape == (60000, 28, 28, 1)


def test_kmnist_test_split_and_missing_train_split(shared_data_dir):
  test = data.load("kmnist", "test", shared_data_dir)
  assert test["x"].shape == (10000, 28, 28, 1) and counts(test["y"]) == [1000] * 10
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
    data.load("kmnist", "train", shared_data_dir)


def write_idx(path, array):
  """A gzip IDX file of uint8 `array` (magic 0x08 = unsigned byte, then ndim)."""
  header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_cache_is_keyed_by_the_source_files(shared_data_dir, mnist_test, tmp_path):
  """A folder with other MNIST files gets its own preparation; neither leaks into the other."""
  mnist = shared_data_dir / "mnist"
  small = tmp_path / "mnist"
  small.mkdir()
  images = datasets.read_idx(mnist / "t10k-images-idx3-ubyte.gz")[:100]
  labels = datasets.read_idx(mnist / "t10k-labels-idx1-ubyte.gz")[:100]
  write_idx(small / "t10k-images-idx3-ubyte.gz", images)
  write_idx(small / "t10k-labels-idx1-ubyte.gz", labels)
  assert datasets.source_key(small) != datasets.source_key(mnist)

  subset = data.load("mnist", "test", small)
  assert counts(subset["y"]) == counts(labels)
  assert len(data.load("mnist", "test", shared_data_dir)["y"]) == 10000

  copy = tmp_path / "copy"
  shutil.copytree(small, copy)
  assert datasets.source_key(copy) == datasets.source_key(small)  # content, not path


# --- bad input ------------------------------------------------------------------


def test_unknown_data_set_lists_valid_names():
  with pytest.raises(ValueError, match="unknown data set 'cifar10'.*mnist.*toy_regression"):
    data.load("cifar10")
  with pytest.raises(ValueError, match="unknown data set"):
    data.num_classes("cifar10")


@pytest.mark.parametrize("name", ["mnist", "digits"])
def test_unknown_split(name):
  with pytest.raises(ValueError, match="unknown split 'valid'"):
    data.load(name, "valid")


def test_data_dir_without_files_names_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
    data.load("mnist", "train", tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.load("mnist", "train", tmp_path / "absent")


def test_folder_of_another_data_set_is_refused(shared_data_dir):
  with pytest.raises(ValueError, match="holds fashion_mnist, not mnist"):
    data.load("mnist", "test", shared_data_dir / "fashion-mnist")


def test_bad_binarize():
  with pytest.raises(ValueError, match="unknown binarize 'dynamic'"):
    data.load("digits", binarize="dynamic")
  with pytest.raises(ValueError, match="needs inputs in"):
    data.load("diabetes", binarize="static")


def test_batch_size_larger_than_split():
  small = {"x": np.zeros((10, 2), np.float32), "y": np.zeros(10, np.int32)}
  with pytest.raises(ValueError, match="batch_size 11 exceeds the 10 examples"):
    data.batch_at(small, 0, 0, 11)
  with pytest.raises(ValueError, match="positive"):
    data.steps_per_epoch(10, 0)


# --- batch order ----------------------------------------------------------------


def indexed(n):
  """A split whose x and y are the example index, so a batch shows which rows it took."""
  return {"x": jnp.arange(n, dtype=jnp.float32)[:, None], "y": jnp.arange(n, dtype=jnp.int32)}


def test_batch_is_the_documented_chunk_of_the_epoch_permutation():
  split = indexed(10)
  steps = data.steps_per_epoch(10, 3)
  assert steps == 3  # remainder dropped
  for step in (0, 2, 3, 7):
    epoch, position = divmod(step, steps)
    order = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(5), epoch), 10)
    np.testing.assert_array_equal(
      data.batch_at(split, 5, step, 3)["y"], order[3 * position : 3 * position + 3]
    )


def test_a_cached_epoch_order_gives_the_same_batches():
  split = indexed(10)
  order = data.epoch_order(5, 2, 10)  # steps 6, 7, 8 are epoch 2 at 3 steps per epoch
  for step in (6, 7, 8):
    np.testing.assert_array_equal(
      data.batch_at(split, 5, step, 3, order)["y"], data.batch_at(split, 5, step, 3)["y"]
    )


def test_each_epoch_is_a_new_permutation_of_the_data():
  split = indexed(12)
  batch = jax.jit(data.batch_at, static_argnums=3)
  epochs = [np.concatenate([batch(split, 0, e * 3 + i, 4)["y"] for i in range(3)]) for e in range(2)]
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(12))
  assert not np.array_equal(epochs[0], epochs[1])


def test_batch_order_is_pure_in_seed_and_step():
  split = indexed(100)
  batch = jax.jit(data.batch_at, static_argnums=3)
  run = [batch(split, 1, step, 8)["y"] for step in range(30)]
  resumed = [batch(split, 1, step, 8)["y"] for step in range(17, 30)]  # restart mid-epoch 1
  np.testing.assert_array_equal(np.stack(run[17:]), np.stack(resumed))
  np.testing.assert_array_equal(data.batch_at(split, 1, 17, 8)["y"], run[17])  # eager == jit
  np.testing.assert_array_equal(batch(split, 1, 17, 8)["x"][:, 0], run[17])  # x follows y
  assert not np.array_equal(batch(split, 2, 0, 8)["y"], run[0])


def test_eval_batches_cover_the_split_once_in_order():
  split = {"x": np.arange(10.0)[:, None], "y": np.arange(10)}
  batches = list(data.eval_batches(split, 4))
  assert [len(b["y"]) for b in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b["y"] for b in batches]), np.arange(10))


# --- small sets -----------------------------------------------------------------


def test_digits_split_is_fixed_80_20_and_covers_sklearn():
  from sklearn.datasets import load_digits

  train, test = data.load("digits", "train"), data.load("digits", "test")
  assert train["x"].shape[1:] == (8, 8, 1) and (len(train["y"]), len(test["y"])) == (1438, 359)
  assert train["x"].min() == 0.0 and train["x"].max() == 1.0
  assert (counts(train["y"]) + np.array(counts(test["y"]))).tolist() == counts(load_digits().target)
  np.testing.assert_array_equal(data.load("digits", "train")["x"], train["x"])
  head = data.load("digits", "train[:50%]")
  np.testing.assert_array_equal(head["y"], train["y"][:719])
  assert data.num_classes("digits") == 10


def test_diabetes_is_standardised_with_train_statistics():
  train, test = data.load("diabetes", "train"), data.load("diabetes", "test")
  assert train["x"].shape == (354, 10) and test["x"].shape == (88, 10)
  np.testing.assert_allclose(train["x"].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(train["x"].std(0), 1, atol=1e-5)
  np.testing.assert_allclose([train["y"].mean(), train["y"].std()], [0, 1], atol=1e-5)
  assert abs(test["y"].mean()) > 1e-3  # test statistics were not used
  assert data.num_classes("diabetes") == 0


def test_toy_regression_recovers_its_line_and_has_a_gap():
  train = data.load("toy_regression", "train")
  x, y = train["x"][:, 0], train["y"]
  slope, intercept = np.polyfit(x, y, 1)
  assert abs(slope - data.TOY_SLOPE) < 0.03 and abs(intercept - data.TOY_INTERCEPT) < 0.03
  residual = y - (data.TOY_SLOPE * x + data.TOY_INTERCEPT)
  assert abs(residual.std() - data.TOY_NOISE_STD) < 0.02
  assert not np.any(np.abs(x) < 1.0)  # nothing inside the gap (-1, 1)
  assert (x < 0).any() and (x > 0).any()
  np.testing.assert_array_equal(data.load("toy_regression", "train")["y"], y)


def test_moons_and_ring_are_density_sets():
  moons = data.load("moons", "train")
  np.testing.assert_allclose(moons["x"].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(moons["x"].std(0), 1, atol=1e-5)
  ring = data.load("ring", "train")
  radius = np.linalg.norm(ring["x"], axis=1)
  assert abs(radius.mean() - data.RING_RADIUS) < 0.02
  angle = np.round(np.arctan2(ring["x"][:, 1], ring["x"][:, 0]) / (2 * np.pi / data.RING_MODES))
  assert len(np.unique(angle % data.RING_MODES)) == data.RING_MODES
  for split in (moons, ring):
    assert split["y"].shape == (2000,) and not split["y"].any()
  assert len(data.load("ring", "test")["y"]) == 1000
  assert data.num_classes("moons") == data.num_classes("ring") == 0


def test_labelled_moons_are_two_overlapping_classes_standardised_on_train():
  train, test = data.load("labelled_moons", "train"), data.load("labelled_moons", "test")
  assert train["x"].shape == (200, 2) and test["x"].shape == (1000, 2)
  assert set(np.unique(train["y"])) == {0, 1} and data.num_classes("labelled_moons") == 2
  np.testing.assert_allclose(train["x"].mean(0), 0, atol=1e-5)
  # The upper moon (label 0) lies above the lower one on average; the noise makes them overlap.
  assert train["x"][train["y"] == 0, 1].mean() > train["x"][train["y"] == 1, 1].mean() + 0.5
  linear = np.polyfit(train["x"][:, 0], train["x"][:, 1], 1)  # no line separates the classes
  above = train["x"][:, 1] > np.polyval(linear, train["x"][:, 0])
  assert 0.6 < np.mean(above == (train["y"] == 0)) < 0.95


# --- one data path: every entry point evaluates the loop's own split ----------------------

SYNTHETIC = ("digits", "diabetes", "toy_regression", "moons", "labelled_moons", "ring")


def _data_config(name, seed, **fields):
  config = bnnjax.base_config()
  config.data.name, config.data.seed, config.seed = name, seed, 1000 + seed  # training seed differs
  for key, value in fields.items():
    config.data[key] = value
  return config


def _run_of(config, info):
  """A Run as bnnjax.load builds it, without a trained model: its data path only."""
  return bnnjax.Run("unused", config, None, info, None)


@pytest.mark.parametrize("seed", [1, 7])
@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_entry_point_evaluates_the_split_the_loop_evaluated(name, seed):
  config = _data_config(name, seed)
  train, evals, info = data.load_splits(config.data)
  test = _run_of(config, info).test_data()  # what Run.evaluate, the scripts and the tutorials use
  for key in ("x", "y"):
    np.testing.assert_array_equal(test[key], evals["test"][key])
  # The data seed draws the split (digits, diabetes) or the sample (toys): another seed, another set.
  other = data.load_splits(_data_config(name, seed + 1).data)[1]["test"]
  assert not np.array_equal(other["x"], test["x"])
  if name in ("digits", "diabetes"):  # a fixed pool split by the data seed: no example in both
    train_rows = {row.tobytes() for row in np.asarray(train["x"])}
    assert not any(row.tobytes() in train_rows for row in np.asarray(test["x"]))


def test_mnist_entry_points_share_the_loop_split(shared_data_dir):
  config = _data_config(
    "mnist",
    3,
    data_dir=str(shared_data_dir),
    train_split="train[:1000]",
    eval_splits="val=train[50000:50500],test=test[:700]",
    flatten=True,
  )
  _, evals, info = data.load_splits(config.data)
  run = _run_of(config, info)
  np.testing.assert_array_equal(run.test_data()["x"], evals["test"]["x"])
  assert run.test_data()["x"].shape == (700, 784)


def test_the_validation_split_is_named_and_never_overlaps_training(shared_data_dir):
  config = _data_config("mnist", 0, data_dir=str(shared_data_dir))
  with pytest.raises(ValueError, match=r"validation_split is not set.*canonical one is 'train\[50000:\]'"):
    data.validation_split(config.data)
  config.data.validation_split = data.VALIDATION_SPLITS["mnist"]
  with pytest.raises(ValueError, match=r"shares 10000 examples with config.data.train_split 'train'"):
    bnnjax.config.validate(config)
  config.data.train_split = "train[:50000]"
  bnnjax.config.validate(config)
  run = _run_of(config, data.data_info(config.data, {"x": np.zeros((1, 28, 28, 1))}))
  validation = run.validation_data()
  assert validation["x"].shape == (10000, 28, 28, 1)
  train_part = data.load_split(config.data, "train[49000:50000]")
  assert not {r.tobytes() for r in train_part["x"]} & {r.tobytes() for r in validation["x"]}
  # A digits run may name a slice of its own pool; an overlap is refused there too.
  digits = _data_config("digits", 0, train_split="train[:80%]", validation_split="train[70%:]")
  with pytest.raises(ValueError, match="shares"):
    bnnjax.config.validate(digits)


def test_a_corrupt_gzip_file_is_one_line(tmp_path):
  good = gzip.compress(
    (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 2, 2)) + bytes(8)
  )
  for name, content in [("cut", good[: len(good) // 2]), ("garbage", b"not a gzip file at all")]:
    path = tmp_path / f"{name}.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"is not a readable gzip file .*download it again"):
      datasets.read_idx(path)
  path = tmp_path / "good.gz"
  path.write_bytes(good)
  assert datasets.read_idx(path).shape == (2, 2, 2)
