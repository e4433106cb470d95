"""Issue 28: suggested and wrong inputs end in one line and a non-zero exit, never a traceback, and come
before the heavy imports; the --help examples and the README walkthrough run on the quickstart."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import QUICKSTART, ROOT, cli, one_error_line, run_tiny_study, study_frame, tiny_sets


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 3-trial tiny quickstart study, run through the CLI: (report_dir, --set arguments)."""
    return run_tiny_study(tmp_path_factory.mktemp("wrong"))


@pytest.fixture(scope="module")
def digits_student(tmp_path_factory) -> Path:
    """An (untrained) 8x8 digits MLP student checkpoint carrying the quickstart's config."""
    import torch

    from gped_search.checkpoints import save_checkpoint
    from gped_search.config import load_study, to_dict
    from gped_search.models import build, student_arch

    torch.manual_seed(0)
    heads = (("predictive", 10), ("expected_entropy", 1))
    model = build(student_arch("mlp", (1, 8, 8), 10, heads, widths=(16,)))
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    return save_checkpoint(path, model, config=to_dict(load_study(QUICKSTART, ["device=cpu"])))


# ----------------------------------------------------------------------------------- item 1: --ood


@pytest.mark.parametrize("ood", ["fashion_mnist", "mnist"])
def test_evaluate_ood_of_another_shape_is_one_line(digits_student, ood):
    rc, out, err = cli(["evaluate", str(digits_student), "--ood", ood])
    line = one_error_line(err)
    assert rc == 2 and "--ood" in line and ood in line and "shape mismatch" in line and "1x28x28" in line
    assert "1x8x8" in line


@pytest.mark.parametrize("ood", ["occlusion:8", "occlusion:20", "occlusion:0", "occlusion:x", "svhn"])
def test_evaluate_refuses_an_occlusion_that_blanks_everything(digits_student, ood):
    rc, _, err = cli(["evaluate", str(digits_student), "--ood", ood])
    line = one_error_line(err)
    assert rc == 2 and f"--ood {ood}" in line


def test_evaluate_occlusion_inside_the_image_still_works(digits_student):
    rc, out, err = cli(["evaluate", str(digits_student), "--ood", "occlusion:4"])
    assert rc == 0, err
    assert "occlusion 4px" in out


@pytest.mark.parametrize("ood", ["fashion_mnist", "mnist", "occlusion:8"])
def test_downstream_ood_of_another_shape_is_one_line(study, ood):
    root, sets = study
    rc, _, err = cli(["downstream", QUICKSTART, "--ood", ood, "--baseline-steps", "0", *sets])
    line = one_error_line(err)
    assert rc == 2 and f"--ood {ood}" in line
    assert not (root / "quickstart" / "downstream").exists()


# ------------------------------------------------------------------- item 14: no silent changes


@pytest.mark.parametrize(
    "override, key",
    [
        ("teacher.widths=100", "teacher.widths"),
        ("student.widths=64", "student.widths"),
        ("distill.targets=predictive", "distill.targets"),
    ],
)
def test_a_scalar_where_a_list_is_expected_is_one_line(override, key, tmp_path):
    from gped_search.config import ConfigError, load_study

    with pytest.raises(ConfigError, match=rf"{key} must be a list"):
        load_study(QUICKSTART, [override])
    rc, _, err = cli(["status", QUICKSTART, "--set", override, "--set", f"report_dir={tmp_path}"])
    assert rc == 2 and key in one_error_line(err)


def test_pareto_refuses_objectives_on_test_metrics(study):
    root, sets = study
    rc, out, err = cli(["pareto", QUICKSTART, "--objectives", "test_kl,bytes_fp32", *sets])
    line = one_error_line(err)
    assert rc == 2 and "--objectives test_kl" in line and "use kl" in line and not out
    rc, out, err = cli(["pareto", QUICKSTART, "--objectives", "kl,bytes_fp32", *sets])
    assert rc == 0, err


# ------------------------------------------------------------------- item 15: smaller items


