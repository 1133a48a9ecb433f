"""LeNet-5, the convolutional network of uncertainty-baselines' (Fashion-)MNIST table.

    x [B, H, W, C] -> conv 6@5x5 -> relu -> maxpool 2x2/2 -> conv 16@5x5 -> relu -> maxpool 2x2/2
      -> conv 120@5x5 -> relu -> flatten -> dense 84 -> relu -> dense num_outputs

every convolution and pooling with SAME padding, as uncertainty-baselines builds it (on
28x28 inputs: 28 -> 14 -> 7, a flatten of 7*7*120 = 5880 features, 545k parameters).
The network `NETWORK` ("lenet5") runs under any method: "point/lenet5" (deterministic),
"mean_field/lenet5" (every conv and dense layer Bayesian; the local-reparameterisation and
flipout estimators of `bnnjax.estimators` act on its hk.Conv2D and hk.Linear layers),
"ensemble/lenet5", "dropout/lenet5" (dropout on the dense layers' hidden inputs).

Network fields (`NETWORK_DEFAULTS`):
    conv_channels    output channels of each convolution
    kernel_size      the convolutions' square kernel
    conv_stride      the convolutions' stride
    padding          "SAME" | "VALID" (convolutions and pooling)
    hidden_sizes     widths of the dense hidden layers
    activation       see bnnjax.models.mlp.ACTIVATIONS
Layers are named lenet5/conv_0 ... conv_{n-1}, lenet5/linear_0 ... linear_m (the output).
"""

from typing import Sequence, Tuple

import haiku as hk
import jax

from bnnjax.models import mlp
from bnnjax.task import DataInfo, Network

PADDINGS = ("SAME", "VALID")
NETWORK_DEFAULTS = dict(
  conv_channels=(6, 16, 120),
  kernel_size=5,
  conv_stride=1,
  padding="SAME",
  hidden_sizes=(84,),
  activation="relu",
)


def _conv_size(size: int, kernel: int, stride: int, padding: str) -> int:
  """The output length of a convolution or pooling along one axis (XLA's SAME / VALID)."""
  if padding == "SAME":
    return -(-size // stride)
  return (size - kernel) // stride + 1


def feature_shapes(
  input_shape: Tuple[int, ...], channels: Sequence[int], kernel: int, stride: int, padding: str
) -> Tuple[Tuple[int, int], ...]:
  """The spatial shape after each conv + pool block; a one-line ValueError naming the first
  layer whose kernel or stride does not fit its input.

  Args:
    input_shape: one example's shape (H, W, C).
    channels, kernel, stride, padding: the network's conv fields.
  Returns:
    ((h, w) after block 0, ...), one per convolution.
  """
  if len(input_shape) != 3:
    raise ValueError(f"lenet5 needs images [H, W, C], got inputs of shape {tuple(input_shape)}")
  spatial = tuple(input_shape[:2])
  shapes = []
  for i in range(len(channels)):
    if padding == "VALID" and min(spatial) < kernel:
      raise ValueError(
        f"lenet5 layer conv_{i}: kernel {kernel}x{kernel} does not fit its {spatial[0]}x{spatial[1]} "
        "input with VALID padding (config.model.kernel_size / conv_stride / padding)"
      )
    spatial = tuple(_conv_size(s, kernel, stride, padding) for s in spatial)
    if i < len(channels) - 1:  # pooling after every conv but the last
      if padding == "VALID" and min(spatial) < 2:
        raise ValueError(
          f"lenet5 layer conv_{i}: its {spatial[0]}x{spatial[1]} output is too small for the 2x2 "
          "pooling with VALID padding (config.model.kernel_size / conv_stride / padding)"
        )
      spatial = tuple(_conv_size(s, 2, 2, padding) for s in spatial)
    shapes.append(spatial)
  return tuple(shapes)


class LeNet5(hk.Module):
  """LeNet-5 as a Haiku module: images [B, H, W, C] -> outputs [B, num_outputs]."""

  def __init__(
    self,
    num_outputs: int,
    conv_channels: Sequence[int] = (6, 16, 120),
    kernel_size: int = 5,
    conv_stride: int = 1,
    padding: str = "SAME",
    hidden_sizes: Sequence[int] = (84,),
    activation: str = "relu",
    name: str = "lenet5",
  ):
    super().__init__(name=name)
    self.num_outputs = num_outputs
    self.conv_channels = tuple(conv_channels)
    self.kernel_size, self.conv_stride, self.padding = kernel_size, conv_stride, padding
    self.hidden_sizes = tuple(hidden_sizes)
    self.act = mlp.activation(activation)

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, channels in enumerate(self.conv_channels):
      conv = hk.Conv2D(
        channels, self.kernel_size, stride=self.conv_stride, padding=self.padding, name=f"conv_{i}"
      )
      x = self.act(conv(x))
      if i < len(self.conv_channels) - 1:
        x = hk.max_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding=self.padding)
    x = hk.Flatten()(x)
    return mlp.dense_head(x, self.hidden_sizes, self.num_outputs, self.act)


def validate(m, info: DataInfo) -> None:
  """One-line ValueErrors naming the bad config.model field or the layer that does not fit."""
  channels = tuple(m.conv_channels)
  if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
    raise ValueError(f"config.model.conv_channels must be positive integers, got {channels}")
  for field in ("kernel_size", "conv_stride"):
    if isinstance(m[field], bool) or not isinstance(m[field], int) or m[field] < 1:
      raise ValueError(f"config.model.{field} must be a positive integer, got {m[field]!r}")
  if m.padding not in PADDINGS:
    raise ValueError(f"config.model.padding must be one of {', '.join(PADDINGS)}, got {m.padding!r}")
  mlp.check_hidden_sizes(m.hidden_sizes)
  mlp.activation(m.activation)
  feature_shapes(info.input_shape, channels, m.kernel_size, m.conv_stride, m.padding)


def build(m, info: DataInfo, num_outputs: int):
  """LeNet-5 of the config's fields as a Haiku function x [B, H, W, C] -> [B, num_outputs]."""
  validate(m, info)
  fields = mlp.network_fields(m, NETWORK_DEFAULTS)
  return lambda x: LeNet5(num_outputs, **fields)(x)


NETWORK = Network(name="lenet5", default_config=lambda: dict(NETWORK_DEFAULTS), build=build)
