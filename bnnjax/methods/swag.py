"""SWAG (Maddox et al. 2019): a Gaussian fitted to the iterates of SGD.

Starting from a trained run (`init_from`), SGD continues with config.optimizer (a constant,
fairly large learning rate is the paper's recipe), and every `collect_every` steps the weights
w_1 … w_n update the running moments

    w̄ = (1/n) Σ_i w_i,   w̄² = (1/n) Σ_i w_i²,   D = [w_i − w̄_i] for the last `rank` snapshots

(w̄_i: the mean after snapshot i, as in the paper's algorithm). The approximate posterior is

    rank = 0 (diagonal SWAG):   w = w̄ + Σ_diag^{1/2} z₁
    rank ≥ 1 (SWAG):            w = w̄ + (1/√2) Σ_diag^{1/2} z₁ + (1/√(2(R − 1))) D z₂
    Σ_diag = max(w̄² − w̄², 0),  z₁ ~ N(0, I_P),  z₂ ~ N(0, I_R),  R = min(n, rank) columns,

i.e. the covariance ½ Σ_diag + D Dᵀ / (2 (R − 1)). The predictive averages K networks drawn
from it; before the first snapshot it is the current weights.

Method fields (`DEFAULTS`): rank (0 … 20), collect_every (steps between snapshots),
eval_samples (K for the loop's evaluation), init_from.
The moments live in the run's params and are checkpointed with it (bit-identical resume).
"""

from typing import Callable

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax.methods import ensemble, point
from bnnjax.methods.common import init_from_weights, targets
from bnnjax.predictive import check_num_samples
from bnnjax.task import DataInfo, Method, Task, Trajectory

MAX_RANK = 20
DEFAULTS = dict(rank=10, collect_every=100, eval_samples=16, init_from="")


def validate(m) -> None:
  """One-line ValueErrors naming the bad config.model field."""
  if isinstance(m.rank, bool) or not isinstance(m.rank, int) or not 0 <= m.rank <= MAX_RANK:
    raise ValueError(f"config.model.rank must be an integer in [0, {MAX_RANK}] (0: diagonal), got {m.rank!r}")
  if isinstance(m.collect_every, bool) or not isinstance(m.collect_every, int) or m.collect_every < 1:
    raise ValueError(f"config.model.collect_every must be an integer >= 1, got {m.collect_every!r}")
  try:
    check_num_samples(m.eval_samples)
  except ValueError:
    raise ValueError(f"config.model.eval_samples must be an integer >= 1, got {m.eval_samples!r}") from None


def check_snapshots(m, total_steps: int) -> None:
  """A run must take at least `rank` snapshots (and two for a deviation matrix)."""
  snapshots = total_steps // m.collect_every
  if m.rank and snapshots < max(m.rank, 2):
    raise ValueError(
      f"config.model.rank={m.rank} needs at least {max(m.rank, 2)} snapshots, but {total_steps} steps "
      f"with collect_every={m.collect_every} take {snapshots}"
    )


def empty_moments(weights, rank: int) -> dict:
  """Moments before any snapshot: count 0, zeros shaped like the weights ([rank, ...] for D)."""
  zeros = lambda w: jnp.zeros_like(w)  # noqa: E731
  return {
    "mean": jax.tree_util.tree_map(zeros, weights),
    "sq_mean": jax.tree_util.tree_map(zeros, weights),
    "deviations": jax.tree_util.tree_map(lambda w: jnp.zeros((max(rank, 1), *w.shape), w.dtype), weights),
    "count": jnp.zeros((), jnp.int32),
  }


