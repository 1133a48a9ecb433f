"""Bayesian MLP on MNIST, 784-400-400-10: the main experiment (Blundell et al. 2015's shape).

Mean-field Gaussian posterior, scale-mixture prior (pi = 0.5, sigma1 = 1, sigma2 = e^-6,
Bayes by Backprop's choice), local reparameterisation, the true ELBO (beta = 1,
temperature 1) after a short linear KL warm-up. Posterior stds are exp(log_std): the same
fit as softplus(rho) here (measured), with a cheaper step.
"""

import math

from bnnjax.config import base_config, product
from bnnjax.models.bayes_mlp import default_model_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.model = default_model_config()
  c.model.hidden_sizes = (400, 400)
  c.model.activation = "relu"
  c.model.estimator = "local"
  c.model.num_samples = 1
  c.model.eval_samples = 16
  c.model.prior = "mixture"
  c.model.mixture_pi = 0.5
  c.model.mixture_scale1 = 1.0
  c.model.mixture_scale2 = math.exp(-6)
  c.model.init_std = 1e-3
  c.model.posterior_scale = "log_std"
  c.model.bayesian = "all"
  c.model.init_from = ""
  c.model.kl_beta = 1.0
  c.model.kl_warmup_steps = 2000
  c.model.temperature = 1.0
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.batch_size = 128
  c.num_epochs = 20
  return c


def get_sweep():
  """Estimator by prior, the comparisons the benchmark and evaluate.py report."""
  return product({"model.estimator": ["reparam", "local", "flipout"], "model.prior": ["gaussian", "mixture"]})
