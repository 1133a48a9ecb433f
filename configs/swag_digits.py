"""SWAG on scikit-learn's 8x8 digits: SGD continued from a trained 64-128-128-10 MLP.

    python scripts/train.py --config=configs/mlp_digits.py --workdir=runs/mlp_digits
    python scripts/train.py --config=configs/swag_digits.py --workdir=runs/swag_digits \
        --config.model.init_from=runs/mlp_digits

10 epochs of SGD (lr 0.01, momentum 0.9), a snapshot every 11 steps (twice an epoch: 20),
rank 10, K = 16 draws for the predictive.
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "digits"
  c.model = models.get("swag/mlp").default_config()
  c.model.hidden_sizes = (128, 128)
  c.model.rank, c.model.collect_every, c.model.eval_samples = 10, 11, 16
  c.optimizer.name, c.optimizer.lr, c.optimizer.momentum = "sgd", 0.01, 0.9
  c.batch_size, c.num_epochs, c.eval_batch_size = 64, 10, 500
  return c
