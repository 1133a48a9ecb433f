"""MC dropout on a 64-128-128-10 MLP on scikit-learn's bundled 8x8 digits, offline.

Dropout (rate 0.1) on the hidden activations, kept at prediction: K = 16 masks per input.
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "digits"
  c.model = models.get("dropout/mlp").default_config()
  c.model.hidden_sizes = (128, 128)
  c.model.dropout_rate = 0.1
  c.model.eval_samples = 16
  c.optimizer.lr = 1e-3
  c.batch_size = 64
  c.num_epochs = 30
  c.eval_batch_size = 500
  return c
