"""The contract between a model file and the one train loop.

A model module `bnnjax.models.<name>` exposes `make_task(config, info) -> Task`.
The loop (`bnnjax.train.fit`) knows nothing else about the model: it optimises
`Task.loss` with optax, calls `Task.evaluate` on every evaluation split and saves
whatever pytree `Task.init` returns (plain params, or a posterior pytree).
"""
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import jax

Params = Any  # any pytree of arrays
Batch = Mapping[str, jax.Array]  # {"x": inputs, "y": labels or targets}
Metrics = Mapping[str, jax.Array]  # scalar values


class DataInfo(NamedTuple):
  """What a model may know about its data before it sees a batch."""
  input_shape: Tuple[int, ...]  # one example's "x" shape, e.g. (28, 28, 1) or (784,)
  num_classes: int  # 0 for regression / density estimation
  num_train: int  # N in the per-example ELBO: NLL + beta * KL / N


class Task(NamedTuple):
  """Pure functions the train loop composes.

  init(rng, batch) -> params
  loss(params, rng, batch, step) -> (scalar loss to minimise, metrics)
      `step` is the global step (a traced int), for KL warm-up and the like.
  evaluate(params, rng, batch) -> metrics, each a mean over the batch; the loop
      averages them over a split weighting by batch size.
  """
  init: Callable[[jax.Array, Batch], Params]
  loss: Callable[[Params, jax.Array, Batch, jax.Array], Tuple[jax.Array, Metrics]]
  evaluate: Callable[[Params, jax.Array, Batch], Metrics]
