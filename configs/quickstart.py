"""The README's first command: a Bayesian MLP that runs anywhere in a minute or two.

MNIST when it is found (data_dir, $BNNJAX_DATA_DIR, or a tfds download);
on an offline machine without it, scikit-learn's bundled 8x8 digits (config.data.fallback),
with a one-line notice. A fixed step budget keeps both cases short.
"""

from bnnjax.config import base_config
from bnnjax.models.bayes_mlp import default_model_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.data.fallback = "digits"
  c.model = default_model_config()
  c.model.hidden_sizes = (200, 200)
  c.model.estimator = "local"
  c.model.num_samples = 1
  c.model.eval_samples = 16
  c.model.prior = "gaussian"
  c.model.prior_scale = 1.0
  c.model.init_std = 1e-2
  c.model.kl_warmup_steps = 500
  c.optimizer.lr = 3e-3
  c.optimizer.schedule = "cosine"
  c.batch_size = 128
  c.num_steps = 1500
  c.eval_every = 500
  c.checkpoint_every = 500
  return c