def add_snapshot(moments: dict, weights, take) -> dict:
  """The moments with `weights` added where `take` (a traced bool), unchanged otherwise."""
  count = moments["count"] + take.astype(jnp.int32)
  n = jnp.maximum(count, 1).astype(jnp.float32)

  def running(avg, w):  # in the weights' dtype (n is float32: a bfloat16 mean would become float32)
    return jnp.where(take, (avg + (w - avg) / n).astype(avg.dtype), avg)

  mean = jax.tree_util.tree_map(running, moments["mean"], weights)
  sq_mean = jax.tree_util.tree_map(lambda a, w: running(a, w * w), moments["sq_mean"], weights)
  rank = jax.tree_util.tree_leaves(moments["deviations"])[0].shape[0]
  slot = jnp.maximum(count - 1, 0) % rank

  def deviation(d, w, avg):
    return d.at[slot].set(jnp.where(take, w - avg, d[slot]))

  deviations = jax.tree_util.tree_map(deviation, moments["deviations"], weights, mean)
  return {"mean": mean, "sq_mean": sq_mean, "deviations": deviations, "count": count}


def sample_weights(moments: dict, weights, rng, rank: int):
  """One draw from the SWAG Gaussian (the current `weights` before the first snapshot)."""
  leaves, treedef = jax.tree_util.tree_flatten(moments["mean"])
  keys = jax.random.split(rng, len(leaves) + 1)
  count = moments["count"]
  columns = jnp.minimum(count, rank)
  z2 = jax.random.normal(keys[-1], (max(rank, 1),)) * (jnp.arange(max(rank, 1)) < columns)
  diag_scale = jnp.sqrt(0.5) if rank else 1.0
  low_rank_scale = 1.0 / jnp.sqrt(2.0 * jnp.maximum(columns - 1, 1))

  def draw(key, mean, sq_mean, deviations, w):
    std = jnp.sqrt(jnp.maximum(sq_mean - mean * mean, 0.0))
    theta = mean + diag_scale * std * jax.random.normal(key, mean.shape, mean.dtype)
    if rank:
      theta = theta + low_rank_scale * jnp.tensordot(z2, deviations, axes=1)
    return jnp.where(count > 0, theta.astype(w.dtype), w)

  flat = [jax.tree_util.tree_leaves(moments[k]) for k in ("sq_mean", "deviations")] + [
    jax.tree_util.tree_leaves(weights)
  ]
  drawn = [draw(k, m, s, d, w) for k, m, s, d, w in zip(keys, leaves, *flat)]
  return jax.tree_util.tree_unflatten(treedef, drawn)


def make_task(forward: Callable, m, info: DataInfo, initial_weights=None) -> Task:
  """The SWAG Task of a classifier `forward(x) -> logits [B, C]`.

  Params: {"weights": w, "collected": moments (see `empty_moments`)}.
  """
  validate(m)
  base = point.make_task(forward, info, initial_weights)
  net = hk.without_apply_rng(hk.transform(forward))

  def init(rng, batch):
    weights = base.init(rng, batch)
    return {"weights": weights, "collected": empty_moments(weights, m.rank)}

  def loss(params, rng, batch, step):
    return base.loss(params["weights"], rng, batch, step)

  def collect(moments, weights, steps_taken, total_steps):
    del total_steps
    return add_snapshot(moments, weights, steps_taken % m.collect_every == 0)

  def sample(params, rng, x, num_samples):
    draws = jax.vmap(lambda key: sample_weights(params["collected"], params["weights"], key, m.rank))(
      jax.random.split(rng, num_samples)
    )
    return ensemble.stacked_outputs(net.apply, draws, x)

  def evaluate(params, rng, batch):
    outputs = sample(params, rng, batch["x"], m.eval_samples)
    return ensemble.predictive_metrics(outputs, targets(batch), True, 1.0)

  def optimizer(total_steps):
    check_snapshots(m, total_steps)
    return None

  predictor = base.predictor._replace(sample=sample)
  return Task(init, loss, evaluate, predictor=predictor, trajectory=Trajectory(collect, optimizer))


def method_task(forward: Callable, m, info: DataInfo, restored) -> Task:
  """SWAG as a Method; m.init_from names the trained run whose SGD it continues."""
  return make_task(forward, m, info, init_from_weights(forward, m, info, restored))


METHOD = Method(
  name="swag", default_config=lambda: dict(DEFAULTS), make_task=method_task, workdir_fields=("init_from",)
)
