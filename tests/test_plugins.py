"""A user's own expectation (issue 28, item 16): its plugin module is found beside the study file without
PYTHONPATH, a missing one is one line that leaves no folder behind, and a declared range shapes the head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUICKSTART, TINY, cli, one_error_line


def _study(folder: Path, plugins: list[str], name: str) -> Path:
    data = yaml.safe_load(Path(QUICKSTART).read_text())
    data["name"] = name
    data["distill"]["targets"] = ["predictive", "expected_entropy", "max_prob"]
    data["distill"]["plugins"] = plugins
    data["search"]["space"] = {"family": ["mlp"], "mlp_depth": 1, "mlp_width": {"low": 16, "high": 32}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sets(report_dir: Path) -> list[str]:
    return [a for o in (f"report_dir={report_dir}", "device=cpu", *TINY) for a in ("--set", o)]


def _readme_snippet() -> tuple[str, str]:
    """The README's plugin module and study file (section "Your own expectation")."""
    import re

    text = (Path(QUICKSTART).parents[1] / "README.md").read_text()
    section = text[text.index("### Your own expectation"):]
    py = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    yml = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return py, yml


def test_the_readme_plugin_is_found_beside_its_study_file_and_its_unit_range_gets_a_sigmoid_head(tmp_path):
    folder = tmp_path / "elsewhere"  # neither the current folder nor on sys.path
    folder.mkdir()
    py, yml = _readme_snippet()
    (folder / "max_prob.py").write_text(py.replace('value_range="[0, 1]")', 'value_range="[0, 1]", overwrite=True)'))
    (folder / "my_study.yaml").write_text(yml)
    base = yaml.safe_load(Path(QUICKSTART).read_text())
    base["search"]["space"] = {"family": ["mlp"], "mlp_depth": 1, "mlp_width": {"low": 16, "high": 32}}
    (folder / "quickstart.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    rc, _, err = cli(["run", str(folder / "my_study.yaml"), "--n-trials", "1", "--no-progress",
                      *_sets(tmp_path / "r")])
    assert rc == 0, err
    from gped_search.checkpoints import load_checkpoint

    ckpt = next((tmp_path / "r" / "my_study" / "trials").glob("*/student.pt"))
    model, meta = load_checkpoint(ckpt)
    assert model.arch.unit_heads == ("max_prob",)
    assert {"max_prob_mae", "max_prob_bias", "test_max_prob_mae"} <= set(meta["metrics"])
    x = torch.randn(512, 1, 8, 8) * 5  # far from the data too: a softplus head went above 1 here
    out = model.named_outputs(x)["max_prob"]
    assert out.min() >= 0 and out.max() <= 1
    from gped_search.modelcard import heads_of

    assert heads_of(model.arch)[2]["output"] == "sigmoid (in [0, 1])"


def test_a_missing_plugin_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    study = _study(tmp_path / "s", ["no_such_plugin_module"], "noplugin")
    rc, _, err = cli(["run", str(study), "--n-trials", "1", "--no-progress", *_sets(tmp_path / "r")])
    assert rc == 2
    line = one_error_line(err)
    assert "distill.plugins: cannot import 'no_such_plugin_module'" in line and str(study.parent) in line
    assert not (tmp_path / "r").exists()
    broken = tmp_path / "b"
    study = _study(broken, ["broken_plugin"], "broken")
    (broken / "broken_plugin.py").write_text("import not_installed_dependency\n")
    rc, _, err = cli(["run", str(study), "--n-trials", "1", "--no-progress", *_sets(tmp_path / "r")])
    assert rc == 2 and "imports a missing module" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_declared_ranges_and_built_in_records_unchanged():
    from gped_search.models import build, student_arch
    from gped_search.posterior.expectations import get_expectation, register_expectation

    assert get_expectation("predictive").range == "real" and get_expectation("expected_entropy").range == "positive"
    e = register_expectation("neg_margin", lambda z: -z[..., :1], value_range="real", overwrite=True)
    assert e.range == "real" and not e.positive
    with pytest.raises(ValueError, match="value_range"):
        register_expectation("bad", lambda z: z, value_range="(0, 2)", overwrite=True)
    arch = student_arch("mlp", (1, 8, 8), 10, (("predictive", 10), ("expected_entropy", 1)), widths=(8,))
    assert "unit_heads" not in arch.to_dict()  # checkpoints of built-in studies keep their exact records
    assert set(build(arch)(torch.zeros(2, 1, 8, 8))[1].flatten().tolist()) != set()
