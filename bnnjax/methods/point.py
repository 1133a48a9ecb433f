"""A point estimate of the weights: maximum likelihood, the deterministic baseline.

    loss = − mean_i log softmax(f(x_i; w))[y_i]

Its predictive is a single draw (K = 1): the softmax of the network's logits.
"""

from typing import Callable

from typing import Any, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax.distributions import categorical_log_prob
from bnnjax.methods.common import weights_from
from bnnjax.task import CLASSIFIER, DataInfo, Method, Predictor, Task


def make_task(forward: Callable, info: DataInfo, initial_params: Optional[Any] = None) -> Task:
  """A classifier Task of the Haiku function `forward(x) -> logits [B, C]`.

  Args:
    forward: called inside hk.transform with x [B, *info.input_shape].
    info: the data; needs num_classes >= 2.
    initial_params: params to start from (fine-tuning a trained run), or None for a fresh init.
  Returns:
    Task(init, loss, evaluate, predictor) whose params are the plain Haiku params.
  """
  if info.num_classes < 2:
    raise ValueError(
      f"a point-estimate classifier needs a classification data set "
      f"(>= 2 classes), got num_classes={info.num_classes}"
    )
  net = hk.without_apply_rng(hk.transform(forward))

  def init(rng, batch):
    return net.init(rng, batch["x"]) if initial_params is None else initial_params

  def loss(params, rng, batch, step):
    del rng, step
    nll = -jnp.mean(categorical_log_prob(net.apply(params, batch["x"]), batch["y"]))
    return nll, {"nll": nll}

  def evaluate(params, rng, batch):
    del rng
    logits = net.apply(params, batch["x"])
    return {
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"]),
      "nll": -jnp.mean(categorical_log_prob(logits, batch["y"])),
    }

  def sample(params, rng, x, num_samples):
    del rng, num_samples  # a point estimate is a predictive with one sample
    return net.apply(params, x)[None]

  return Task(init, loss, evaluate, predictor=Predictor(CLASSIFIER, sample))


def method_task(forward: Callable, m, info: DataInfo, restored) -> Task:
  """The point estimate as a Method; m.init_from (restored["init_from"]) starts it from a
  trained run of the same network (its posterior means if that run was Bayesian)."""
  if not m.init_from:
    return make_task(forward, info)
  example = jax.ShapeDtypeStruct((1, *info.input_shape), jnp.float32)
  fresh = jax.eval_shape(hk.without_apply_rng(hk.transform(forward)).init, jax.random.PRNGKey(0), example)
  return make_task(
    forward, info, weights_from(restored["init_from"], fresh, f"config.model.init_from={m.init_from!r}")
  )


METHOD = Method(
  name="point", default_config=lambda: {"init_from": ""}, make_task=method_task, workdir_fields=("init_from",)
)
