r"""Steps per second of the jitted train step, for every model.

  python scripts/benchmark.py --batch_size=128 --width=400 --repeats=5

Data are synthetic arrays of the real shapes (no files read), so the figure is the cost of
the step itself: the same `make_update` that `bnnjax.fit` runs. Each row reports the median
of --repeats timings of --steps steps, after a warm-up that includes compilation; the
repeats go round all rows in turn, so the machine's slow spells fall on every row alike.
"""

import json
import os
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import data, train
from bnnjax.config import load_config_file, resolve, with_overrides
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
  ("vae", "configs/vae_mnist.py", {}),
  ("cvae", "configs/cvae_mnist.py", {}),
  ("dae", "configs/dae_mnist.py", {}),
  ("flow/moons", "configs/flow_moons.py", {}),
  ("flow/mnist", "configs/flow_mnist.py", {}),
  ("vae_flow", "configs/vae_flow_mnist.py", {}),
  ("vae_iaf", "configs/vae_iaf_mnist.py", {}),
]

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
  if _WIDTH.value and "hidden_sizes" in config.model:
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
  """(run, num_params): run(n) times n jitted train steps and returns steps per second."""
  train_data, info = synthetic_data(config, jax.random.PRNGKey(0))
  task = train.build_task(config, info)
  task = two_copies(task) if twice else task
  optimizer = train.make_optimizer(config.optimizer, 10_000)
  params = task.init(jax.random.PRNGKey(1), jax.tree_util.tree_map(lambda a: a[:1], train_data))
  state = train.TrainState(params, optimizer.init(params), jax.random.PRNGKey(2), jnp.asarray(0))
  update = train.make_update(task, optimizer, config.seed, config.batch_size)
  order = data.epoch_order(config.seed, 0, len(train_data["y"]))
  carry = {"state": state}

  def run(num_steps):
    state = carry["state"]
    tic = time.perf_counter()
    for _ in range(num_steps):
      state, metrics = update(state, train_data, order)
    jax.block_until_ready((state, metrics))
    carry["state"] = state
    return num_steps / (time.perf_counter() - tic)

  run(20)  # compile and warm up
  return run, sum(x.size for x in jax.tree_util.tree_leaves(params))


def main(argv):
  del argv
  only = set(filter(None, _ONLY.value.split(",")))
  rows = [
    (name, path, overrides)
    for name, path, overrides in ROWS
    if (not only or name in only) and os.path.exists(os.path.join(REPO, path))
  ]
  steps = {
    name: compiled_step(load_config(path, overrides), twice=name.endswith("two_copies"))
    for name, path, overrides in rows
  }
  # Round robin: every repeat times each row once, so a slow spell of a noisy machine hits
  # all rows alike and the ratios to the MLP stay comparable.
  rates = {name: [] for name in steps}
  for _ in range(_REPEATS.value):
    for name, (run, _) in steps.items():
      rates[name].append(run(_STEPS.value))
  results = []
  for name, (_, num_params) in steps.items():
    rate = statistics.median(rates[name])
    results.append(
      {
        "model": name,
        "steps_per_sec": round(rate, 1),
        "params": int(num_params),
        "batch_size": _BATCH.value,
        "width": _WIDTH.value or "config",
      }
    )
    print(f"{name:<30} {rate:9.1f} steps/s  {num_params:>10,d} params", flush=True)
  base = next((r["steps_per_sec"] for r in results if r["model"] == "mlp"), None)
  if base:
    for r in results:
      r["ratio_to_mlp"] = round(r["steps_per_sec"] / base, 3)
  print("\n| model | steps/s | x MLP | params |\n|---|---|---|---|")
  for r in results:
    print(f"| {r['model']} | {r['steps_per_sec']} | {r.get('ratio_to_mlp', '')} | {r['params']:,} |")
  print(json.dumps({"device": str(jax.devices()[0]), "results": results}))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"device": str(jax.devices()[0]), "results": results}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
