"""Inference methods: how a network's weights become a predictive.

Each module builds a `bnnjax.task.Task` from a network (a Haiku function x -> outputs)
and its own config fields, so that any method runs on any network:

    point         a point estimate (maximum likelihood / MAP): K = 1
    mean_field    mean-field Gaussian variational inference (Bayes by Backprop), the ELBO
    ensemble      deep ensembles: M members trained in one vmapped step, K = M
    dropout       MC dropout on the hidden activations, kept at prediction: K masks

Fitted outside the train loop, as functions (no "<method>/<network>" name):

    hmc           full-batch NUTS (blackjax) over the weights, the reference posterior of
                  small problems, with R-hat and ESS; its samples' predictive (K = S)
    laplace       last-layer Laplace (full GGN) around a trained point run, prior precision
                  given or tuned by the marginal likelihood, GLM predictive (sampled, or
                  closed form: probit / exact Gaussian): fit_run(run); fit_run(run,
                  structure="diagonal" | "kfac") for every layer (laplace_layers: GLM or MC)
"""
