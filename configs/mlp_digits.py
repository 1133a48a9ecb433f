"""Deterministic MLP on scikit-learn's bundled 8x8 digits: runs offline in seconds."""

from bnnjax.config import base_config, product
from bnnjax.models.mlp import default_model_config


def get_config():
  c = base_config()
  c.data.name = "digits"
  c.model = default_model_config()
  c.model.hidden_sizes = (128, 128)
  c.optimizer.lr = 1e-3
  c.batch_size = 64
  c.num_epochs = 30
  c.eval_batch_size = 500
  return c


def get_sweep():
  """Learning rate by width: `python scripts/sweep.py --config=configs/mlp_digits.py --workdir=...`."""
  return product({"optimizer.lr": [3e-4, 1e-3, 3e-3], "model.hidden_sizes": [(64,), (128, 128)]})
