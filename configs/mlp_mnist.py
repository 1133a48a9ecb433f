"""Deterministic MLP baseline on MNIST: 784-400-400-10, Adam."""

from bnnjax.config import base_config
from bnnjax.models.mlp import default_model_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.model = default_model_config()
  c.model.hidden_sizes = (400, 400)
  c.model.activation = "relu"
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.batch_size = 128
  c.num_epochs = 20
  return c
