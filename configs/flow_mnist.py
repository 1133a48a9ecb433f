"""RealNVP on dequantised MNIST: 6 affine couplings with checkerboard masks over the 28x28
pixels, each conditioner an MLP 784-256-256-1568 on the kept pixels (about 4M parameters).

Pixels k/255 are dequantised to (k + u) / 256 and logit-transformed (alpha = 0.05); the
reported test/bits_per_dim refer to the discrete 8-bit images (see bnnjax/models/flow.py).
A small CPU budget (2000 steps of 64, about 2 epochs): 2.92 test bits/dim measured, still
falling. Convolutional ResNet couplings (as in the RealNVP paper) would do far better.

  python scripts/train.py --config=configs/flow_mnist.py --workdir=runs/flow_mnist
  python scripts/flow_plots.py --workdir=runs/flow_mnist
"""

from bnnjax.config import base_config
from bnnjax.models.flow import default_model_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.data.flatten = False  # (28, 28, 1) so the masks are a spatial checkerboard
  c.model = default_model_config()
  c.model.num_coupling_layers = 6
  c.model.hidden_sizes = (256, 256)
  c.model.preprocess = "dequantize_logit"
  c.model.logit_alpha = 0.05
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.grad_clip = 100.0
  c.batch_size = 64
  c.num_steps = 2000
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.eval_batch_size = 500
  return c
