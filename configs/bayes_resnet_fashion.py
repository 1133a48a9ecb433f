"""Mean-field Gaussian ResNet-8 on Fashion-MNIST ("mean_field/resnet"): configs/bayes_lenet_fashion.py's
posterior, prior, data and training with the network swapped for ResNet-8
(bnnjax/models/resnet.py) and flipout through every convolution (see below).
`--config.model.init_from=<a resnet_fashion.py run>` starts the means from a trained deterministic
ResNet-8; `--config.model.blocks_per_stage=3` is ResNet-20."""

import os

from bnnjax import models
from bnnjax.config import load_config_file


def get_config():
  """configs/bayes_lenet_fashion.py with ResNet-8 for LeNet-5."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "bayes_lenet_fashion.py")).get_config()
  lenet = c.model
  c.model = models.get("mean_field/resnet").default_config()
  for field in models.METHODS["mean_field"].default_config():  # the method's fields, as set there
    c.model[field] = lenet[field]
  c.model.blocks_per_stage = 1
  # Flipout, not local reparameterisation: one jitted init and loss of mean_field/resnet with the
  # local estimator came out different from one compilation to the next on XLA's CPU backend
  # (jaxlib 0.10.2; the separate calls that the train loop makes agreed). Flipout's did not.
  c.model.estimator = "flipout"
  return c
