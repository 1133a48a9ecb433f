"""Mean-field Gaussian LeNet-5 on Fashion-MNIST ("mean_field/lenet5"): every conv and dense layer
Bayesian, a N(0, 1) prior on every weight, the true ELBO (beta = 1, temperature 1, no KL
warm-up), local reparameterisation through the convolutions, posterior stds exp(log_std)
starting at 1e-3 (their learning rate 10x the means'). Trained on train[:50000]; train[50000:] is
the validation split. `--config.model.init_from=<a lenet_*.py run>` starts the means from a trained
deterministic LeNet-5 (the short-budget runs of docs/results.md).
"""

import os

from bnnjax.config import load_config_file


def get_config():
  """configs/bayes_lenet_mnist.py on Fashion-MNIST."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "bayes_lenet_mnist.py")).get_config()
  c.data.name = "fashion_mnist"
  return c
