"""Study files that say only what differs (``extends:``) and ``--set`` merging into the search space."""

from __future__ import annotations

from pathlib import Path

import pytest

from gped_search.config import ConfigError, load_study, to_dict

Q = str(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")


def _w(path, text):
    path.write_text(text)
    return path


def test_extends_merges_sections_and_replaces_the_space(tmp_path):
    base = _w(
        tmp_path / "base.yaml",
        "name: base\nseed: 3\nteacher: {iterations: 500, burn_in: 100}\n"
        "search: {n_trials: 4, space: {family: [mlp], mlp_width: [8, 16]}}\n",
    )
    child = _w(
        tmp_path / "child.yaml",
        f"extends: {base.name}\nname: child\nteacher: {{iterations: 900}}\nsearch: {{space: {{mlp_width: [4]}}}}\n",
    )
    c = load_study(child)
    assert (c.name, c.seed, c.teacher.iterations, c.teacher.burn_in, c.search.n_trials) == ("child", 3, 900, 100, 4)
    assert c.search.space == {"mlp_width": [4]}  # a file's space says what the space is
    (tmp_path / "sub").mkdir()
    grand = _w(tmp_path / "sub" / "g.yaml", "extends: ../child.yaml\nseed: 5\n")
    g = load_study(grand)
    assert (g.name, g.seed, g.teacher.iterations) == ("child", 5, 900)
    assert "extends" not in to_dict(g)


def test_extends_replaces_the_objectives(tmp_path):
    base = _w(tmp_path / "base.yaml", "name: base\nsearch: {objectives: {kl: minimize, bytes_fp32: minimize}}\n")
    child = _w(tmp_path / "child.yaml", f"extends: {base.name}\nsearch: {{objectives: {{kl: minimize, bytes: minimize}}}}\n")
    assert load_study(child).search.objectives == {"kl": "minimize", "bytes": "minimize"}
    assert load_study(base).search.objectives == {"kl": "minimize", "bytes_fp32": "minimize"}


def test_extends_cycle_and_missing_base_are_one_line(tmp_path):
    _w(tmp_path / "a.yaml", "extends: b.yaml\nname: a\n")
    _w(tmp_path / "b.yaml", "extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="cycle") as e:
        load_study(tmp_path / "a.yaml")
    assert "\n" not in str(e.value) and "a.yaml" in str(e.value) and "b.yaml" in str(e.value)
    _w(tmp_path / "c.yaml", "extends: nowhere.yaml\nname: c\n")
    with pytest.raises(ConfigError, match="base study file not found: .*nowhere.yaml") as e:
        load_study(tmp_path / "c.yaml")
    assert "\n" not in str(e.value)
    _w(tmp_path / "d.yaml", "extends: 3\nname: d\n")
    with pytest.raises(ConfigError, match="extends must be the path"):
        load_study(tmp_path / "d.yaml")


def test_set_merges_into_the_space_and_null_removes(tmp_path):
    q = "studies/quickstart.yaml"
    full = load_study(q).search.space
    c = load_study(q, ["search.space.lambda_g=[0.0, 0.1]"])
    assert c.search.space == {**full, "lambda_g": [0.0, 0.1]}  # the rest of the space is kept
    c = load_study(q, ["search.space.lambda_g=null"])
    assert "lambda_g" not in c.search.space and set(c.search.space) == set(full) - {"lambda_g"}
    c = load_study(q, ["search.space.mlp_width.low=8"])
    assert c.search.space["mlp_width"] == {**full["mlp_width"], "low": 8}


def test_set_of_the_whole_space_replaces_it():
    c = load_study("studies/quickstart.yaml", ["search.space={mlp_width: [4, 8]}"])
    assert c.search.space == {"mlp_width": [4, 8]}
    c = load_study("studies/quickstart.yaml", ["search.space={mlp_width: [4, 8]}", "search.space.mlp_depth=1"])
    assert c.search.space == {"mlp_width": [4, 8], "mlp_depth": 1}  # applied in order


def test_the_old_name_of_a_renamed_key_is_read_with_one_deprecation_line(tmp_path, caplog):
    from gped_search.config import chain_settings

    f = tmp_path / "old.yaml"
    f.write_text(f"extends: {Q}\ndistill:\n  entropy_weight: 2.0\n")
    with caplog.at_level("WARNING", logger="gped_search"):
        c = load_study(f)
    assert c.distill.other_targets_weight == 2.0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["distill.entropy_weight is deprecated: it is now distill.other_targets_weight"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="gped_search"):
        assert load_study(Q, ["distill.entropy_weight=3"]).distill.other_targets_weight == 3.0
    assert len(caplog.records) == 1
    both = tmp_path / "both.yaml"
    both.write_text(f"extends: {Q}\ndistill:\n  entropy_weight: 2.0\n  other_targets_weight: 2.0\n")
    with pytest.raises(ConfigError, match=r"distill.entropy_weight is the old name of distill.other_targets_weight"):
        load_study(both)
    # the settings digests keep the old name: artifacts and chains made before the rename keep their keys
    d = chain_settings(c)["distill"]
    assert d["entropy_weight"] == 2.0 and "other_targets_weight" not in d
