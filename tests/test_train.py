"""The generic loop: exact resume, logging, checkpoints, and each bad input."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest

import bnnjax
from bnnjax import checkpoint, train
from bnnjax.config import with_overrides
from bnnjax.task import Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits_config(**overrides):
  config = bnnjax.base_config()
  config.data.name = "digits"
  config.model.hidden_sizes = (32,)
  config.batch_size = 32
  config.optimizer.lr = 1e-2
  config.num_steps = 40
  config.eval_every = 20
  config.checkpoint_every = 10
  config.log_every = 10
  config.eval_batch_size = 200
  config.progress_bar = False
  return with_overrides(config, overrides)


def tree_equal(a, b):
  return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, a, b)))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  return workdir, train.fit(digits_config(), workdir)


def test_resume_is_bit_identical(uninterrupted, tmp_path):
  _, full = uninterrupted
  workdir = str(tmp_path)
  stopped = train.fit(digits_config(), workdir, stop_after=20)
  assert int(stopped.step) == 20
  assert not tree_equal(stopped.params, full.params)
  resumed = train.fit(digits_config(), workdir)
  assert int(resumed.step) == 40
  assert tree_equal(resumed.params, full.params)
  assert tree_equal(resumed.opt_state, full.opt_state)
  assert np.array_equal(resumed.rng, full.rng)


def test_fused_steps_are_bit_identical_to_one_step_and_resume(uninterrupted, tmp_path):
  """10 steps per lax.scan call: the same batches, the same math, so the same bits as N = 1,
  also when stopped between calls (step 23) and resumed; logs land on the same steps."""
  full_dir, full = uninterrupted
  workdir = str(tmp_path)
  stopped = train.fit(digits_config(steps_per_call=10), workdir, stop_after=23)
  assert int(stopped.step) == 23
  resumed = train.fit(digits_config(steps_per_call=10), workdir)
  assert int(resumed.step) == 40
  assert tree_equal(resumed.params, full.params)
  assert tree_equal(resumed.opt_state, full.opt_state)
  assert np.array_equal(resumed.rng, full.rng)

  def logged(folder, key):
    return {r["step"]: r[key] for r in bnnjax.writers.read_metrics(folder) if key in r}

  # Evaluations and logs land on the same steps (and the stop at 23 saves and logs there).
  assert logged(workdir, "test/accuracy") == logged(full_dir, "test/accuracy")
  assert set(logged(workdir, "train/loss")) == set(logged(full_dir, "train/loss")) | {23}
  for step in (10, 20, 40):
    np.testing.assert_allclose(
      logged(workdir, "train/loss")[step], logged(full_dir, "train/loss")[step], rtol=1e-6
    )


def test_a_fused_call_crossing_epochs_draws_the_batches_of_single_steps():
  """10 examples in batches of 3 (3 steps per epoch): one call of 10 steps crosses three
  epoch boundaries, redrawing the permutation inside the scan, and ends bit-identical to
  10 calls of one step; the summed loss is the sum of the single steps' losses."""

  def loss(params, rng, batch, step):
    value = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
    return value, {}

  task = Task(lambda rng, batch: {"w": jnp.zeros(3)}, loss, lambda params, rng, batch: {})
  xs = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
  train_data = {"x": jnp.asarray(xs), "y": jnp.asarray(np.arange(10, dtype=np.float32))}
  optimizer = train.make_optimizer(digits_config().optimizer, 10)
  update = train.make_update(task, optimizer, seed=3, batch_size=3)

  def fresh():
    params = task.init(None, None)
    return train.TrainState(params, optimizer.init(params), jax.random.PRNGKey(0), jnp.asarray(0))

  order = bnnjax.data.epoch_order(3, 0, 10)
  state, acc, order_out = update.run(
    fresh(), update.zeros(fresh(), train_data), train_data, order, num_steps=10
  )
  single, losses = fresh(), []
  for step in range(10):
    single_order = bnnjax.data.epoch_order(3, step // 3, 10)
    acc1 = update.zeros(single, train_data)
    single, acc1, _ = update.run(single, acc1, train_data, single_order, num_steps=1)
    losses.append(float(acc1.sums["loss"]))
  assert int(state.step) == 10 and tree_equal(state.params, single.params)
  assert np.array_equal(order_out, bnnjax.data.epoch_order(3, 3, 10))  # the order of step 10's epoch
  np.testing.assert_allclose(float(acc.sums["loss"]), sum(losses), rtol=1e-5)
  assert int(acc.bad) == 0


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"steps_per_call": 0}, "config.steps_per_call must be an integer >= 1, got 0"),
    ({"steps_per_call": 3}, "config.steps_per_call=3 does not divide config.log_every (10)"),
    (
      {"steps_per_call": 10, "eval_every": 25},
      "config.steps_per_call=10 does not divide config.eval_every (25)",
    ),
    (
      {"steps_per_call": 5, "checkpoint_every": 0},
      "config.steps_per_call=5 does not divide config.checkpoint_every (0 = once per epoch of 44 steps)",
    ),
    ({"profile_steps": "5"}, "config.profile_steps must be 'a:b' with 0 <= a < b, got '5'"),
    ({"profile_steps": "30:50"}, "config.profile_steps='30:50' lies outside the run's steps 0..40"),
  ],
)
def test_bad_steps_per_call_or_profile_range_is_one_line(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=re.escape(message)) as info:
    train.fit(digits_config(**overrides), str(tmp_path))
  assert "\n" not in str(info.value)
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_profile_steps_writes_a_trace(tmp_path):
  train.fit(digits_config(num_steps=10, profile_steps="4:6", steps_per_call=2), str(tmp_path))
  traces = [f for _, _, files in os.walk(tmp_path / "profile") for f in files if ".xplane.pb" in f]
  assert len(traces) == 1


