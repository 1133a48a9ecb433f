"""What every method shares: starting from another run's trained weights; regression targets."""

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import checkpoint, posterior as post


def weights_from(trained, fresh_shapes, where: str):
  """A trained run's weights (its posterior means if it was Bayesian) as the network's params.

  Args:
    trained: the params pytree another run saved (plain params or a posterior).
    fresh_shapes: the network's params (or their jax.ShapeDtypeStruct), for shapes and dtypes.
    where: names the source in the one-line CheckpointError of a mismatch.
  Returns:
    Params shaped and typed like fresh_shapes.
  """
  if post.is_posterior(trained):
    trained = trained["mean"]
  checkpoint.check_compatible(trained, fresh_shapes, where)
  return jax.tree_util.tree_map(lambda t, f: jnp.asarray(t, f.dtype), trained, fresh_shapes)


def network_shapes(forward, info):
  """The Haiku params of `forward` as jax.ShapeDtypeStruct (nothing computed)."""
  example = jax.ShapeDtypeStruct((1, *info.input_shape), jnp.float32)
  return jax.eval_shape(hk.without_apply_rng(hk.transform(forward)).init, jax.random.PRNGKey(0), example)


def init_from_weights(forward, m, info, restored):
  """None, or the weights of the run config.model.init_from names, checked against forward's."""
  if not m.init_from:
    return None
  where = f"config.model.init_from={m.init_from!r}"
  return weights_from(restored["init_from"], network_shapes(forward, info), where)


def targets(batch) -> jax.Array:
  """batch["y"] as [B] (a regression target [B, 1] flattened)."""
  y = batch["y"]
  return y.reshape(y.shape[0]) if y.ndim == 2 else y