def test_status_and_pareto_mark_the_knee_and_pareto_fits_120_columns(study):
    import json

    from gped_search.report.tables import knee_point, pareto_front

    root, sets = study
    df = study_frame(root)
    obj = {"kl": "minimize", "bytes_fp32": "minimize", "macs": "minimize"}  # the quickstart's objectives
    front = pareto_front(df, obj)
    knee = int(front.loc[knee_point(front, obj), "number"])
    rc, out, err = cli(["status", QUICKSTART, *sets])
    assert rc == 0, err
    assert f"knee (recommended): trial {knee} (" in out
    rc, out, err = cli(["status", QUICKSTART, "--json", *sets])
    assert json.loads(out)["knee"]["trial"] == knee
    summary = json.loads((root / "quickstart" / "summary.json").read_text())
    assert summary["recommended"]["trial"] == knee  # the report's recommendation
    rc, out, err = cli(["pareto", QUICKSTART, *sets])
    assert rc == 0, err
    assert max(len(ln) for ln in out.splitlines()) <= 120
    starred = [ln for ln in out.splitlines() if " * " in f" {ln} " and ln.split()[0] == str(knee)]
    assert len(starred) == 1, out


def test_missing_data_root_error_lists_where_it_looks(tmp_path):
    from gped_search.data import DataError, load_split

    with pytest.raises(DataError) as e:
        load_split("mnist", False, str(tmp_path))
    msg = str(e.value)
    assert "data.root, $GPED_DATA_ROOT, ../shared/data if it exists, ./data" in msg and "\n" not in msg


# ------------------------------------------------------------------- item 3: errors before heavy imports


def test_export_formats_read_without_torch_match_the_exporter():
    from gped_search.cli_commands import export_formats
    from gped_search.exporting import FORMATS

    assert export_formats() == FORMATS


