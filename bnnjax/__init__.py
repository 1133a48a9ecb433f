"""bnnjax: Bayesian deep learning in JAX and Haiku.

    run = bnnjax.fit(config, workdir)        # or bnnjax.load(workdir)
    run.predict(x, num_samples=32); run.evaluate(ood=["fashion_mnist"])

Importing it reads no flags and touches no files: it is safe in a notebook.
"""

from bnnjax import (
  checkpoint,
  continual,
  config,
  data,
  datasets,
  distributions,
  estimators,
  evaluation,
  methods,
  metrics,
  models,
  objectives,
  posterior,
  predictive,
  priors,
)
from bnnjax.checkpoint import restore_params, restore_run
from bnnjax.config import base_config, resolve
from bnnjax.models import register
from bnnjax.run import Run, fit, load
from bnnjax.task import DataInfo, Density, Generative, Method, Model, Network, Predictor, Task
from bnnjax.train import TrainState

__version__ = "0.1.0"

__all__ = [
  # modules
  "checkpoint",
  "config",
  "continual",
  "data",
  "datasets",
  "distributions",
  "estimators",
  "evaluation",
  "methods",
  "metrics",
  "models",
  "objectives",
  "posterior",
  "predictive",
  "priors",
  # the notebook API
  "base_config",
  "resolve",
  "fit",
  "load",
  "Run",
  "register",
  "restore_params",
  "restore_run",
  "TrainState",
  # the contract
  "DataInfo",
  "Task",
  "Predictor",
  "Generative",
  "Density",
  "Model",
  "Method",
  "Network",
]
