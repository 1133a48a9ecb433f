r"""Evaluates a trained VAE-family run (vae, or vae_flow: planar / IAF posterior) and draws its pictures.

  python scripts/sample.py --workdir=runs/vae                 # ELBO, IWAE log p(x), PNGs
  python scripts/sample.py --workdir=runs/cvae --classifier_workdir=runs/mlp

A thin caller of bnnjax.evaluation.generative.evaluate on `bnnjax.load(workdir)`: the test
split is the one the loop evaluated (Run.test_data: the run's data seed and preprocessing).
Writes into --workdir (the same files as before, so existing users are not broken;
scripts/evaluate.py writes eval.json with these figures under "generative"):
  vae_eval.json            test ELBO, reconstruction, KL and log p(x) by IWAE_k (nats per
                           example; NLL = -log p(x)), with k, the binarisation and the count;
                           for a CVAE with --classifier_workdir, the classifier's accuracy on
                           generated digits.
  samples.png              images decoded from z ~ p(z) (Bernoulli means)
  cvae_grid.png            CVAE: one row per digit, the same z down each column
  reconstructions.png      rows: original, reconstruction (of a corrupted input for a denoiser)
  latent_scatter.png       latent size 2: point codes of test images coloured by label
The binarisation of the test set and every figure are functions of --seed (see
bnnjax/evaluation/generative.py).
"""

import json
import time

from absl import app, flags, logging
import numpy as np

import bnnjax
from bnnjax.evaluation import generative, report

_WORKDIR = flags.DEFINE_string("workdir", None, "A run trained with a vae-family config.")
_K = flags.DEFINE_integer("k", 1000, "Importance samples per test image for log p(x).")
_CHUNK = flags.DEFINE_integer("chunk_size", 100, "Samples decoded at once (vmap) per chunk.")
_BATCH = flags.DEFINE_integer("batch_size", 100, "Test images per IWAE batch.")
_NUM_TEST = flags.DEFINE_integer("num_test", 0, "Evaluate the first N test images (0 = all).")
_BINARIZATION = flags.DEFINE_enum(
  "test_binarization",
  "stochastic",
  list(generative.TEST_BINARIZATIONS),
  "How the test set is binarised once (see the module doc).",
)
_CLASSIFIER = flags.DEFINE_string(
  "classifier_workdir", "", "CVAE only: a trained classifier run that labels generated digits."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the test binarisation and of the sampling.")
flags.mark_flag_as_required("workdir")


def classify_with(run: bnnjax.Run):
  """images [N, ...] -> the labels a trained classifier run predicts for them, [N]."""

  def classify(images):
    x = np.reshape(images, (len(images), *run.info.input_shape))
    return run.predict(x).probs.argmax(-1)

  return classify


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  tic = time.perf_counter()
  try:
    run = bnnjax.load(_WORKDIR.value)
    if run.task.generative is None:
      raise ValueError(
        f"{_WORKDIR.value} holds a {run.config.model.name!r} run, which is "
        f"{' and '.join(run.capabilities)}, not a generative model (vae, vae_flow)"
      )
    classifier = bnnjax.load(_CLASSIFIER.value) if _CLASSIFIER.value else None
    results = generative.evaluate(
      run.task.generative,
      run.params,
      run.test_data(),
      seed=_SEED.value,
      out_dir=run.workdir,
      info=run.info,
      k=_K.value,
      batch_size=_BATCH.value,
      chunk_size=_CHUNK.value,
      num_test=_NUM_TEST.value,
      test_binarization=_BINARIZATION.value,
      classifier=classify_with(classifier) if classifier else None,
    )
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  pictures = results.pop("plots")
  results.update(seconds=round(time.perf_counter() - tic, 1), model=run.config.model.to_dict())
  if classifier:
    results.update(classifier=classifier.config.model.name, classifier_workdir=_CLASSIFIER.value)
  path = report.write_json(run.workdir, results, "vae_eval.json")
  print(json.dumps(report.json_safe({k: v for k, v in results.items() if k != "model"}), indent=2))
  print("wrote", path, *pictures)


if __name__ == "__main__":
  app.run(main)
