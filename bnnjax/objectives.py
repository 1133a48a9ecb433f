"""The ELBO and its scaling: the one place where KL meets the likelihood.

For a data set of N examples the negative ELBO is

    -ELBO = sum_n E_q[-log p(y_n | x_n, w)] + KL(q || p).

bnnjax minimises it per example, so that learning rates do not depend on N:

    loss = NLL + kl_weight * KL / N,    N = DataInfo.num_train (the training set size)

where NLL is the mini-batch mean of E_q[-log p(y|x,w)] (estimated with K samples).
kl_weight = temperature * beta * warmup(step):
  - beta = 1, temperature = 1, no warm-up: the true (per-example) negative ELBO.
  - warmup(step) rises linearly from 0 to 1 over `warmup_steps` ("KL annealing").
  - temperature T scales the whole KL (entropy and prior together): T < 1 is a
    "cold" posterior, sharper than Bayes; T = 1 is Bayes.
Reported metrics always use the true ELBO (kl_weight = 1), whatever the training weight.
"""

import jax
import jax.numpy as jnp

from bnnjax.distributions import categorical_log_prob, gaussian_log_prob


def kl_weight(step, *, beta: float = 1.0, warmup_steps: int = 0, temperature: float = 1.0):
  """temperature * beta * min(1, step / warmup_steps); warmup_steps = 0 means none."""
  if warmup_steps > 0:
    warmup = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)
  else:
    warmup = 1.0
  return temperature * beta * warmup


def per_example_loss(nll, kl, num_train: int, weight=1.0):
  """NLL + weight * KL / N: THE scaling of the ELBO in bnnjax (see module docstring)."""
  return nll + weight * kl / num_train


def categorical_nll(logits, labels):
  """Expected NLL, -mean over samples and batch of log p(y | x, w_k); logits [K, B, C]."""
  return -categorical_log_prob(logits, labels[None]).mean()


def gaussian_nll(predictions, targets, noise_std):
  """Expected NLL under y ~ N(f(x, w_k), noise_std^2); predictions [K, B], targets [B]."""
  return -gaussian_log_prob(targets[None], predictions, noise_std).mean()


def categorical_predictive_nll(logits, labels):
  """Per-example -log (1/K sum_k p(y | x, w_k)), the NLL of the predictive mean; [B]."""
  log_p = categorical_log_prob(logits, labels[None])  # [K, B]
  return -(jax.nn.logsumexp(log_p, axis=0) - jnp.log(logits.shape[0]))


def gaussian_predictive_nll(predictions, targets, noise_std):
  """Per-example -log (1/K sum_k N(y; f(x, w_k), noise_std^2)) of a [K, B] ensemble; [B]."""
  log_p = gaussian_log_prob(targets[None], predictions, noise_std)
  return -(jax.nn.logsumexp(log_p, axis=0) - jnp.log(predictions.shape[0]))
