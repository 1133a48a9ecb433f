r"""Evaluates a trained VAE-family run (vae, or vae_flow: planar / IAF posterior) and draws its pictures.

  python scripts/sample.py --workdir=runs/vae                 # ELBO, IWAE log p(x), PNGs
  python scripts/sample.py --workdir=runs/cvae --classifier_workdir=runs/mlp

Writes into --workdir:
  vae_eval.json            test ELBO, reconstruction, KL and log p(x) by IWAE_k (nats per
                           example; NLL = -log p(x)), with k, the binarisation and the count;
                           for a CVAE with --classifier_workdir, the classifier's accuracy on
                           generated digits.
  samples.png              images decoded from z ~ p(z) (Bernoulli means)
  cvae_grid.png            CVAE: one row per digit, the same z down each column
  reconstructions.png      rows: original, (corrupted input,) reconstruction
  latent_scatter.png       latent size 2: posterior means of test images coloured by label

The test set is binarised once and for all: "stochastic" draws each pixel ~ Bernoulli(grey)
with a fixed seed (the protocol of the IWAE literature and the training distribution of
model.binarize_train="dynamic"); "threshold" is data.load(binarize="static"), grey > 0.5.
"""
import json
import os
import time

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

import bnnjax  # pylint: disable=wrong-import-position
from bnnjax import data, models  # pylint: disable=wrong-import-position
from bnnjax.models import vae, vae_flow  # pylint: disable=wrong-import-position
from bnnjax.task import DataInfo  # pylint: disable=wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "A run trained with a vae-family config.")
_K = flags.DEFINE_integer("k", 1000, "Importance samples per test image for log p(x).")
_CHUNK = flags.DEFINE_integer("chunk_size", 100, "Samples decoded at once (vmap) per chunk.")
_BATCH = flags.DEFINE_integer("batch_size", 100, "Test images per IWAE batch.")
_NUM_TEST = flags.DEFINE_integer("num_test", 0, "Evaluate the first N test images (0 = all).")
_BINARIZATION = flags.DEFINE_enum("test_binarization", "stochastic", ["stochastic", "threshold"],
                                  "How the test set is binarised once (see the module doc).")
_CLASSIFIER = flags.DEFINE_string("classifier_workdir", "",
                                  "CVAE only: a trained classifier run that labels generated digits.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the test binarisation and of the sampling.")
flags.mark_flag_as_required("workdir")

SIDE = 10  # pictures are SIDE x SIDE grids


def binarised_test_set(config, num_test: int, mode: str, seed: int):
  d = config.data
  kwargs = dict(data_dir=d.data_dir or None, flatten=d.flatten, seed=config.seed)
  if mode == "threshold":
    test = data.load(d.name, "test", binarize="static", **kwargs)
  else:
    test = data.load(d.name, "test", **kwargs)
    uniform = np.random.default_rng(seed).random(test["x"].shape, dtype=np.float32)
    test = {"x": (uniform < test["x"]).astype(np.float32), "y": test["y"]}
  if num_test:
    test = {key: value[:num_test] for key, value in test.items()}
  vae.check_binary(test["x"])
  return test


def test_metrics(model, params, test, k: int, batch_size: int, chunk: int, rng) -> dict:
  """Means over the test set, nats per example. One reconstruction sample per image."""
  y_of = lambda batch: batch["y"] if model.conditional else None

  @jax.jit
  def one_batch(rng, batch):
    term_rng, noise_rng, iwae_rng = jax.random.split(rng, 3)
    x = batch["x"]
    rec, kl = model.elbo_terms(params, term_rng, model.corrupt(noise_rng, x), x, y_of(batch))
    out = {"reconstruction": rec.sum(), "kl": kl.sum(), "elbo": vae.elbo(rec, kl).sum()}
    if model.variational:
      out["log_px_iwae"] = model.iwae(params, iwae_rng, x, y_of(batch), k=k,
                                      chunk_size=chunk).sum()
    if model.corruption:
      clean_rec, _ = model.elbo_terms(params, term_rng, x, x, y_of(batch))
      out["reconstruction_clean_input"] = clean_rec.sum()
    return out

  totals, count = {}, 0
  for i, batch in enumerate(data.eval_batches(test, batch_size)):
    sums = one_batch(jax.random.fold_in(rng, i), batch)
    totals = {key: totals.get(key, 0.0) + float(v) for key, v in sums.items()}
    count += len(batch["x"])
  means = {key: value / count for key, value in totals.items()}
  if not model.variational:  # a deterministic autoencoder has no ELBO or KL
    means = {key: v for key, v in means.items() if key not in ("kl", "elbo")}
  if "log_px_iwae" in means:
    means["nll_iwae"] = -means["log_px_iwae"]
  return means


def as_image(x, shape):
  return np.asarray(x).reshape(shape)


def save_grid(images, image_shape, path, rows, title=""):
  """images [rows * cols, ...] -> one PNG, rows stacked top to bottom."""
  h, w = image_shape
  images = np.asarray(images).reshape(rows, -1, h, w)
  grid = images.transpose(0, 2, 1, 3).reshape(rows * h, -1)
  fig, ax = plt.subplots(figsize=(grid.shape[1] / 28, grid.shape[0] / 28 + (0.3 if title else 0)))
  ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_axis_off()
  if title:
    ax.set_title(title, fontsize=9)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path


