"""Deep ensemble of 5 MLPs (64-128-128-10) on scikit-learn's bundled 8x8 digits, offline.

The 5 members are trained side by side in one jitted step (jax.vmap over members), each on
the same batches with its own initialisation; the predictive is the mean of their softmaxes.
Options (off here; bnnjax.methods.ensemble): each member on its own Poisson(1) bootstrap resample,
and randomised prior functions f_m = g(θ_m) + β g(φ_m) with φ_m fixed (Osband et al. 2018):

    python scripts/train.py --config=configs/ensemble_digits.py --workdir=runs/ensemble_digits_prior \
        --config.model.prior_function_scale=3.0      # and / or --config.model.bootstrap=True
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "digits"
  c.model = models.get("ensemble/mlp").default_config()
  c.model.hidden_sizes = (128, 128)
  c.model.ensemble_size = 5
  c.optimizer.lr = 1e-3
  c.batch_size = 64
  c.num_epochs = 30
  c.eval_batch_size = 500
  return c
