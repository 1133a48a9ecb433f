"""A small residual network for images (He et al. 2016's CIFAR ResNet-(6n+2)), without normalisation.

    x [B, H, W, C] -> conv 3x3 c_0 -> relu
      -> stage s = 0 .. S-1: n blocks of c_s channels (the first of stages s > 0 with stride 2)
      -> global average pool -> dense num_outputs

    block(x) = relu(shortcut(x) + conv_b(relu(conv_a(x))))    (conv_a, conv_b: 3x3)

shortcut is the identity, or a 1x1 convolution where the block changes the channels or the
stride. With the default three stages of (16, 32, 64) channels, n = blocks_per_stage = 1 gives
ResNet-8 (78k parameters for 10 classes), n = 3 ResNet-20 (272k).

Normalisation: none. A batch norm keeps running statistics, a state outside the weights: under
a posterior each weight sample would need its own, and the predictive would mix statistics of
one sample with weights of another. The residual branches start (nearly) at zero instead
(conv_b's weights initialised about 1e-3 of the usual scale, as Fixup and SkipInit start them
at zero; Zhang et al. 2019, De & Smith 2020), so the network starts as the shortcut path and
trains without normalisation.

Every layer is an hk.Conv2D or hk.Linear, so the network runs under any method ("point/resnet",
"mean_field/resnet" with the reparam, local or flipout estimators, "ensemble/resnet",
"dropout/resnet": dropout acts on the inputs of the dense layers after the first, so it needs
hidden_sizes, e.g. (64,)). Layers are named
resnet/stem, resnet/stage_<s>_block_<b>/{conv_a, conv_b, shortcut}, resnet/linear_0 (the output).

Network fields (`NETWORK_DEFAULTS`):
    stage_channels     channels of each stage (c_0 also the stem's)
    blocks_per_stage   n, residual blocks per stage
    activation         see bnnjax.models.mlp.ACTIVATIONS
    hidden_sizes       dense hidden layers after the pooling (default none, as He et al.)
"""

from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax.models import mlp
from bnnjax.task import DataInfo, Network

# conv_b's initial weight variance as a fraction of He's 1 / fan_in: the branches start at about
# 1e-3 of the shortcut's scale.
BRANCH_INIT_SCALE = 1e-6
NETWORK_DEFAULTS = dict(stage_channels=(16, 32, 64), blocks_per_stage=1, activation="relu", hidden_sizes=())


class Block(hk.Module):
  """One residual block: relu(shortcut(x) + conv_b(relu(conv_a(x)))), conv_b starting at zero."""

  def __init__(self, channels: int, stride: int, activation, name: str):
    super().__init__(name=name)
    self.channels, self.stride, self.act = channels, stride, activation

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.act(hk.Conv2D(self.channels, 3, stride=self.stride, name="conv_a")(x))
    # Nearly zero, not zero: XLA on CPU (jaxlib 0.10) read uninitialised memory when one jitted
    # init and apply met convolutions whose kernels it could prove zero (a fresh ResNet-20's
    # loss came out log 10, NaN or 1e17 from one compilation to the next).
    h = hk.Conv2D(self.channels, 3, w_init=hk.initializers.VarianceScaling(BRANCH_INIT_SCALE), name="conv_b")(
      h
    )
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.channels:
      shortcut = hk.Conv2D(self.channels, 1, stride=self.stride, name="shortcut")(x)
    return self.act(shortcut + h)


class ResNet(hk.Module):
  """The residual network as a Haiku module: images [B, H, W, C] -> outputs [B, num_outputs]."""

  def __init__(
    self,
    num_outputs: int,
    stage_channels: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 1,
    activation: str = "relu",
    hidden_sizes: Sequence[int] = (),
    name: str = "resnet",
  ):
    super().__init__(name=name)
    self.num_outputs = num_outputs
    self.stage_channels, self.blocks_per_stage = tuple(stage_channels), blocks_per_stage
    self.hidden_sizes = tuple(hidden_sizes)
    self.act = mlp.activation(activation)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.act(hk.Conv2D(self.stage_channels[0], 3, name="stem")(x))
    for s, channels in enumerate(self.stage_channels):
      for b in range(self.blocks_per_stage):
        stride = 2 if s > 0 and b == 0 else 1
        x = Block(channels, stride, self.act, name=f"stage_{s}_block_{b}")(x)
    x = jnp.mean(x, axis=(1, 2))  # global average pooling: [B, c_last]
    return mlp.dense_head(x, self.hidden_sizes, self.num_outputs, self.act)


def validate(m, info: DataInfo) -> None:
  """One-line ValueErrors naming the bad config.model field or input shape."""
  if len(info.input_shape) != 3:
    raise ValueError(f"resnet needs images [H, W, C], got inputs of shape {tuple(info.input_shape)}")
  channels = tuple(m.stage_channels)
  if not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
    raise ValueError(f"config.model.stage_channels must be positive integers, got {channels}")
  n = m.blocks_per_stage
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"config.model.blocks_per_stage must be a positive integer, got {n!r}")
  mlp.check_hidden_sizes(m.hidden_sizes)
  mlp.activation(m.activation)


def build(m, info: DataInfo, num_outputs: int):
  """The ResNet of the config's fields as a Haiku function x [B, H, W, C] -> [B, num_outputs]."""
  validate(m, info)
  fields = mlp.network_fields(m, NETWORK_DEFAULTS)
  return lambda x: ResNet(num_outputs, **fields)(x)


NETWORK = Network(name="resnet", default_config=lambda: dict(NETWORK_DEFAULTS), build=build)
