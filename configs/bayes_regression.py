"""Bayesian MLP regression on scikit-learn's diabetes data (standardised targets).

Gaussian likelihood with a learned noise std (a point estimate), mean-field Gaussian
posterior over 10-16-1 with a N(0, 1) prior, local reparameterisation, full ELBO.
Evaluation reports RMSE, the NLL of the K-sample predictive and the coverage of its
95% central interval. For the 1-D toy with a gap: --config.data.name=toy_regression.
"""

from bnnjax.config import base_config
from bnnjax.models.bayes_mlp import default_model_config


def get_config():
  c = base_config()
  c.data.name = "diabetes"
  c.model = default_model_config()
  c.model.hidden_sizes = (16,)
  c.model.activation = "relu"
  c.model.estimator = "local"
  c.model.num_samples = 4
  c.model.eval_samples = 64
  c.model.prior = "gaussian"
  c.model.prior_scale = 1.0
  c.model.init_std = 1e-2
  c.model.noise_std = 1.0
  c.model.learn_noise = True
  c.optimizer.lr = 3e-3
  c.batch_size = 64
  c.num_epochs = 300
  c.eval_batch_size = 1000
  return c
