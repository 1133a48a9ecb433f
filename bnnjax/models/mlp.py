"""Multi-layer perceptron classifier: the deterministic baseline.

    logits = W_L · act(... act(W_1 · flatten(x) + b_1) ...) + b_L
    loss   = − mean_i log softmax(logits_i)[y_i]
"""
from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from bnnjax.distributions import categorical_log_prob
from bnnjax.task import DataInfo, Task

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "elu": jax.nn.elu}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"config.model.activation: unknown activation {name!r}; "
                     f"choose one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def mlp(hidden_sizes: Sequence[int], num_outputs: int, activation_name: str = "relu"):
  """A plain Haiku MLP that flattens its input; call inside hk.transform."""
  return hk.Sequential([hk.Flatten(), hk.nets.MLP([*hidden_sizes, num_outputs],
                                                  activation=activation(activation_name))])


def default_model_config() -> ml_collections.ConfigDict:
  """Every config.model field with its default: configs start from it."""
  return ml_collections.ConfigDict({"name": "mlp", "hidden_sizes": (400, 400), "activation": "relu"})


def validate(config, info: DataInfo) -> None:
  sizes = tuple(config.model.get("hidden_sizes", (400, 400)))
  if not all(isinstance(s, int) and s > 0 for s in sizes):
    raise ValueError(f"config.model.hidden_sizes must be positive integers, got {sizes}")
  if info.num_classes < 2:
    raise ValueError(f"the mlp classifier needs a classification data set; "
                     f"{config.data.name!r} has {info.num_classes} classes")
  activation(config.model.get("activation", "relu"))


def make_network(config, info: DataInfo) -> hk.Transformed:
  sizes = tuple(config.model.get("hidden_sizes", (400, 400)))
  act = config.model.get("activation", "relu")
  return hk.without_apply_rng(hk.transform(lambda x: mlp(sizes, info.num_classes, act)(x)))


def make_task(config, info: DataInfo) -> Task:
  validate(config, info)
  net = make_network(config, info)

  def init(rng, batch):
    return net.init(rng, batch["x"])

  def loss(params, rng, batch, step):
    del rng, step
    log_lik = categorical_log_prob(net.apply(params, batch["x"]), batch["y"])
    nll = -jnp.mean(log_lik)
    return nll, {"nll": nll}

  def evaluate(params, rng, batch):
    del rng
    logits = net.apply(params, batch["x"])
    return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"]),
            "nll": -jnp.mean(categorical_log_prob(logits, batch["y"]))}

  return Task(init, loss, evaluate)


def predict_samples(params, rng, x, num_samples, config, info):
  """Logits [1, B, C]: a point estimate is a predictive with one sample."""
  del rng, num_samples
  return make_network(config, info).apply(params, x)[None]
