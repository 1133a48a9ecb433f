"""Multi-layer perceptron classifier: the deterministic baseline (a point estimate).

    logits = W_L · act(... act(W_1 · flatten(x) + b_1) ...) + b_L
    loss   = − mean_i log softmax(logits_i)[y_i]

The network `NETWORK` ("mlp") runs under any method ("mean_field/mlp", ...); this model is the
point estimate on it, "point/mlp", under its historical name.
"""

from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from bnnjax.task import DataInfo, Network

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "elu": jax.nn.elu}


def activation(name: str):
  """The activation function called `name`; a one-line ValueError for an unknown one."""
  if name not in ACTIVATIONS:
    raise ValueError(
      f"config.model.activation: unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
    )
  return ACTIVATIONS[name]


def check_hidden_sizes(sizes) -> tuple:
  """The hidden widths as a tuple; a one-line ValueError unless each is a positive int."""
  sizes = tuple(sizes)
  if not all(isinstance(s, int) and s > 0 for s in sizes):
    raise ValueError(f"config.model.hidden_sizes must be positive integers, got {sizes}")
  return sizes


def dense_head(x: jax.Array, hidden_sizes: Sequence[int], num_outputs: int, act) -> jax.Array:
  """hk.Linear layers linear_0 ... linear_n (the last of num_outputs) with `act` between them,
  named inside the calling module: a conv net's features [B, D] -> outputs [B, num_outputs]."""
  sizes = (*hidden_sizes, num_outputs)
  for i, size in enumerate(sizes):
    x = hk.Linear(size, name=f"linear_{i}")(x)
    if i < len(sizes) - 1:
      x = act(x)
  return x


def network_fields(m, defaults) -> dict:
  """A network's fields of config.model (the keys of `defaults`), sequences as tuples (the
  Haiku modules' arguments; a config holds lists after a JSON round trip)."""
  return {key: tuple(m[key]) if isinstance(defaults[key], tuple) else m[key] for key in defaults}


def mlp(hidden_sizes: Sequence[int], num_outputs: int, activation_name: str = "relu"):
  """A plain Haiku MLP that flattens its input [B, ...] to outputs [B, num_outputs].

  Call inside hk.transform. Its layers are named mlp/~/linear_0 ... linear_L.
  """
  return hk.Sequential(
    [hk.Flatten(), hk.nets.MLP([*hidden_sizes, num_outputs], activation=activation(activation_name))]
  )


NETWORK_DEFAULTS = {"hidden_sizes": (400, 400), "activation": "relu"}


def build(m, info: DataInfo, num_outputs: int):
  """The MLP of m.hidden_sizes and m.activation as a Haiku function x -> [B, num_outputs]."""
  del info
  sizes = check_hidden_sizes(m.hidden_sizes)
  activation(m.activation)
  return lambda x: mlp(sizes, num_outputs, m.activation)(x)


NETWORK = Network(name="mlp", default_config=lambda: dict(NETWORK_DEFAULTS), build=build)


def default_model_config() -> ml_collections.ConfigDict:
  """Every config.model field of the model "mlp" (= "point/mlp") with its default."""
  from bnnjax import models  # pylint: disable=import-outside-toplevel

  return models.get("mlp").default_config()
