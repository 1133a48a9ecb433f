"""Bayesian MLP on scikit-learn's bundled 8x8 digits: the offline default, about a minute on CPU.

Mean-field Gaussian posterior over 64-128-128-10, Gaussian prior N(0, 1), local
reparameterisation, the true ELBO (beta = 1) with KL / N, N = 1437 training images.
"""

from bnnjax.config import base_config
from bnnjax.models.bayes_mlp import default_model_config


def get_config():
  c = base_config()
  c.data.name = "digits"
  c.model = default_model_config()
  c.model.hidden_sizes = (128, 128)
  c.model.activation = "relu"
  c.model.estimator = "local"
  c.model.num_samples = 1
  c.model.eval_samples = 16
  c.model.prior = "gaussian"
  c.model.prior_scale = 1.0
  c.model.init_std = 1e-2
  c.model.bayesian = "all"
  c.model.kl_warmup_steps = 500
  c.optimizer.lr = 3e-3
  c.batch_size = 64
  c.num_epochs = 60
  c.eval_batch_size = 500
  return c
