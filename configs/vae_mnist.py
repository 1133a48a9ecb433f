"""Bernoulli VAE on MNIST: latent 50, encoder and decoder 784-500-500 (Kingma & Welling).

Training data stay grey levels; each step draws a fresh binarisation x ~ Bernoulli(pixel)
(model.binarize_train = "dynamic"). The honest test log-likelihood comes from
scripts/sample.py on the fixed binarisation of the test set (data.load(binarize="static")).

  python scripts/train.py --config=configs/vae_mnist.py --workdir=runs/vae
  python scripts/sample.py --workdir=runs/vae
"""

from bnnjax.config import base_config
from bnnjax.models.vae import default_model_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.data.flatten = True
  c.data.binarize = ""  # grey levels; the loss binarises them afresh every step
  c.model = default_model_config()  # name "vae", latent 50, (500, 500), relu
  c.model.latent_size = 50
  c.model.encoder_sizes = (500, 500)
  c.model.decoder_sizes = (500, 500)
  c.model.binarize_train = "dynamic"
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"  # decays to 0 over the run: a better final bound per epoch
  c.batch_size = 100
  c.num_epochs = 50
  c.eval_batch_size = 1000
  return c
