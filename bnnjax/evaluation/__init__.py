"""Evaluation as a library: pure functions of a model's predictive and the labels, plus the
writers of eval.json and the PNGs. `bnnjax.Run.evaluate` calls them by the run's declared
capabilities; `scripts/evaluate.py` only parses flags and prints.

    predictive.py      the K-sample predictive of a Predictor over a whole split, batched
    classification.py  accuracy, NLL, Brier, ECE and reliability; OOD AUROC/AUPR/FPR95 and the
                       rejection rule for every uncertainty score; a baseline side by side
    regression.py      RMSE, NLL, interval coverage; epistemic std near and far from the data
    generative.py      VAE family: ELBO terms, IWAE log-likelihood, sample and reconstruction grids
    density.py         flows: test log-likelihood, bits/dim, density and sample pictures
    selective.py       selective prediction: risk-coverage curves, AURC and E-AURC of every score
    shift.py           shift curves: accuracy, NLL, Brier, ECE and AURC per rotation angle or
                       corruption severity (images from bnnjax.datasets.shift)
    recalibration.py   temperature scaling fitted on the validation split; ECE with a bootstrap interval
    conformal.py       split conformal sets (LAC, APS) and normalised-residual regression intervals
    report.py          JSON-safe reports, eval.json, one-line summaries
"""
