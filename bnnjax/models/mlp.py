"""Multi-layer perceptron classifier: the deterministic baseline (a point estimate).

    logits = W_L · act(... act(W_1 · flatten(x) + b_1) ...) + b_L
    loss   = − mean_i log softmax(logits_i)[y_i]

The network `mlp` is shared with `bayes_mlp`; the method is `bnnjax.methods.point`.
"""
from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from bnnjax.methods import point
from bnnjax.task import DataInfo, Model, Task

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "elu": jax.nn.elu}


def activation(name: str):
  """The activation function called `name`; a one-line ValueError for an unknown one."""
  if name not in ACTIVATIONS:
    raise ValueError(f"config.model.activation: unknown activation {name!r}; "
                     f"choose one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def check_hidden_sizes(sizes) -> tuple:
  """The hidden widths as a tuple; a one-line ValueError unless each is a positive int."""
  sizes = tuple(sizes)
  if not all(isinstance(s, int) and s > 0 for s in sizes):
    raise ValueError(f"config.model.hidden_sizes must be positive integers, got {sizes}")
  return sizes


def mlp(hidden_sizes: Sequence[int], num_outputs: int, activation_name: str = "relu"):
  """A plain Haiku MLP that flattens its input [B, ...] to outputs [B, num_outputs].

  Call inside hk.transform. Its layers are named mlp/~/linear_0 ... linear_L.
  """
  return hk.Sequential([hk.Flatten(), hk.nets.MLP([*hidden_sizes, num_outputs],
                                                  activation=activation(activation_name))])


def default_model_config() -> ml_collections.ConfigDict:
  """Every config.model field with its default: configs start from it."""
  return ml_collections.ConfigDict({"name": "mlp", "hidden_sizes": (400, 400), "activation": "relu"})


def make_task(m, info: DataInfo, restored=None) -> Task:
  """The point-estimate classifier of the MLP `m.hidden_sizes`, `m.activation`."""
  del restored
  sizes = check_hidden_sizes(m.hidden_sizes)
  activation(m.activation)
  return point.make_task(lambda x: mlp(sizes, info.num_classes, m.activation)(x), info)


MODEL = Model(name="mlp", default_config=default_model_config, make_task=make_task)
