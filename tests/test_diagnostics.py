"""Split R-hat and ESS against known answers: AR(1) chains (ESS = m n (1 - phi) / (1 + phi)), independent
draws, chains that disagree, and the FFT autocovariance against a direct sum."""

from __future__ import annotations

import numpy as np
import pytest

from gped_search.posterior import diagnostics as dg


def _ar1(phi: float, m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((m, n))
    x[:, 0] = rng.normal(size=m) / np.sqrt(1 - phi**2)  # start in the stationary law
    e = rng.normal(size=(m, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


@pytest.mark.parametrize("phi", [0.9, 0.5, 0.0, -0.5])
def test_ess_of_ar1_chains_matches_the_exact_value(phi):
    m, n = 4, 20_000
    exact = m * n * (1 - phi) / (1 + phi)
    est = dg.effective_sample_size(_ar1(phi, m, n, seed=int(10 * abs(phi)) + 3))
    assert est == pytest.approx(exact, rel=0.12), (est, exact)


def test_rhat_is_one_for_mixed_chains_and_large_for_chains_that_disagree():
    x = _ar1(0.9, 4, 4000)
    assert 0.99 < dg.split_rhat(x) < 1.01
    shifted = x + np.array([0.0, 0.0, 3.0, 3.0])[:, None]  # two chains stuck around another mode
    assert dg.split_rhat(shifted) > 1.1  # the usual alarm threshold
    trend = x[:1] + np.linspace(0, 8, 4000)  # one chain that drifts: splitting it catches the drift
    assert dg.split_rhat(trend) > 1.3


def test_fft_autocovariance_equals_the_direct_sum():
    x = _ar1(0.7, 2, 300, seed=5)
    got = dg._autocov(x)
    c = x - x.mean(axis=1, keepdims=True)
    for lag in (0, 1, 7, 150, 299):
        direct = (c[:, : 300 - lag] * c[:, lag:]).sum(axis=1) / 300
        np.testing.assert_allclose(got[:, lag], direct, rtol=1e-9, atol=1e-12)


def test_bad_traces_are_refused():
    with pytest.raises(ValueError, match="n >= 4"):
        dg.split_rhat(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        dg.effective_sample_size([1.0, 2.0, np.nan, 4.0, 5.0])
    assert np.isnan(dg.split_rhat(np.ones((2, 10))))
