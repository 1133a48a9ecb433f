"""Mean-field Gaussian LeNet-5 on MNIST ("mean_field/lenet5"): every conv and dense layer
Bayesian, a N(0, 1) prior on every weight, the true ELBO (beta = 1, temperature 1, no KL
warm-up), local reparameterisation through the convolutions, posterior stds exp(log_std)
starting at 1e-3 (their learning rate 10x the means'). Trained on train[:50000]; train[50000:] is
the validation split. `--config.model.init_from=<a lenet_*.py run>` starts the means from a trained
deterministic LeNet-5 (the short-budget runs of docs/results.md).
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.data.train_split = "train[:50000]"
  c.data.validation_split = "train[50000:]"
  c.data.eval_splits = "test"
  c.model = models.get("mean_field/lenet5").default_config()
  c.model.estimator = "local"
  c.model.num_samples = 1
  c.model.eval_samples = 16
  c.model.prior = "gaussian"
  c.model.prior_scale = 1.0
  c.model.init_std = 1e-3
  c.model.posterior_scale = "log_std"
  c.model.kl_beta = 1.0
  c.model.kl_warmup_steps = 0
  c.model.temperature = 1.0
  c.optimizer.lr = 1e-3
  c.optimizer.lr_multipliers = "log_std=10"  # the stds travel from 1e-3 as far as the means do
  c.optimizer.schedule = "cosine"
  c.batch_size = 128
  c.num_epochs = 20
  return c
