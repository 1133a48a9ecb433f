"""Deterministic ResNet-8 on Fashion-MNIST ("point/resnet", bnnjax/models/resnet.py: three stages
of (16, 32, 64) channels, one block each, no normalisation): configs/lenet_fashion.py's data and
training with the network swapped. `--config.model.blocks_per_stage=3` is ResNet-20."""

import os

from bnnjax import models
from bnnjax.config import load_config_file


def get_config():
  """configs/lenet_fashion.py with ResNet-8 for LeNet-5."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "lenet_fashion.py")).get_config()
  c.model = models.get("point/resnet").default_config()
  c.model.blocks_per_stage = 1
  return c
