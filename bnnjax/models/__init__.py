"""Models, one file each. `get(name)` finds the module that builds a Task."""
import importlib


def get(name: str):
  """The module bnnjax.models.<name>; it exposes make_task(config, info)."""
  try:
    module = importlib.import_module(f"bnnjax.models.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"bnnjax.models.{name}":
      raise
    raise ValueError(f"unknown model {name!r}: no module bnnjax.models.{name}") from None
  if not hasattr(module, "make_task"):
    raise ValueError(f"bnnjax.models.{name} has no make_task(config, info)")
  return module
