"""Models, one file each, found by name.

A built-in model file `bnnjax/models/<name>.py` declares `MODEL = bnnjax.task.Model(...)`.
Code outside the package (a notebook, a test, a research project) declares its own
`Model` and calls `register(model)`; `config.model.name` then finds it like a built-in.
"""
import importlib
from typing import Dict

from bnnjax.task import Model

BUILT_IN = ("mlp", "bayes_mlp", "vae", "vae_flow", "flow")
_REGISTERED: Dict[str, Model] = {}


def register(model: Model) -> Model:
  """Makes `model` available as config.model.name = model.name; returns it (a decorator-friendly form)."""
  if not isinstance(model, Model):
    raise TypeError(f"register expects a bnnjax.task.Model, got {type(model).__name__}")
  if model.name in BUILT_IN:
    raise ValueError(f"model name {model.name!r} is taken by a built-in model")
  _REGISTERED[model.name] = model
  return model


def names() -> tuple:
  """Every model name config.model.name may take now."""
  return BUILT_IN + tuple(sorted(_REGISTERED))


def get(name: str) -> Model:
  """The declared Model called `name`: a built-in, or one passed to `register`."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in BUILT_IN:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(names())} "
                     "(a model of your own needs bnnjax.models.register)")
  return importlib.import_module(f"bnnjax.models.{name}").MODEL