def test_run_writes_metrics_config_and_events(uninterrupted):
  workdir, _ = uninterrupted
  records = bnnjax.writers.read_metrics(workdir)
  evals = [r for r in records if "test/accuracy" in r]
  assert [r["step"] for r in evals] == [20, 40]
  assert 0.5 < evals[-1]["test/accuracy"] <= 1.0  # 40 steps on digits: far above chance (0.1)
  assert evals[-1]["test/nll"] < evals[0]["test/nll"]
  assert all("train/loss" in r for r in records if "test/accuracy" not in r)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["hidden_sizes"] == [32]
  assert any(n.startswith("events") for n in os.listdir(os.path.join(workdir, "tensorboard")))
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps == [20, 30, 40]  # max_to_keep = 3


def test_restore_params_for_scripts(uninterrupted):
  workdir, full = uninterrupted
  params, config = checkpoint.restore_params(workdir)
  assert tree_equal(params, full.params)
  assert config.model.name == "mlp" and config.data.name == "digits"


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("optimizer.lr", -1e-3, "config.optimizer.lr must be positive"),
    ("optimizer.lr", float("inf"), "config.optimizer.lr must be finite, got inf"),
    ("optimizer.weight_decay", float("nan"), "config.optimizer.weight_decay must be finite"),
    ("batch_size", 0, "config.batch_size must be positive"),
    ("batch_size", 10_000, "exceeds the"),
    ("optimizer.name", "adagrad", "unknown optimizer"),
    ("model.name", "resnet9000", "unknown model 'resnet9000'"),
    ("model.hidden_sizes", (32, -4), "hidden_sizes must be positive"),
    ("data.name", "cifar1000", "cifar1000"),
    ("data.train_split", "validation", "validation"),
    ("optimizer.lr_multipliers", "rho=-2", "'rho=-2' is not 'key=positive factor'"),
    ("optimizer.lr_multipliers", "rho", "'rho' is not 'key=positive factor'"),
    ("optimizer.lr_multipliers", "rho=3", "lr_multipliers names .'rho'., but the params' top-level keys"),
  ],
)
def test_bad_config_is_a_one_line_error(tmp_path, field, value, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")) as info:
    train.fit(digits_config(**{field: value}), str(tmp_path))
  assert "\n" not in str(info.value)


def test_log_every_zero_logs_once_per_epoch(tmp_path):
  """0 means once per epoch, as for eval_every and checkpoint_every (digits: 44 steps of 32)."""
  train.fit(digits_config(log_every=0, num_steps=50, eval_every=50, checkpoint_every=50), str(tmp_path))
  records = bnnjax.writers.read_metrics(str(tmp_path))
  assert [r["step"] for r in records if "train/loss" in r] == [44, 50]


def test_lr_multipliers_scale_only_the_named_params():
  opt = bnnjax.base_config().optimizer
  opt.lr, opt.lr_multipliers = 1e-2, "rho=10"
  tx = train.make_optimizer(opt, total_steps=10)
  params = {"mean": {"w": jnp.ones(3)}, "rho": {"w": jnp.ones(3)}}
  grads = {"mean": {"w": jnp.array([1.0, -2.0, 0.5])}, "rho": {"w": jnp.array([3.0, -0.1, 1.0])}}
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is -lr * sign(g) per coordinate: 1e-2 for "mean", 1e-1 for "rho".
  np.testing.assert_allclose(updates["mean"]["w"], -1e-2 * np.sign(grads["mean"]["w"]), rtol=1e-4)
  np.testing.assert_allclose(updates["rho"]["w"], -1e-1 * np.sign(grads["rho"]["w"]), rtol=1e-4)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(ValueError, match="not writable"):
    train.fit(digits_config(), str(blocker / "run"))


def test_workdir_of_another_config_is_refused(uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(uninterrupted[0], workdir)
  with pytest.raises(checkpoint.CheckpointError, match="another config.model"):
    train.fit(digits_config(**{"model.hidden_sizes": (64,)}), workdir)


def test_run_saved_before_a_field_existed_resumes_at_its_default(uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(uninterrupted[0], workdir)
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    saved = json.load(f)
  del saved["optimizer"]["lr_multipliers"], saved["optimizer"]["grad_clip"]  # as an older bnnjax wrote
  with open(path, "w") as f:
    json.dump(saved, f)
  state = train.fit(digits_config(), workdir)  # defaults: resumes, at its last step
  assert int(state.step) == 40
  with pytest.raises(checkpoint.CheckpointError, match="another config.optimizer"):
    train.fit(digits_config(**{"optimizer.grad_clip": 1.0}), workdir)


def test_checkpoint_of_another_model_names_the_parameter(uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(uninterrupted[0], workdir)
  os.remove(os.path.join(workdir, "config.json"))  # only the checkpoint itself can tell now
  with pytest.raises(checkpoint.CheckpointError, match=r"linear_0.*shape \(32,\) there.*expects \(64,\)"):
    train.fit(digits_config(**{"model.hidden_sizes": (64,)}), workdir)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path):
  _, full = uninterrupted
  workdir = str(tmp_path)
  train.fit(digits_config(), workdir, stop_after=30)
  state_dir = os.path.join(workdir, "checkpoints", "30", "state")
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  resumed = train.fit(digits_config(), workdir)  # falls back to step 20 and replays 20..40
  assert tree_equal(resumed.params, full.params)


@pytest.mark.parametrize(
  "intervals, kept",
  [
    ({}, 10),  # log, evaluate and checkpoint on shared steps
    # Intervals that do not line up: the guard must still run before every save (step 15's
    # update is the first NaN one; a guard skipped on checkpoint steps would save step 20).
    ({"log_every": 7, "checkpoint_every": 5, "eval_every": 40}, 15),
  ],
)
def test_diverging_run_keeps_its_last_good_checkpoint(tmp_path, intervals, kept):
  def make_task(model_config, info, restored):
    def init(rng, batch):
      return {"w": jnp.zeros(())}

    def loss(params, rng, batch, step):
      value = jnp.where(step >= 15, jnp.nan, (params["w"] - 1.0) ** 2)
      return value, {}

    return Task(init, loss, lambda params, rng, batch: {"w": params["w"]})

  bnnjax.register(
    bnnjax.Model("diverging", lambda: ml_collections.ConfigDict({"name": "diverging"}), make_task)
  )
  config = digits_config(**{"model.name": "diverging", **intervals})
  with pytest.raises(FloatingPointError, match=f"last good checkpoint.*step {kept}\\)"):
    train.fit(config, str(tmp_path))
  params, _ = checkpoint.restore_params(str(tmp_path))
  assert np.isfinite(params["w"])
  assert checkpoint.make_manager(str(tmp_path)).latest_step() == kept


def test_fused_steps_name_the_first_non_finite_step_and_save_nothing_after_it(tmp_path):
  """Blow-up after step 4 inside a 5-step call: the guard names step 4, and no state of that
  call (step 5's would be the first checkpoint) is saved."""
  _register_linear_blowup()
  config = digits_config(
    **{
      "model.name": "linear_blowup",
      "optimizer.name": "sgd",
      "optimizer.momentum": 0.0,
      "optimizer.lr": 1e38,
      "checkpoint_every": 5,
      "log_every": 5,
      "steps_per_call": 5,
    }
  )
  with pytest.raises(FloatingPointError, match=r"after step 4; not checkpointed; no checkpoint was saved"):
    train.fit(config, str(tmp_path))
  assert checkpoint.make_manager(str(tmp_path)).latest_step() is None


def _register_linear_blowup():
  """sgd at lr 1e38 on the loss -w: step 4's loss (-3e38) is finite, its update makes w inf."""

  def make_task(model_config, info, restored):
    def loss(params, rng, batch, step):
      return -params["w"], {}

    return Task(lambda rng, batch: {"w": jnp.zeros(())}, loss, lambda params, rng, batch: {})

  bnnjax.register(
    bnnjax.Model("linear_blowup", lambda: ml_collections.ConfigDict({"name": "linear_blowup"}), make_task)
  )


def test_a_non_finite_state_is_never_checkpointed(tmp_path):
  """sgd at lr 1e38 on the loss -w: step 4's loss (-3e38) is finite, its update makes w inf."""

  def make_task(model_config, info, restored):
    def loss(params, rng, batch, step):
      return -params["w"], {}

    return Task(lambda rng, batch: {"w": jnp.zeros(())}, loss, lambda params, rng, batch: {})

  bnnjax.register(
    bnnjax.Model("linear_blowup", lambda: ml_collections.ConfigDict({"name": "linear_blowup"}), make_task)
  )
  config = digits_config(
    **{
      "model.name": "linear_blowup",
      "optimizer.name": "sgd",
      "optimizer.momentum": 0.0,
      "optimizer.lr": 1e38,
      "checkpoint_every": 1,
      "log_every": 1,
    }
  )
  with pytest.raises(FloatingPointError, match=r"step 4.*not checkpointed.*step 3\) is kept") as info:
    train.fit(config, str(tmp_path))
  assert "\n" not in str(info.value)
  params, _ = checkpoint.restore_params(str(tmp_path))
  assert params["w"] == np.float32(3e38)  # step 3's


def run_cli(*args):
  return subprocess.run(
    [sys.executable, os.path.join(REPO, "scripts", "train.py"), *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )


def test_cli_end_to_end(tmp_path):
  result = run_cli(
    "--config=configs/mlp_digits.py",
    f"--workdir={tmp_path}",
    "--config.num_steps=60",
    "--config.eval_every=30",
    "--config.progress_bar=False",
  )
  assert result.returncode == 0, result.stderr
  evals = [r for r in bnnjax.writers.read_metrics(str(tmp_path)) if "test/accuracy" in r]
  assert [r["step"] for r in evals] == [30, 60]
  assert "test/accuracy" in result.stdout  # the console table


def test_cli_unknown_config_field_is_one_line(tmp_path):
  result = run_cli("--config=configs/mlp_digits.py", f"--workdir={tmp_path}", "--config.model.hiden_sizes=8")
  assert result.returncode != 0
  assert "hiden_sizes" in result.stderr and "Traceback" not in result.stderr


def test_cli_field_of_another_model_is_one_line_naming_it(tmp_path):
  result = run_cli(
    "--config=configs/mlp_digits.py",
    f"--workdir={tmp_path}",
    "--config.model.name=swag/mlp",
    "--config.model.collect_every=5",
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip() == (
    "error: config.model has no field 'collect_every'; its fields are those of the config file's model"
  )


def test_cli_bad_flag_is_one_line(tmp_path):
  result = run_cli("--config=configs/mlp_digits.py", f"--workdir={tmp_path}", "--config.optimizer.lr=-0.1")
  assert result.returncode != 0
  assert "config.optimizer.lr must be positive" in result.stderr
  assert "Traceback" not in result.stderr


def test_cli_error_line_is_the_last_thing_on_stderr(tmp_path):
  """What a failed save's leftover threads print while the interpreter shuts down (TensorStore's
  "Event loop is closed") comes after the error line: stand-in, an atexit hook writing to fd 2."""
  script = os.path.join(REPO, "scripts", "train.py")
  noisy_run = (
    "import atexit, os, runpy, sys; atexit.register(os.write, 2, b'RuntimeError: Event loop is closed'); "
    f"sys.argv = [{script!r}] + sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
  )
  result = subprocess.run(
    [
      sys.executable,
      "-c",
      noisy_run,
      "--config=configs/mlp_digits.py",
      f"--workdir={tmp_path}",
      "--config.optimizer.lr=-0.1",
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr.strip() == "error: config.optimizer.lr must be positive, got -0.1"


@pytest.mark.slow
def test_mlp_learns_mnist_in_one_epoch(shared_data_dir, tmp_path):
  config = bnnjax.base_config()
  config.data.data_dir = str(shared_data_dir / "mnist")
  config.num_epochs, config.progress_bar = 1, False
  config.model.hidden_sizes = (128,)
  state = train.fit(config, str(tmp_path))
  final = [r for r in bnnjax.writers.read_metrics(str(tmp_path)) if "test/accuracy" in r][-1]
  assert int(state.step) == 468 and final["test/accuracy"] > 0.92  # chance is 0.10


def test_offline_machine_falls_back_to_bundled_digits(tmp_path, monkeypatch):
  """No local MNIST and no network: the run says so and trains on sklearn's digits."""
  monkeypatch.setattr(bnnjax.data, "default_data_dir", lambda: None)
  monkeypatch.setenv("BNNJAX_TFDS_DIR", str(tmp_path / "tfds"))
  monkeypatch.setattr(bnnjax.datasets.prepared, "_check_reachable", _unreachable)
  config = digits_config(**{"data.name": "mnist", "data.fallback": "digits", "num_steps": 5})
  train.fit(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["data"]["name"] == "digits"
  config.data.fallback = ""
  with pytest.raises(FileNotFoundError, match="unreachable"):
    train.fit(config, str(tmp_path / "run2"))


def _unreachable(name, url, timeout=5.0):
  raise bnnjax.datasets.DownloadUnavailable(f"{name}: no local IDX files and {url} is unreachable")


DATA_PARALLEL_SCRIPT = """
import sys, numpy as np, jax
sys.path.insert(0, {repo!r})
from tests.test_train import digits_config
from bnnjax import train
assert jax.device_count() == {devices}
state = train.fit(digits_config(**{{"num_steps": 20}}), {workdir!r})
np.savez({out!r}, *[np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)])
"""


def test_data_parallel_matches_one_device(tmp_path):
  """Two (simulated) devices split each batch; the result equals one device's up to rounding."""
  results = []
  for devices in (1, 2):
    out = str(tmp_path / f"params{devices}.npz")
    script = DATA_PARALLEL_SCRIPT.format(
      repo=REPO, devices=devices, out=out, workdir=str(tmp_path / f"run{devices}")
    )
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run(
      [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(out) as f:
      results.append([f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))])
  for one, two in zip(*results):
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-5)
  assert not np.allclose(results[0][0], 0)


def test_import_reads_no_flags():
  """A notebook imports bnnjax with no absl flags parsed, and no plotting stack loaded."""
  script = (
    "import sys; import bnnjax; from absl import flags; "
    "assert not flags.FLAGS.is_parsed(); assert 'matplotlib' not in sys.modules; "
    "assert bnnjax.base_config().model.name == 'mlp'"
  )
  result = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
  )
  assert result.returncode == 0, result.stderr[-2000:]


def test_one_step_per_call_compiles_no_loop(tmp_path):
  """N = 1 (the default) traces the step once, without lax.scan: XLA:CPU gives convolutions
  inside a loop non-canonical layouts (a ResNet-8 step measured 30x slower inside a scan of
  length 1 than as straight-line code); N > 1 is one scan."""
  config, task, train_data, _, info = train._prepare(digits_config(), str(tmp_path))
  optimizer = train.training_optimizer(task, config.optimizer, 40)
  update = train.make_update(task, optimizer, config.seed, config.batch_size)
  params = task.init(jax.random.PRNGKey(0), jax.tree_util.tree_map(lambda a: jnp.asarray(a[:1]), train_data))
  opt_state = optimizer.init(train.optimised_params(task, params))
  state = train.TrainState(params, opt_state, jax.random.PRNGKey(1), jnp.asarray(0, jnp.int32))
  order = bnnjax.data.epoch_order(config.seed, 0, info.num_train)
  acc = update.zeros(state, train_data)

  def primitives(n):
    run = lambda s, a: update.run.__wrapped__(s, a, train_data, order, num_steps=n)  # noqa: E731
    return {e.primitive.name for e in jax.make_jaxpr(run)(state, acc).jaxpr.eqns}

  assert "scan" not in primitives(1)
  assert "scan" in primitives(2)
