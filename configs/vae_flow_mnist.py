"""Bernoulli VAE on MNIST with a planar-flow posterior (Rezende & Mohamed, 2015): the
architecture of configs/vae_mnist.py (latent 50, 784-500-500 encoder and decoder, dynamic
binarisation) with q(z | x) = 10 amortised planar maps of N(mean(x), diag std(x)^2).

Compare with the diagonal posterior at the same budget by training configs/vae_mnist.py with
the same overrides; both report test/log_px_iwae<k> when model.eval_iwae_samples = k > 0.

  python scripts/train.py --config=configs/vae_flow_mnist.py --workdir=runs/vae_flow
"""

from bnnjax.config import base_config
from bnnjax.models.vae_flow import default_model_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.data.flatten = True
  c.data.binarize = ""  # grey levels; the loss binarises them afresh every step
  c.model = default_model_config()  # name "vae_flow": the VAE's fields plus num_flows
  c.model.latent_size = 50
  c.model.encoder_sizes = (500, 500)
  c.model.decoder_sizes = (500, 500)
  c.model.binarize_train = "dynamic"
  c.model.num_flows = 10
  c.model.eval_iwae_samples = 0  # e.g. 100 for a tighter test log p(x) (slower evaluation)
  c.optimizer.lr = 1e-3
  c.batch_size = 100
  c.num_epochs = 50
  c.eval_batch_size = 1000
  return c
