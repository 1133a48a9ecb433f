"""The small ResNet: He et al.'s parameter counts, residual branches that start at zero, every
method and conv estimator on it, a short fit on digits, bad fields.

Hand counts on 28x28x1 with 10 classes (3x3 kernels, biases included): stem 160; a 16->16 block
2 x 2,320; a 16->32 block with stride 2: 4,640 + 9,248 + 544 (1x1 shortcut); a 32->64 block:
18,496 + 36,928 + 2,112; dense 650. ResNet-8 (n = 1): 77,418. Each further block: 4,640 (stage
0), 18,496 (stage 1), 73,856 (stage 2), so ResNet-20 (n = 3): 271,402.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bnnjax
from bnnjax import train
from bnnjax.config import base_config, resolve
from bnnjax.task import DataInfo
from bnnjax.train import build_task

MNIST = DataInfo((28, 28, 1), 10, 50000)
DIGITS = DataInfo((8, 8, 1), 10, 1000)
SMALL = dict(stage_channels=(4, 8), blocks_per_stage=1)


def _config(name, **fields):
  config = base_config()
  config.model = ml_collections.ConfigDict({"name": name, **fields})
  return resolve(config)


def _num_params(task, shape):
  batch = {"x": jax.ShapeDtypeStruct((1, *shape), jnp.float32), "y": jax.ShapeDtypeStruct((1,), jnp.int32)}
  params = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("blocks, expected", [(1, 77_418), (3, 271_402)])
def test_resnet_8_and_20_have_their_hand_counted_parameters(blocks, expected):
  point = build_task(_config("point/resnet", blocks_per_stage=blocks), MNIST)
  assert _num_params(point, (28, 28, 1)) == expected
  bayes = build_task(_config("mean_field/resnet", blocks_per_stage=blocks), MNIST)
  assert _num_params(bayes, (28, 28, 1)) == 2 * expected  # a mean and a scale per weight


def test_at_initialisation_the_residual_branches_add_almost_nothing():
  """conv_b starts near zero, so the output hardly depends on conv_a's weights until it trains."""
  network = models_network(SMALL)
  x = jax.random.uniform(jax.random.PRNGKey(0), (6, 8, 8, 1))
  params = network.init(jax.random.PRNGKey(1), x)
  blocks = [name for name in params if "_block_" in name]
  assert sorted({name.rsplit("/", 1)[1] for name in blocks}) == ["conv_a", "conv_b", "shortcut"]
  moved = _shift(params, "conv_a", 0.1)
  apply = jax.jit(network.apply)  # one compilation for the three calls
  out = apply(params, None, x)
  np.testing.assert_allclose(apply(moved, None, x), out, atol=1e-2 * float(np.abs(out).max()))
  assert not np.allclose(out, 0.0, atol=1e-3)
  # Once conv_b leaves zero, conv_a matters.
  assert not np.allclose(apply(_shift(moved, "conv_b", 0.1), None, x), out, atol=1e-3)


def _shift(params, layer_name, delta):
  """params with every weight and bias of the layers named `layer_name` moved by delta."""
  return {
    name: {k: v + delta if name.endswith(layer_name) else v for k, v in layer.items()}
    for name, layer in params.items()
  }


def models_network(fields):
  m = _config("point/resnet", **fields).model
  return hk.transform(bnnjax.models.NETWORKS["resnet"].build(m, DIGITS, 10))


def test_mean_field_resnet_at_a_tiny_std_is_the_point_network_at_its_means(estimator="local"):
  """Local reparameterisation covers the blocks' stride-2 3x3 and 1x1 convolutions (tests/test_conv.py
  checks both conv estimators' moments on every padding and stride)."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (5, 8, 8, 1))
  point = build_task(_config("point/resnet", **SMALL), DIGITS)
  bayes = build_task(_config("mean_field/resnet", estimator=estimator, init_std=1e-7, **SMALL), DIGITS)
  q = bayes.init(jax.random.PRNGKey(1), {"x": x})
  draws = jax.jit(lambda q: bayes.predictor.sample(q, jax.random.PRNGKey(2), x, 2))(q)
  expected = point.predictor.sample(q["mean"], None, x, 1)[0]
  np.testing.assert_allclose(draws, jnp.broadcast_to(expected, draws.shape), atol=1e-4)


def test_a_short_fit_on_digits_learns(tmp_path):
  config = bnnjax.config.with_overrides(
    _config("point/resnet", stage_channels=(8, 16), blocks_per_stage=1),
    {
      "data.name": "digits",
      "data.flatten": False,
      "optimizer.lr": 1e-2,
      "batch_size": 64,
      "num_steps": 400,
      "steps_per_call": 200,
      "eval_every": 400,
      "checkpoint_every": 400,
      "log_every": 400,
      "progress_bar": False,
    },
  )
  train.fit(config, str(tmp_path))
  metrics = bnnjax.load(str(tmp_path)).evaluate()["in_distribution"]
  assert metrics["accuracy"] > 0.9, metrics


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"stage_channels": (16, 0)}, r"^config.model.stage_channels must be positive integers"),
    ({"blocks_per_stage": 0}, r"^config.model.blocks_per_stage must be a positive integer, got 0"),
    ({"hidden_sizes": (-1,)}, r"^config.model.hidden_sizes must be positive integers"),
  ],
)
def test_bad_fields_are_one_line(fields, message):
  with pytest.raises(ValueError, match=message):
    build_task(_config("point/resnet", **fields), DIGITS)


def test_flat_inputs_are_refused_naming_the_shape():
  with pytest.raises(ValueError, match=r"^resnet needs images \[H, W, C\], got inputs of shape \(64,\)"):
    build_task(_config("point/resnet"), DataInfo((64,), 10, 1000))
