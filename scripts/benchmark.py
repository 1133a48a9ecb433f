r"""Steps per second of the jitted train step, for every model; the K-sample predictive's speed.

  python scripts/benchmark.py --batch_size=128 --width=400 --repeats=5

Data are synthetic arrays of the real shapes (no files read), so the figure is the cost of
the step itself: the same `make_update` that `bnnjax.fit` runs (a row's
config.steps_per_call steps per dispatch). Each row reports the median of --repeats timings
of --steps steps, after a warm-up that includes compilation; the repeats go round all rows
in turn, so the machine's slow spells fall on every row alike.

Besides steps/s: the ratio to the MLP and to the `mlp/two_copies` floor (the least a
mean-and-variance estimator can cost), the step's FLOPs (XLA's cost analysis of the
compiled step) as achieved GFLOP/s and as a fraction of a measured matmul peak, the
predictive's examples/s at K = 1, 16, 100 (`--eval_samples`), and peak memory (the
device's own statistics where it keeps them, else the process's resident set).
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import data, train
from bnnjax.config import load_config_file, resolve, with_overrides
from bnnjax.evaluation import predictive as evaluation_predictive
from bnnjax.task import DataInfo, Task

_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_WIDTH = flags.DEFINE_integer(
  "width",
  0,
  "Hidden width for models with hidden_sizes; 0 keeps each config's own (784-400-400-10 for the MLPs).",
)
_STEPS = flags.DEFINE_integer("steps", 200, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per row; the median is reported.")
_ONLY = flags.DEFINE_string("only", "", "Comma-separated row names to run (default: all).")
_JSON = flags.DEFINE_string("json", "", "Also write the results to this JSON file.")
_DEVICE = flags.DEFINE_string(
  "device", "", "Platform to run on (cpu, gpu, tpu); empty = JAX's default. The output names the device."
)
_EVAL_SAMPLES = flags.DEFINE_string(
  "eval_samples", "1,16,100", "K values of the predictive rows (examples/s); empty = none."
)
_EVAL_EXAMPLES = flags.DEFINE_integer(
  "eval_examples", 10_000, "Inputs per predictive timing (MNIST's test set)."
)
_PEAK_SIZE = flags.DEFINE_integer("peak_size", 2048, "n of the n x n x n matmul whose GFLOP/s is the peak.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (row name, config file, overrides). A row whose config file does not exist is skipped.
ROWS = [
  ("mlp", "configs/mlp_mnist.py", {}),
  # A reference, not a model: the MLP's loss on two independent copies of its params, i.e. the
  # matmul and Adam work of local reparameterisation / flipout (a mean and a variance path).
  ("mlp/two_copies", "configs/mlp_mnist.py", {}),
  ("bayes_mlp/reparam/K=1", "configs/bayes_mnist.py", {"model.estimator": "reparam", "model.num_samples": 1}),
  ("bayes_mlp/local/K=1", "configs/bayes_mnist.py", {"model.estimator": "local", "model.num_samples": 1}),
  ("bayes_mlp/flipout/K=1", "configs/bayes_mnist.py", {"model.estimator": "flipout", "model.num_samples": 1}),
  ("bayes_mlp/reparam/K=4", "configs/bayes_mnist.py", {"model.estimator": "reparam", "model.num_samples": 4}),
  ("bayes_mlp/local/K=4", "configs/bayes_mnist.py", {"model.estimator": "local", "model.num_samples": 4}),
  ("bayes_mlp/flipout/K=4", "configs/bayes_mnist.py", {"model.estimator": "flipout", "model.num_samples": 4}),
  ("bayes_mlp/local/K=1/mixture_kl_bound", "configs/bayes_mnist.py", {"model.mixture_kl": "bound"}),
  (
    "bayes_mlp/local/K=1/gaussian_prior",
    "configs/bayes_mnist.py",
    {"model.prior": "gaussian", "model.prior_scale": 1.0},
  ),
  (
    "bayes_mlp/reparam/K=1/gaussian_prior",
    "configs/bayes_mnist.py",
    {"model.estimator": "reparam", "model.prior": "gaussian", "model.prior_scale": 1.0},
  ),
  # bayes_mnist.py's stds are exp(log_std); the same step with softplus(rho) stds.
  (
    "bayes_mlp/local/K=1/gaussian_prior/softplus",
    "configs/bayes_mnist.py",
    {"model.prior": "gaussian", "model.prior_scale": 1.0, "model.posterior_scale": "softplus"},
  ),
  ("bayes_mlp/local/K=1/last_layer", "configs/bayes_mnist.py", {"model.bayesian": "last_layer"}),
  # The README's quickstart model on its offline data (digits): dispatch-bound, one step per
  # call against 100 steps per lax.scan call.
  ("quickstart/digits/N=1", "configs/quickstart.py", {"data.name": "digits", "steps_per_call": 1}),
  ("quickstart/digits/N=100", "configs/quickstart.py", {"data.name": "digits", "steps_per_call": 100}),
  ("vae", "configs/vae_mnist.py", {}),
  ("cvae", "configs/cvae_mnist.py", {}),
  ("dae", "configs/dae_mnist.py", {}),
  ("flow/moons", "configs/flow_moons.py", {}),
  ("flow/mnist", "configs/flow_mnist.py", {}),
  ("vae_flow", "configs/vae_flow_mnist.py", {}),
  ("vae_iaf", "configs/vae_iaf_mnist.py", {}),
]

# Bayesian convolutions: LeNet-5's deterministic step and its mean-field step under each estimator;
# `lenet_ratios` prints each step's time as a multiple of the deterministic LeNet-5 step's.
CONV_ROWS = [
  ("lenet5", "configs/lenet_mnist.py", {}),
  *(
    (f"bayes_lenet5/{e}", "configs/bayes_lenet_mnist.py", {"model.estimator": e})
    for e in ("reparam", "local", "flipout")
  ),
]
ROWS += CONV_ROWS

# The methods' steps on the MLP: an ensemble of M = 5 members in one vmapped step (compared with
# five MLP steps by `ensemble_ratio`), SWAG's SGD step with its moment update, SG-MCMC's steps.
ENSEMBLE_SIZE = 5
METHOD_ROWS = [
  (
    f"ensemble/mlp/M={ENSEMBLE_SIZE}",
    "configs/ensemble_digits.py",
    {"data.name": "mnist", "model.hidden_sizes": (400, 400), "model.ensemble_size": ENSEMBLE_SIZE},
  ),
  ("swag/mlp", "configs/swag_mnist.py", {"model.collect_every": 1}),
  ("sgmcmc/mlp/sghmc", "configs/sgmcmc_mnist.py", {}),
  ("sgmcmc/mlp/sgld", "configs/sgmcmc_mnist.py", {"model.sampler": "sgld"}),
]
ROWS += METHOD_ROWS


def ensemble_ratio(results, rates) -> None:
  """Adds and prints the ensemble step's rate over that of M separate MLP steps (#12's 1.2x target);
  `rates` are the unrounded steps/s by row name."""
  mlp = rates.get("mlp")
  for r in results:
    if mlp and r["model"] == METHOD_ROWS[0][0]:
      r["ratio_to_separate_mlp_steps"] = round(rates[r["model"]] * ENSEMBLE_SIZE / mlp, 3)
      print(f"\n{r['model']}: {r['ratio_to_separate_mlp_steps']}x the rate of {ENSEMBLE_SIZE} MLP steps")


def lenet_ratios(results, rates) -> None:
  """Adds and prints time_ratio_to_lenet5 (deterministic steps/s over the row's) for LeNet-5 rows;
  `rates` are the unrounded steps/s by row name."""
  base = rates.get("lenet5")
  if not base:
    return
  print("\n| LeNet-5 step (batch %d) | steps/s | time x deterministic |\n|---|---|---|" % _BATCH.value)
  for r in results:
    if r["model"] in {name for name, _, _ in CONV_ROWS}:
      r["time_ratio_to_lenet5"] = round(base / rates[r["model"]], 3)
      print(f"| {r['model']} | {r['steps_per_sec']} | {r['time_ratio_to_lenet5']} |")


# Shapes and class counts of the data sets, so that no data file is read.
SHAPES = {
  "mnist": ((28, 28, 1), 10, 60000),
  "fashion_mnist": ((28, 28, 1), 10, 60000),
  "digits": ((8, 8, 1), 10, 1437),
  "moons": ((2,), 0, 10000),
  "ring": ((2,), 0, 10000),
  "diabetes": ((10,), 0, 353),
  "toy_regression": ((1,), 0, 1000),
}


def load_config(path, overrides):
  config = with_overrides(load_config_file(os.path.join(REPO, path)).get_config(), overrides)
  if _WIDTH.value and "hidden_sizes" in config.model and "conv_channels" not in config.model:
    config.model.hidden_sizes = (_WIDTH.value,) * len(config.model.hidden_sizes)
  config.batch_size = _BATCH.value
  return resolve(config)


def synthetic_data(config, rng):
  shape, num_classes, _ = SHAPES[config.data.name]
  if config.data.flatten:
    shape = (int(np.prod(shape)),)
  n = 10 * config.batch_size
  x_rng, y_rng = jax.random.split(rng)
  # Binary pixels are valid input for every model (Bernoulli decoders included).
  x = jax.random.bernoulli(x_rng, 0.3, (n, *shape)).astype(jnp.float32)
  y = jax.random.randint(y_rng, (n,), 0, num_classes) if num_classes else jnp.zeros((n,), jnp.float32)
  info = DataInfo(input_shape=shape, num_classes=num_classes, num_train=SHAPES[config.data.name][2])
  return {"x": x, "y": y}, info


def two_copies(task: Task) -> Task:
  """The same task on a pair of independent params: twice the arithmetic of one step."""
  init = lambda rng, batch: (task.init(rng, batch), task.init(jax.random.fold_in(rng, 1), batch))

  def loss(params, rng, batch, step):
    (loss_a, metrics), (loss_b, _) = (task.loss(p, rng, batch, step) for p in params)
    return loss_a + loss_b, metrics

  return Task(init, loss, task.evaluate)


def compiled_step(config, twice=False):
  """(run, num_params, flops): run(n) times n jitted train steps (config.steps_per_call per
  dispatch) and returns steps per second; flops: XLA's count for one step."""
  train_data, info = synthetic_data(config, jax.random.PRNGKey(0))
  task = train.build_task(config, info)
  task = two_copies(task) if twice else task
  total_steps = 10_000
  optimizer = train.training_optimizer(task, config.optimizer, total_steps)
  params = task.init(jax.random.PRNGKey(1), jax.tree_util.tree_map(lambda a: a[:1], train_data))
  opt_state = optimizer.init(train.optimised_params(task, params))
  state = train.TrainState(params, opt_state, jax.random.PRNGKey(2), jnp.asarray(0))
  update = train.make_update(task, optimizer, config.seed, config.batch_size, total_steps=total_steps)
  order = data.epoch_order(config.seed, 0, len(train_data["y"]))
  per_call = config.steps_per_call
  acc = update.zeros(state, train_data)
  flops = step_flops(update, state, acc, train_data, order)
  carry = {"state": state, "acc": acc, "order": order}

  def run(num_steps):
    state, acc, order = carry["state"], carry["acc"], carry["order"]
    tic = time.perf_counter()
    for _ in range(max(num_steps // per_call, 1)):
      state, acc, order = update.run(state, acc, train_data, order, num_steps=per_call)
    jax.block_until_ready((state, acc))
    carry.update(state=state, acc=acc, order=order)
    return max(num_steps // per_call, 1) * per_call / (time.perf_counter() - tic)

  run(max(20, per_call))  # compile and warm up
  return run, sum(x.size for x in jax.tree_util.tree_leaves(params)), flops


def step_flops(update, state, acc, train_data, order):
  """FLOPs of one train step by XLA's cost analysis of the one-step call (None if not given)."""
  try:
    cost = update.run.lower(state, acc, train_data, order, num_steps=1).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None
  except Exception:  # pylint: disable=broad-except
    return None


def matmul_peak(size=2048, repeats=5):
  """GFLOP/s of a jitted [size, size] x [size, size] float32 matmul, the best of `repeats`."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
  mm = jax.jit(jnp.dot)
  jax.block_until_ready(mm(a, a))
  best = float("inf")
  for _ in range(repeats):
    tic = time.perf_counter()
    jax.block_until_ready(mm(a, a))
    best = min(best, time.perf_counter() - tic)
  return 2 * size**3 / best / 1e9


def predictive_rows(num_samples_list):
  """{row name: run}: run() times the K-sample predictive of configs/bayes_mnist_tempered.py
  (local reparameterisation, 784-400-400-10) over --eval_examples inputs in batches of 1000,
  as Run.predict and the loop's evaluation draw it, and returns examples per second."""
  config = load_config("configs/bayes_mnist_tempered.py", {})
  x, info = synthetic_data(config, jax.random.PRNGKey(0))
  task = train.build_task(config, info)
  params = task.init(jax.random.PRNGKey(1), jax.tree_util.tree_map(lambda a: a[:1], x))
  inputs = np.asarray(
    jax.random.bernoulli(jax.random.PRNGKey(3), 0.3, (_EVAL_EXAMPLES.value, *info.input_shape))
  )
  inputs = inputs.astype(np.float32)
  rows = {}
  for k in num_samples_list:

    def run(k=k):
      tic = time.perf_counter()
      evaluation_predictive.predict(task.predictor, params, inputs, k, jax.random.PRNGKey(4), batch_size=1000)
      return len(inputs) / (time.perf_counter() - tic)

    run()  # compile and warm up
    rows[f"predictive/bayes_mlp/local/K={k}"] = run
  return rows


def peak_memory():
  """{"device_peak_bytes": ...} where the device keeps memory statistics, and the process's
  peak resident set ("peak_rss_bytes", the host memory, which is the device's on CPU)."""
  out = {}
  stats = jax.devices()[0].memory_stats()  # None where the device keeps none (CPU)
  if stats and "peak_bytes_in_use" in stats:
    out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  out["peak_rss_bytes"] = int(rss if sys.platform == "darwin" else rss * 1024)
  return out


def device_name():
  """The device the rows ran on, in words: platform and kind (e.g. 'gpu: NVIDIA H200')."""
  device = jax.devices()[0]
  return (
    f"{device.platform}: {device.device_kind} ({len(jax.devices())} device(s), {os.cpu_count()} CPU cores)"
  )


def main(argv):
  del argv
  if _DEVICE.value:
    jax.config.update("jax_platforms", _DEVICE.value)
  only = set(filter(None, _ONLY.value.split(",")))
  rows = [
    (name, path, overrides)
    for name, path, overrides in ROWS
    if (not only or name in only) and os.path.exists(os.path.join(REPO, path))
  ]
  peak = matmul_peak(_PEAK_SIZE.value)
  steps = {
    name: compiled_step(load_config(path, overrides), twice=name.endswith("two_copies"))
    for name, path, overrides in rows
  }
  # --only names predictive rows as "predictive" (all K of --eval_samples) or one by its name.
  ks = [
    k
    for k in (int(k) for k in filter(None, _EVAL_SAMPLES.value.split(",")))
    if not only or "predictive" in only or f"predictive/bayes_mlp/local/K={k}" in only
  ]
  predictive = predictive_rows(ks) if ks else {}
  # Round robin: every repeat times each row once, so a slow spell of a noisy machine hits
  # all rows alike and the ratios to the MLP stay comparable.
  rates = {name: [] for name in [*steps, *predictive]}
  for _ in range(_REPEATS.value):
    for name, (run, *_) in steps.items():
      rates[name].append(run(_STEPS.value))
    for name, run in predictive.items():
      rates[name].append(run())
  results = []
  for name, (_, num_params, flops) in steps.items():
    rate = statistics.median(rates[name])
    row = {
      "model": name,
      "steps_per_sec": round(rate, 1),
      "params": int(num_params),
      "batch_size": _BATCH.value,
      "width": _WIDTH.value or "config",
    }
    if flops:
      row["gflop_per_step"] = round(flops / 1e9, 4)
      row["gflops"] = round(flops * rate / 1e9, 2)
      row["fraction_of_peak"] = round(flops * rate / 1e9 / peak, 3)
    results.append(row)
  base = next((r["steps_per_sec"] for r in results if r["model"] == "mlp"), None)
  floor = next((r["steps_per_sec"] for r in results if r["model"] == "mlp/two_copies"), None)
  for r in results:
    if base:
      r["ratio_to_mlp"] = round(r["steps_per_sec"] / base, 3)
    if floor:
      r["ratio_to_floor"] = round(r["steps_per_sec"] / floor, 3)
  medians = {name: statistics.median(rates[name]) for name in steps}
  lenet_ratios(results, medians)
  ensemble_ratio(results, medians)
  evals = [
    {"model": name, "examples_per_sec": round(statistics.median(rates[name]), 1)} for name in predictive
  ]
  summary = {
    "device": device_name(),
    "matmul_peak_gflops": round(peak, 1),
    **peak_memory(),
    "results": results,
    "predictive": evals,
  }
  print(f"device: {summary['device']}; matmul peak {peak:.1f} GFLOP/s")
  print("\n| model | steps/s | x MLP | x floor | GFLOP/s | of peak | params |\n|---|---|---|---|---|---|---|")
  for r in results:
    print(
      f"| {r['model']} | {r['steps_per_sec']} | {r.get('ratio_to_mlp', '')} | {r.get('ratio_to_floor', '')} "
      f"| {r.get('gflops', '')} | {r.get('fraction_of_peak', '')} | {r['params']:,} |"
    )
  if evals:
    print("\n| predictive (10k inputs, batches of 1000) | examples/s |\n|---|---|")
    for r in evals:
      print(f"| {r['model']} | {r['examples_per_sec']} |")
  memory = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in peak_memory().items())
  print(f"\npeak memory: {memory}")
  print(json.dumps(summary))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)


if __name__ == "__main__":
  app.run(main)
