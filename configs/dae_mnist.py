"""Denoising autoencoder on MNIST: half the pixels of the input are dropped (set to 0),
the deterministic code of the corrupted image must reconstruct the clean one.
A VAE-family config: same encoder and decoder, variational = False (no KL, mean code).
Set model.variational = True for a denoising VAE instead.

  python scripts/train.py --config=configs/dae_mnist.py --workdir=runs/dae
"""

import os

from bnnjax.config import load_config_file


def get_config():
  """configs/vae_mnist.py with these changes."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "vae_mnist.py")).get_config()
  c.model.variational = False
  c.model.corruption = "mask"
  c.model.corruption_level = 0.5
  c.optimizer.schedule = "constant"
  c.num_epochs = 10
  return c