def draw_pictures(model, params, test, workdir, rng) -> list:
  image_shape = (28, 28) if np.prod(model.event_shape) == 784 else (8, 8)
  sample_rng, noise_rng, grid_rng = jax.random.split(rng, 3)
  written = []
  if model.variational and not model.conditional:
    images = model.generate(params, sample_rng, SIDE * SIDE)
    written.append(save_grid(images, image_shape, os.path.join(workdir, "samples.png"), SIDE,
                             "samples: Bernoulli means of p(x | z), z ~ N(0, I)"))
  if model.conditional:
    labels = np.repeat(np.arange(model.num_classes), SIDE)
    z_rng = jax.random.split(grid_rng, 1)[0]
    images = model.generate(params, z_rng, len(labels), labels)
    written.append(save_grid(images, image_shape, os.path.join(workdir, "cvae_grid.png"),
                             model.num_classes, "CVAE: row = asked digit"))
  x, y = test["x"][:SIDE * 2], test["y"][:SIDE * 2]
  labels = y if model.conditional else None
  noisy = model.corrupt(noise_rng, jnp.asarray(x))
  rows = [x] + ([np.clip(noisy, 0, 1)] if model.corruption else []) + [
      model.reconstruct(params, noisy, labels)]
  name = "original / corrupted / reconstruction" if model.corruption else "original / reconstruction"
  written.append(save_grid(np.stack(rows), image_shape,
                           os.path.join(workdir, "reconstructions.png"), len(rows), name))
  if model.latent_size == 2:
    written.append(latent_scatter(model, params, test, os.path.join(workdir, "latent_scatter.png")))
  return written


def latent_scatter(model, params, test, path):
  encode = jax.jit(lambda x, y: model.encode_mean(params, x, y))
  codes = np.concatenate([
      encode(b["x"], b["y"] if model.conditional else None) for b in data.eval_batches(test, 1000)])
  fig, ax = plt.subplots(figsize=(6, 5))
  points = ax.scatter(codes[:, 0], codes[:, 1], c=test["y"][:len(codes)], cmap="tab10", s=2)
  fig.colorbar(points, ax=ax, label="digit")
  ax.set(xlabel="z[0]", ylabel="z[1]", title="posterior means of test images")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path


def classifier_accuracy(model, params, classifier_workdir, rng, per_class=100) -> dict:
  """The accuracy of a trained classifier on CVAE digits generated for asked labels."""
  if not model.conditional:
    raise ValueError("--classifier_workdir needs a conditional VAE run")
  c_params, c_config = bnnjax.restore_params(classifier_workdir)
  labels = np.repeat(np.arange(model.num_classes), per_class).astype(np.int32)
  images = model.generate(params, rng, len(labels), labels)  # Bernoulli means: grey digits
  shape = (28, 28, 1) if not c_config.data.flatten else (784,)
  info = DataInfo(shape, data.num_classes(c_config.data.name), 1)
  task = models.get(c_config.model.name).make_task(c_config, info)
  batch = {"x": jnp.reshape(images, (len(labels),) + shape), "y": jnp.asarray(labels)}
  metrics = jax.jit(task.evaluate)(c_params, rng, batch)
  predicted_accuracy = float(metrics["accuracy"])
  return {"generated_accuracy": predicted_accuracy, "generated_per_class": per_class,
          "classifier": c_config.model.name, "classifier_workdir": classifier_workdir}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    vae.check_num_samples(_K.value)
    params, config = bnnjax.restore_params(_WORKDIR.value)
    if config.model.name not in ("vae", "vae_flow"):
      raise ValueError(f"{_WORKDIR.value} holds a {config.model.name!r} run, not a vae or vae_flow")
    test = binarised_test_set(config, _NUM_TEST.value, _BINARIZATION.value, _SEED.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  if config.model.name == "vae_flow":
    model = vae_flow.FlowVAE(config.model, test["x"].shape[1:])
  else:
    model = vae.BernoulliVAE(config.model, test["x"].shape[1:], data.num_classes(config.data.name))
  rng = jax.random.PRNGKey(_SEED.value)
  metrics_rng, picture_rng, class_rng = jax.random.split(rng, 3)

  tic = time.perf_counter()
  results = test_metrics(model, params, test, _K.value, _BATCH.value, _CHUNK.value, metrics_rng)
  results.update(num_test=len(test["x"]), test_binarization=_BINARIZATION.value,
                 seconds=round(time.perf_counter() - tic, 1), model=dict(config.model))
  if model.variational:
    results["k"] = _K.value
  if _CLASSIFIER.value:
    results.update(classifier_accuracy(model, params, _CLASSIFIER.value, class_rng))
  pictures = draw_pictures(model, params, test, _WORKDIR.value, picture_rng)
  path = os.path.join(_WORKDIR.value, "vae_eval.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, default=str)
  print(json.dumps({k: v for k, v in results.items() if k != "model"}, indent=2, default=str))
  print("wrote", path, *pictures)


if __name__ == "__main__":
  app.run(main)
