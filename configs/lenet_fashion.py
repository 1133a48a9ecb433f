"""Deterministic LeNet-5 on Fashion-MNIST ("point/lenet5"): configs/lenet_mnist.py on Fashion-MNIST,
trained on train[:50000] with Adam; train[50000:] is the validation split."""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "fashion_mnist"
  c.data.train_split = "train[:50000]"
  c.data.validation_split = "train[50000:]"
  c.data.eval_splits = "test"
  c.model = models.get("point/lenet5").default_config()
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.batch_size = 128
  c.num_epochs = 10
  return c
