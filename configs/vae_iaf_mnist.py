"""Bernoulli VAE on MNIST with an inverse-autoregressive-flow posterior (Kingma et al., 2016):
configs/vae_flow_mnist.py with q(z | x) = N(mean(x), diag std(x)^2) pushed through 4 IAF steps
(MADE of 320 hidden units each, the encoder's last hidden layer as context) instead of 10
planar maps.

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
  return c
