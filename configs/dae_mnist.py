"""Denoising autoencoder on MNIST: half the pixels of the input are dropped (set to 0),
the deterministic code of the corrupted image must reconstruct the clean one.
A VAE-family config: same encoder and decoder, variational = False (no KL, mean code).
Set model.variational = True for a denoising VAE instead.

  python scripts/train.py --config=configs/dae_mnist.py --workdir=runs/dae
"""
from bnnjax.config import base_config
from bnnjax.models.vae import default_model_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.data.flatten = True
  c.data.binarize = ""
  c.model = default_model_config()
  c.model.variational = False
  c.model.latent_size = 50
  c.model.corruption = "mask"
  c.model.corruption_level = 0.5
  c.model.binarize_train = "dynamic"
  c.batch_size = 100
  c.num_epochs = 10
  c.eval_batch_size = 1000
  return c
