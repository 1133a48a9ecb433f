"""SWAG on MNIST: SGD continued from a trained 784-400-400-10 MLP, moments twice an epoch.

    python scripts/train.py --config=configs/mlp_mnist.py --workdir=runs/mlp
    python scripts/train.py --config=configs/swag_mnist.py --workdir=runs/swag \
        --config.model.init_from=runs/mlp

SGD with momentum at a constant learning rate (Maddox et al. 2019's recipe), 10 epochs,
20 snapshots, rank 10; the predictive averages `eval_samples` draws.
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.model = models.get("swag/mlp").default_config()
  c.model.hidden_sizes = (400, 400)
  c.model.rank, c.model.collect_every, c.model.eval_samples = 10, 235, 16
  c.optimizer.name, c.optimizer.lr, c.optimizer.momentum = "sgd", 0.01, 0.9
  c.optimizer.schedule = "constant"
  c.batch_size = 128
  c.num_epochs = 10
  return c
