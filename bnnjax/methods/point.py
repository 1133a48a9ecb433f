"""A point estimate of the weights: maximum likelihood, the deterministic baseline.

    loss = − mean_i log softmax(f(x_i; w))[y_i]

Its predictive is a single draw (K = 1): the softmax of the network's logits.
"""
from typing import Callable

import haiku as hk
import jax.numpy as jnp

from bnnjax.distributions import categorical_log_prob
from bnnjax.task import CLASSIFIER, DataInfo, Method, Predictor, Task


def make_task(forward: Callable, info: DataInfo) -> Task:
  """A classifier Task of the Haiku function `forward(x) -> logits [B, C]`.

  Args:
    forward: called inside hk.transform with x [B, *info.input_shape].
    info: the data; needs num_classes >= 2.
  Returns:
    Task(init, loss, evaluate, predictor) whose params are the plain Haiku params.
  """
  if info.num_classes < 2:
    raise ValueError(f"a point-estimate classifier needs a classification data set "
                     f"(>= 2 classes), got num_classes={info.num_classes}")
  net = hk.without_apply_rng(hk.transform(forward))

  def init(rng, batch):
    return net.init(rng, batch["x"])

  def loss(params, rng, batch, step):
    del rng, step
    nll = -jnp.mean(categorical_log_prob(net.apply(params, batch["x"]), batch["y"]))
    return nll, {"nll": nll}

  def evaluate(params, rng, batch):
    del rng
    logits = net.apply(params, batch["x"])
    return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"]),
            "nll": -jnp.mean(categorical_log_prob(logits, batch["y"]))}

  def sample(params, rng, x, num_samples):
    del rng, num_samples  # a point estimate is a predictive with one sample
    return net.apply(params, x)[None]

  return Task(init, loss, evaluate, predictor=Predictor(CLASSIFIER, sample))


METHOD = Method(name="point", default_config=dict,
                make_task=lambda forward, m, info, restored: make_task(forward, info))