@pytest.mark.parametrize(
    "args",
    [
        ["export", QUICKSTART, "--trial", "99", "--out", "X"],
        ["export", QUICKSTART, "--trial", "0", "--format", "tflite", "--out", "X"],
        ["export", QUICKSTART, "--require", "acc=>1", "--out", "X"],
        ["pareto", QUICKSTART, "--objectives", "test_kl"],
        ["evaluate", "no/such/student.pt"],
    ],
    ids=["trial-99", "format-tflite", "require", "pareto-test", "evaluate-missing"],
)
def test_argument_errors_come_before_torch_and_pandas(study, tmp_path, args):
    import json
    import subprocess
    import sys

    _, sets = study
    argv = [a.replace("X", str(tmp_path / "x")) for a in args] + (sets if args[0] != "evaluate" else [])
    code = (
        "import sys, io, contextlib\nfrom gped_search.cli import main\nerr = io.StringIO()\n"
        f"with contextlib.redirect_stderr(err):\n    rc = main({argv!r})\n"
        "print(rc, err.getvalue().strip().count(chr(10)), sorted(m for m in ('torch', 'pandas', 'matplotlib') "
        "if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    rc, newlines, heavy = r.stdout.split(" ", 2)
    assert (rc, newlines) == ("2", "0"), r.stdout + r.stderr
    assert json.loads(heavy.replace("'", '"')) == [], heavy


# ------------------------------------------------------------------- the --help examples on the quickstart


def test_every_quickstart_example_in_help_runs_without_a_traceback(study, tmp_path, monkeypatch):
    """Each ``gped-search --help`` example on the quickstart study or its export (the study file's own
    settings shrunk by --set, ``exported/`` in a scratch folder) exits 0 with no traceback."""
    import shlex

    from gped_search.cli_parser import EXAMPLES

    _, sets = study
    monkeypatch.chdir(tmp_path)  # exported/ lands here
    ran = []
    order = {"export": 0, "evaluate": 1}
    examples = [ln.split("#")[0].split()[1:] for ln in EXAMPLES.splitlines() if ln.strip().startswith("gped-search")]
    picked = [
        a for a in examples if (QUICKSTART.endswith(a[1]) and a[0] not in ("run", "distill")) or a[0] == "evaluate"
    ]
    for argv in sorted(picked, key=lambda a: order.get(a[0], -1)):
        argv = [QUICKSTART if a == "studies/quickstart.yaml" else a for a in argv]
        argv = [*argv, *(sets if argv[0] != "evaluate" else [])]
        rc, out, err = cli(argv)
        assert rc == 0 and "Traceback" not in err, (shlex.join(argv), err)
        ran.append(argv[0])
    assert sorted(ran) == ["evaluate", "export", "pareto", "report", "status"]


# ------------------------------------------------------------------- every command, wrong inputs: one line


WRONG = [
    ["status", "no/such/study.yaml"],
    ["status", "{Q}", "--set", "teacher.widths=100"],
    ["status", "{Q}", "--set", "nonsense=1"],
    ["run", "{Q}", "--n-trials", "0", "--no-progress"],
    ["run", "{Q}", "--workers", "0", "--no-progress"],
    ["run", "{Q}", "--timeout", "-5", "--no-progress"],
    ["distill", "{Q}", "--set", "distill.steps=-1"],
    ["pareto", "{Q}", "--objectives", "kl:up"],
    ["pareto", "{Q}", "--objectives", "nonsense"],
    ["pareto", "{Q}", "--csv", "/proc/no/such/dir/front.csv"],
    ["report", "{Q}", "--compare", "no/such/other.yaml"],
    ["report", "{Q}", "--out", "/proc/forbidden/report"],
    ["compare", "no/such/folder", "--out", "{T}/cmp"],
    ["compare", "{R}", "--out", "{T}/cmp", "--budgets", "x"],
    ["export", "{Q}", "--trial", "best:nonsense", "--out", "{T}/x"],
    ["export", "{Q}", "--trial", "-1", "--out", "{T}/x"],
    ["export", "{Q}", "--knee", "--out", "/proc/forbidden/x"],
    ["downstream", "{Q}", "--trials", "99", "--baseline-steps", "0"],
    ["downstream", "{Q}", "--trials", "x", "--baseline-steps", "0"],
    ["downstream", "{Q}", "--baseline-steps", "-1", "--ood", "occlusion:2"],
    ["robustness", "{Q}", "--eps", "2"],
    ["robustness", "{Q}", "--n", "0"],
    ["robustness", "{Q}", "--trials", "99", "--baseline-steps", "0", "--n", "5"],
    ["evaluate", "{T}"],
    ["evaluate", "{Q}"],
    ["evaluate", "{S}", "--teacher", "no/such/teacher.pt"],
    ["evaluate", "{S}", "--data-root", "{T}/empty", "--ood", "fashion_mnist"],
]


@pytest.mark.parametrize("argv", WRONG, ids=lambda a: " ".join(a)[:60])
def test_every_command_answers_wrong_input_with_one_line(study, digits_student, tmp_path, argv):
    root, sets = study
    subs = {"{Q}": QUICKSTART, "{T}": str(tmp_path), "{R}": str(root), "{S}": str(digits_student)}
    args = [subs.get(a, a.replace("{T}", str(tmp_path))) for a in argv]
    if argv[0] in ("run", "distill"):  # never in the shared study: a wrong input accepted would run there
        sets = tiny_sets(tmp_path / "own", "device=cpu")
    if argv[0] not in ("compare", "evaluate"):
        args = [*args[:2], *sets, *args[2:]]  # the wrong input's own --set comes last and wins
    rc, out, err = cli(args)
    assert rc != 0, (args, out[-500:])
    one_error_line(err)


def test_the_readme_walkthrough_runs_without_a_traceback(study, tmp_path, monkeypatch):
    """The README's run -> report -> export walkthrough (after `run`, which the fixture did with --set)."""
    import re
    import shlex

    root, sets = study
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Walkthrough.*?```bash\n(.*?)```", text, re.S).group(1)
    lines = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip().startswith("gped-search")]
    monkeypatch.chdir(tmp_path)
    ran = []
    for ln in lines:
        argv = shlex.split(ln)[1:]
        if argv[0] == "run":
            continue
        argv = [QUICKSTART if a == "studies/quickstart.yaml" else a for a in argv]
        argv = [str(root / "quickstart" / "teacher.pt") if a == "reports/quickstart/teacher.pt" else a for a in argv]
        argv = [*argv, *(sets if argv[0] != "evaluate" else [])]
        rc, out, err = cli(argv)
        assert rc == 0 and "Traceback" not in err, (ln, err)
        ran.append(argv[0])
    assert ran == ["status", "pareto", "report", "export", "evaluate"]
