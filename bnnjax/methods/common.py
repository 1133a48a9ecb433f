"""What every method shares: starting from another run's trained weights; regression targets."""

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


def targets(batch) -> jax.Array:
  """batch["y"] as [B] (a regression target [B, 1] flattened)."""
  y = batch["y"]
  return y.reshape(y.shape[0]) if y.ndim == 2 else y
