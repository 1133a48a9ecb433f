"""Inference methods: how a network's weights become a predictive.

Each module builds a `bnnjax.task.Task` from a network (a Haiku function x -> outputs)
and its own config fields, so that any method runs on any network:

    point         a point estimate (maximum likelihood / MAP): K = 1
    mean_field    mean-field Gaussian variational inference (Bayes by Backprop), the ELBO
"""
