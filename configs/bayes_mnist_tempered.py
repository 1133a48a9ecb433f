"""Bayesian MLP on MNIST, 784-400-400-10, tuned for "how sure are you?": the run that met every target.

A mean-field Gaussian posterior under a N(0, 1) prior, tempered to T = 0.1 (the "cold
posterior" of Wenzel et al. 2020: loss = NLL + 0.1 * KL / N, not the true ELBO), initial
std 3e-2, local reparameterisation, 20 epochs. Its means start from a trained deterministic
MLP of the same shape (`configs/mlp_mnist.py`):

  python scripts/train.py --config=configs/mlp_mnist.py --workdir=runs/mlp_mnist
  python scripts/train.py --config=configs/bayes_mnist_tempered.py --workdir=runs/bayes_tempered \
      --config.model.init_from=runs/mlp_mnist

Why each choice (measured; see the issue note): the unscaled N(0, 1) prior lets the weights
that MNIST never exercises (border pixels, unused units) keep a wide posterior, which is
what makes the predictions disagree on Fashion-MNIST and KMNIST; init std 3e-2 lets those
scales reach the prior's within 20 epochs; T = 0.1 keeps the exercised weights sharp
(accuracy, calibration) without changing where the unexercised ones go (their KL optimum is
the prior for any T). Without init_from it trains from a fresh initialisation and reached
the same accuracy but a Fashion-MNIST AUROC of 0.979 instead of 0.990.
"""

import os

from bnnjax.config import load_config_file, product


def get_config():
  """configs/bayes_mnist.py with these changes."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "bayes_mnist.py")).get_config()
  c.model.prior = "gaussian"
  c.model.prior_scale = 1.0
  c.model.init_std = 3e-2
  c.model.temperature = 0.1
  c.model.init_from = ""  # e.g. runs/mlp_mnist: a deterministic MLP of the same shape
  return c


def get_sweep():
  """The temperature, from the cold posterior to the true ELBO (T = 1)."""
  return product({"model.temperature": [0.1, 0.3, 1.0]})
