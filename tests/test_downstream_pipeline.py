"""The OOD / ranking pipeline on digits vs a synthetic shift (occlusion), teacher vs student vs baseline."""

import numpy as np
import pytest

from gped_search import engine as api
from gped_search.config import load_study
from gped_search.downstream import downstream_table, teacher_means_on, train_baseline

TINY = ["teacher.iterations=400", "teacher.burn_in=100", "teacher.thin=10", "teacher.bank_size=8",
        "distill.steps=150", "device=cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = load_study("studies/quickstart.yaml", TINY + [f"report_dir={tmp_path_factory.mktemp('r')}"])
    p = api.prepare(cfg)
    teacher = api.sample_teacher(p, progress=False)
    student, _ = api.train_trial(p, teacher, cfg.student, cfg.prune, seed=1, steps=150)
    return p, teacher, student


def test_teacher_means_on_bank_match_shapes_and_probabilities(setup):
    p, teacher, _ = setup
    m = teacher_means_on(teacher, p.bundle.test.x[:50], p)
    assert m["predictive"].shape == (50, 10)
    np.testing.assert_allclose(m["predictive"].sum(1).numpy(), 1.0, atol=1e-5)
    assert (m["expected_entropy"] >= 0).all()


def test_downstream_table_rows_and_shift_detected(setup):
    p, teacher, student = setup
    baseline = train_baseline(p, steps=200, seed=0)
    df, curves = downstream_table(p, teacher, {"student": student}, baseline, ["occlusion:6"])
    assert list(df["model"]) == ["teacher (SGLD)", "student", "deterministic baseline"]
    assert set(df["ood"]) == {"occlusion 6px"}
    # A 6x6 zero patch on 8x8 digits is a strong shift: the teacher must see it.
    assert df.loc[0, "auroc_predictive_entropy"] > 0.7
    assert df["auroc_predictive_entropy"].between(0, 1).all()
    # Only models with an expected-entropy estimate get the mutual-information score.
    assert np.isnan(df.loc[2, "auroc_mutual_information"]) and np.isfinite(df.loc[1, "auroc_mutual_information"])
    assert np.isfinite(df.loc[1, "rank_spearman"])
    assert set(curves["roc"]["occlusion 6px"]) == set(df["model"])


def test_teacher_auroc_uses_one_estimator_on_both_sides(setup):
    """Issue 14: an OOD set only the bank reaches is scored against the bank's in-distribution means too
    (it mixed thinned-iterate means in-distribution with bank means out of distribution)."""
    from gped_search.downstream import ood_inputs
    from gped_search.metrics.uncertainty import ood_metrics, uncertainty_scores

    p, teacher, _ = setup
    df, _ = downstream_table(p, teacher, {}, None, ["occlusion:6"])
    row = df.iloc[0]
    assert row["estimator"].startswith("bank (")
    _, x_out = ood_inputs(p, "occlusion:6")
    both_bank = ood_metrics(uncertainty_scores(teacher_means_on(teacher, p.bundle.test.x, p)),
                            uncertainty_scores(teacher_means_on(teacher, x_out, p)))
    mixed = ood_metrics(uncertainty_scores(teacher.test), uncertainty_scores(teacher_means_on(teacher, x_out, p)))
    assert row["auroc_predictive_entropy"] == pytest.approx(both_bank["auroc_predictive_entropy"])
    assert both_bank["auroc_predictive_entropy"] != pytest.approx(mixed["auroc_predictive_entropy"], abs=1e-9)
