"""Bernoulli VAE on MNIST with an inverse-autoregressive-flow posterior (Kingma et al., 2016):
configs/vae_flow_mnist.py with q(z | x) = N(mean(x), diag std(x)^2) pushed through 4 IAF steps
(MADE of 320 hidden units each, the encoder's last hidden layer as context) instead of 10
planar maps, and a linear KL warm-up over the first 10,000 steps (measured over 50 epochs: it
lifts IAF's test IWAE-100 from -89.70 to -88.38 nats, past the diagonal posterior's -89.02,
while the diagonal posterior with the same warm-up fell to -89.62).

  python scripts/train.py --config=configs/vae_iaf_mnist.py --workdir=runs/vae_iaf
"""

import os

from bnnjax.config import load_config_file


def get_config():
  """configs/vae_flow_mnist.py with these changes."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "vae_flow_mnist.py")).get_config()
  c.model.flow = "iaf"
  c.model.num_flows = 4
  c.model.iaf_hidden_size = 320
  c.model.kl_warmup_steps = 10_000
  return c
