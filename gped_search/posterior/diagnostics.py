"""Convergence diagnostics of MCMC traces: split R-hat and effective sample size (Gelman et al., BDA3 §11.4-11.5).

A trace is one scalar per draw per chain, e.g. each thinned SGLD sample's mean test log-likelihood
(``teacher_test_loglik_trace.csv`` beside a ``gped-search distill`` record). Independent runs (seeds) are
the chains. Both functions take an ``(m, n)`` array: ``m`` chains of ``n`` draws each.

* :func:`split_rhat`: each chain cut into halves, then the potential scale reduction
  sqrt(var+ / W) of the 2m half-chains (W: mean within-chain variance, var+ = (n-1)/n W + B/n). Near 1
  when the chains have mixed; above about 1.01-1.1 when they have not.
* :func:`effective_sample_size`: m n / (1 + 2 sum_t rho_t), with the multi-chain autocorrelation
  rho_t = 1 - (W - mean_j autocov_j(t)) / var+ and the sum cut by Geyer's initial monotone sequence.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_rhat", "effective_sample_size"]


def _chains(x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] < 4:
        raise ValueError(f"need an (m chains, n >= 4 draws) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("the traces hold NaN or inf")
    return a


def _split(a: np.ndarray) -> np.ndarray:
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half :]])  # odd n: the middle draw left out


def _var_plus(a: np.ndarray) -> tuple[float, float]:
    n = a.shape[1]
    w = float(a.var(axis=1, ddof=1).mean())
    b = float(n * a.mean(axis=1).var(ddof=1)) if a.shape[0] > 1 else 0.0
    return w, (n - 1) / n * w + b / n


def split_rhat(x) -> float:
    """Split R-hat of ``(m, n)`` traces (a single chain is split too); NaN when every draw is equal."""
    w, var_plus = _var_plus(_split(_chains(x)))
    return float(np.sqrt(var_plus / w)) if w > 0 else float("nan")


def _autocov(a: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each row at every lag, by FFT."""
    n = a.shape[1]
    c = a - a.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(c, size, axis=1)
    return np.fft.irfft(f * np.conj(f), size, axis=1)[:, :n] / n


def effective_sample_size(x) -> float:
    """Effective sample size of ``(m, n)`` traces over all chains together (the chains are split first)."""
    a = _split(_chains(x))
    m, n = a.shape
    w, var_plus = _var_plus(a)
    if w <= 0:
        return float("nan")
    acov = _autocov(a).mean(axis=0) * n / (n - 1)  # the lag-0 term equals W
    rho = 1 - (w - acov) / var_plus
    rho[0] = 1.0
    # Geyer: sums of adjacent pairs P_k = rho_2k + rho_2k+1, kept while positive, made monotone
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    k = int(np.argmax(pairs <= 0)) if (pairs <= 0).any() else len(pairs)
    pairs = np.minimum.accumulate(pairs[:k])
    tau = -1 + 2 * pairs.sum()
    return float(m * n / max(tau, 1.0 / np.log10(max(m * n, 10))))
