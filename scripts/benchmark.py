r"""Steps per second of the jitted train step, for every model.

  python scripts/benchmark.py --batch_size=128 --width=400 --repeats=5

Data are synthetic arrays of the real shapes (no files read), so the figure is the cost of
the step itself: the same `make_update` that `bnnjax.fit` runs. Each row reports the median
of --repeats timings of --steps steps, after a warm-up that includes compilation.
"""
import json
import os
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import data, models, train
from bnnjax.config import load_config_file, with_overrides
from bnnjax.task import DataInfo, Task

_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_WIDTH = flags.DEFINE_integer("width", 0, "Hidden width for models with hidden_sizes; 0 keeps "
                              "each config's own (784-400-400-10 for the MLPs).")
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
    ("bayes_mlp/local/K=1/gaussian_prior", "configs/bayes_mnist.py", {"model.prior": "gaussian", "model.prior_scale": 1.0}),
    ("bayes_mlp/local/K=1/gaussian_prior/log_std", "configs/bayes_mnist.py",
     {"model.prior": "gaussian", "model.prior_scale": 1.0, "model.posterior_scale": "log_std"}),
    ("bayes_mlp/local/K=1/mixture_kl_bound/log_std", "configs/bayes_mnist.py",
     {"model.mixture_kl": "bound", "model.posterior_scale": "log_std"}),
    ("bayes_mlp/local/K=1/last_layer", "configs/bayes_mnist.py", {"model.bayesian": "last_layer"}),
    ("vae", "configs/vae_mnist.py", {}),
    ("cvae", "configs/cvae_mnist.py", {}),
    ("dae", "configs/dae_mnist.py", {}),
    ("flow/moons", "configs/flow_moons.py", {}),
    ("flow/mnist", "configs/flow_mnist.py", {}),
    ("vae_flow", "configs/vae_flow_mnist.py", {}),
]

# Shapes and class counts of the data sets, so that no data file is read.
SHAPES = {"mnist": ((28, 28, 1), 10, 60000), "fashion_mnist": ((28, 28, 1), 10, 60000),
          "digits": ((8, 8, 1), 10, 1437), "moons": ((2,), 0, 10000), "ring": ((2,), 0, 10000),
          "diabetes": ((10,), 0, 353), "toy_regression": ((1,), 0, 1000)}


def load_config(path, overrides):
  config = with_overrides(load_config_file(os.path.join(REPO, path)).get_config(), overrides)
  if _WIDTH.value and "hidden_sizes" in config.model:
    config.model.hidden_sizes = (_WIDTH.value,) * len(config.model.hidden_sizes)
  config.batch_size = _BATCH.value
  return config


def synthetic_data(config, rng):
  shape, num_classes, _ = SHAPES[config.data.name]
  if config.data.flatten:
    shape = (int(np.prod(shape)),)
  n = 10 * config.batch_size
  x_rng, y_rng = jax.random.split(rng)
  # Binary pixels are valid input for every model (Bernoulli decoders included).
  x = jax.random.bernoulli(x_rng, 0.3, (n, *shape)).astype(jnp.float32)
  y = (jax.random.randint(y_rng, (n,), 0, num_classes) if num_classes
       else jnp.zeros((n,), jnp.float32))
  info = DataInfo(input_shape=shape, num_classes=num_classes, num_train=SHAPES[config.data.name][2])
  return {"x": x, "y": y}, info


def two_copies(task: Task) -> Task:
  """The same task on a pair of independent params: twice the arithmetic of one step."""
  init = lambda rng, batch: (task.init(rng, batch), task.init(jax.random.fold_in(rng, 1), batch))

  def loss(params, rng, batch, step):
    (loss_a, metrics), (loss_b, _) = (task.loss(p, rng, batch, step) for p in params)
    return loss_a + loss_b, metrics

  return Task(init, loss, task.evaluate)


def steps_per_second(config, twice=False):
  train_data, info = synthetic_data(config, jax.random.PRNGKey(0))
  task = models.get(config.model.name).make_task(config, info)
  task = two_copies(task) if twice else task
  optimizer = train.make_optimizer(config.optimizer, 10_000)
  params = task.init(jax.random.PRNGKey(1), jax.tree_util.tree_map(lambda a: a[:1], train_data))
  state = train.TrainState(params, optimizer.init(params), jax.random.PRNGKey(2), jnp.asarray(0))
  update = train.make_update(task, optimizer, config.seed, config.batch_size)
  order = data.epoch_order(config.seed, 0, len(train_data["y"]))
  for _ in range(20):  # compile and warm up
    state, metrics = update(state, train_data, order)
  jax.block_until_ready(metrics)
  rates = []
  for _ in range(_REPEATS.value):
    tic = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = update(state, train_data, order)
    jax.block_until_ready((state, metrics))
    rates.append(_STEPS.value / (time.perf_counter() - tic))
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  return statistics.median(rates), num_params


def main(argv):
  del argv
  only = set(filter(None, _ONLY.value.split(",")))
  results = []
  for name, path, overrides in ROWS:
    if (only and name not in only) or not os.path.exists(os.path.join(REPO, path)):
      continue
    config = load_config(path, overrides)
    rate, num_params = steps_per_second(config, twice=name.endswith("two_copies"))
    results.append({"model": name, "steps_per_sec": round(rate, 1), "params": int(num_params),
                    "batch_size": _BATCH.value, "width": _WIDTH.value or "config"})
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
