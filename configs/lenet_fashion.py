"""Deterministic LeNet-5 on Fashion-MNIST ("point/lenet5"): configs/lenet_mnist.py on Fashion-MNIST,
trained on train[:50000] with Adam; train[50000:] is the validation split."""

import os

from bnnjax.config import load_config_file


def get_config():
  """configs/lenet_mnist.py on Fashion-MNIST."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "lenet_mnist.py")).get_config()
  c.data.name = "fashion_mnist"
  return c
