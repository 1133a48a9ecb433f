r"""Each method's predictive against the NUTS reference posterior, on a small problem.

  python scripts/agreement.py --config=configs/agreement_moons.py --workdir=runs/agreement

Trains every row of the config's get_sweep() (each in <workdir>/<i>; then its CONTINUED rows,
started from row 0's run), runs full-batch NUTS
(bnnjax.methods.hmc) over the same network with the same N(0, prior_scale²) prior, and writes
<workdir>/agreement.json and agreement.md: per method, test accuracy and NLL, top-1 agreement
and mean total variation against NUTS; the NUTS row gives its max split-R-hat and min ESS.
"""

import json
import os
import time

from absl import app, flags
import jax
import numpy as np

import bnnjax
from bnnjax import data, models
from bnnjax.config import load_config_file, with_overrides
from bnnjax.methods import hmc

_CONFIG = flags.DEFINE_string("config", None, "A config file with get_config() and get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where each method's run and the table go.")
_PRIOR_SCALE = flags.DEFINE_float("prior_scale", 1.0, "The N(0, s²) prior of NUTS (as the methods').")
_CHAINS = flags.DEFINE_integer("num_chains", 4, "NUTS chains.")
_SAMPLES = flags.DEFINE_integer("num_samples", 500, "NUTS draws per chain (after warm-up).")
_WARMUP = flags.DEFINE_integer("num_warmup", 500, "NUTS window-adaptation steps per chain.")
_NUM_SAMPLES = flags.DEFINE_integer("predict_samples", 64, "K for the methods' predictives.")
flags.mark_flags_as_required(["config", "workdir"])


def _nuts(config, train, test):
  info = data.data_info(config.data, train)
  forward = models.NETWORKS["mlp"].build(config.model, info, info.num_classes)
  tic = time.perf_counter()
  result = hmc.network_posterior(
    forward,
    info,
    train["x"],
    train["y"],
    jax.random.PRNGKey(config.seed),
    prior_scale=_PRIOR_SCALE.value,
    num_chains=_CHAINS.value,
    num_samples=_SAMPLES.value,
    num_warmup=_WARMUP.value,
  )
  seconds = time.perf_counter() - tic
  samples = hmc.stack_chains(result.samples)
  logits = hmc.predictor(forward, info).sample(samples, None, test["x"], 0)
  probs = np.asarray(jax.nn.softmax(logits, -1).mean(0))
  diagnostics = {
    "max_rhat": float(max(np.max(r) for r in jax.tree_util.tree_leaves(result.rhat))),
    "min_ess": float(min(np.min(e) for e in jax.tree_util.tree_leaves(result.ess))),
    "divergences": int(np.sum(result.divergences)),
    "seconds": seconds,
  }
  return probs, diagnostics


def _cached_nuts(config, train, test):
  """The NUTS reference, read from <workdir>/nuts.json when an earlier call with the same
  settings left it there (NUTS is the slow part)."""
  settings = [_PRIOR_SCALE.value, _CHAINS.value, _SAMPLES.value, _WARMUP.value, config.seed]
  path = os.path.join(_WORKDIR.value, "nuts.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if saved["settings"] == settings:
      return np.asarray(saved["probs"], np.float32), saved["diagnostics"]
  probs, diagnostics = _nuts(config, train, test)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"settings": settings, "probs": probs.tolist(), "diagnostics": diagnostics}, f)
  return probs, diagnostics


def _scores(probs, labels) -> dict:
  picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
  return {"accuracy": float(np.mean(probs.argmax(-1) == labels)), "nll": float(-np.mean(np.log(picked)))}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  module = load_config_file(_CONFIG.value)
  config = module.get_config()
  train, test = (data.load_split(config.data, s) for s in ("train", "test"))
  reference, diagnostics = _cached_nuts(config, train, test)
  rows = {"nuts": {**_scores(reference, test["y"]), **diagnostics}}
  print(f"nuts: {rows['nuts']}")
  first = os.path.join(_WORKDIR.value, "0")
  continued = [{**p, "model.init_from": first} for p in getattr(module, "CONTINUED", [])]
  for i, point in enumerate([*module.get_sweep(), *continued]):
    workdir = os.path.join(_WORKDIR.value, str(i))
    tic = time.perf_counter()
    run = bnnjax.fit(with_overrides(config, point), workdir)
    probs = np.asarray(run.predict(test["x"], num_samples=_NUM_SAMPLES.value).probs)
    top1, tv = hmc.agreement(probs, reference)
    name = run.config.model.name
    rows[name] = {**_scores(probs, test["y"]), "agreement": float(top1), "total_variation": float(tv)}
    rows[name]["seconds"] = time.perf_counter() - tic
    print(f"{name}: {rows[name]}")
  lines = ["| method | accuracy | NLL | top-1 agreement | total variation |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    agree = f"{r['agreement']:.3f} | {r['total_variation']:.3f}" if "agreement" in r else "1 | 0"
    lines.append(f"| {name} | {r['accuracy']:.3f} | {r['nll']:.3f} | {agree} |")
  with open(os.path.join(_WORKDIR.value, "agreement.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  with open(os.path.join(_WORKDIR.value, "agreement.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
