"""What a new user meets (issue 17): run's per-trial lines, the recommendation in the report, a moved
study folder, model cards that reproduce their accuracy, a failed start leaving nothing behind, a CLI
that does not import torch to print its status, and the report rendered in a real headless browser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gped_search.cli import main
from gped_search.report.tables import knee_point, pareto_front

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "studies" / "quickstart.yaml")
NAME = "quickstart"
TINY = ("teacher.iterations=600", "teacher.burn_in=200", "teacher.thin=20", "teacher.bank_size=4",
        "distill.steps=60", "prune.finetune_steps=20",
        "search.space={mlp_depth: {low: 1, high: 2}, mlp_width: {low: 4, high: 48}, lambda_g: [0.0, 0.01]}")


def sets(report_dir: Path, *extra: str) -> list[str]:
    return [a for o in (f"report_dir={report_dir}", *TINY, *extra) for a in ("--set", o)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 5-trial quickstart study (tiny), run once through the CLI; (report_dir, stdout)."""
    root = tmp_path_factory.mktemp("ux")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", QUICKSTART, "--n-trials", "5", "--no-progress", *sets(root)]) == 0
    return root, out.getvalue()


def test_run_prints_one_line_per_trial_then_a_summary(study):
    root, out = study
    lines = out.strip().splitlines()
    trial_lines = [ln for ln in lines if ln.startswith("trial ")]
    assert [int(ln.split()[1]) for ln in trial_lines] == [0, 1, 2, 3, 4]
    for ln in trial_lines:
        assert " complete " in ln and "MLP 64-" in ln and "kl " in ln and "kB" in ln and "macs " in ln
        assert ln.rstrip().endswith(("dominated",)) or re.search(r"on the front \(\d+ of \d+\)$", ln), ln
    assert not any(ln.lstrip().startswith(("{", "}", "\"")) for ln in lines)  # no JSON without --json
    summary = next(ln for ln in lines if ln.startswith("study quickstart:"))
    assert "5 complete" in summary and "on the Pareto front" in summary
    assert f"report: {root / NAME / 'index.html'}" in lines
    export = next(ln for ln in lines if ln.startswith("export the recommended"))
    assert "gped-search export" in export and "--knee" in export and f"report_dir={root}" in export


def test_report_opens_with_the_recommended_student_and_why(study):
    root, _ = study
    out = root / NAME
    trials = pd.read_csv(out / "trials.csv")
    objectives = {"kl": "minimize", "bytes_fp32": "minimize", "macs": "minimize"}  # the quickstart's
    front = pareto_front(trials, objectives)
    knee = int(front.loc[knee_point(front, objectives), "number"])
    md = (out / "summary.md").read_text().splitlines()
    assert md[0].startswith("> Selected on the validation split")
    assert md[4].startswith(f"**Recommended student: trial {knee} (MLP 64-")
    assert md[5].startswith("Why: the knee: scale each objective to 0..1 over the front")
    assert md[6].startswith("Export it: `gped-search export") and "--knee" in md[6]
    text = "\n".join(md)
    assert "{'COMPLETE'" not in text and "Trials: 5 complete." in text
    assert "KL val [nats]" in text and "size fp32 [kB]" in text  # units in the headers
    assert "saved_fraction" in text and "sharing saved" in text  # every summary number explained
    assert "## Parameter importances" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recommended"]["trial"] == knee
    page = (out / "index.html").read_text()
    head = page.split("<h2>")[0]
    assert f"Recommended student: trial {knee}" in head and "Why: the knee" in head
    assert 'class="t sortable"' in page and "<tr class=knee>" in page
    assert (out / "parallel.png").is_file() and "Every complete trial across every objective" in page
    assert "figcaption>pareto_" not in page  # captions are sentences, not file names


def test_the_knee_is_starred_in_every_pair_plot():
    from gped_search.report.plots import plot_pareto_pair

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"number": range(12), "state": "COMPLETE", "feasible": True,
                       "kl": rng.uniform(0.01, 0.3, 12), "bytes_fp32": rng.uniform(1e3, 1e6, 12),
                       "latency_ms": rng.uniform(0.01, 0.1, 12)})
    objectives = {"kl": "minimize", "bytes_fp32": "minimize", "latency_ms": "minimize"}
    front = pareto_front(df, objectives)
    df["on_front"] = df.index.isin(front.index)
    knee = int(front.loc[knee_point(front, objectives), "number"])
    fig = plot_pareto_pair(df, "kl", "bytes_fp32", objectives, highlight={knee: "recommended (knee)"})
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert f"#{knee}: recommended (knee)" in labels
    assert any(lb.startswith("on the 3-objective front") for lb in labels)  # the true front is ringed
    ringed = {t.get_text() for t in ax.texts}
    assert ringed <= {f"#{n}" for n in front["number"]}  # only true-front trials carry labels


def test_a_moved_study_folder_still_works(study, tmp_path, capsys):
    """Copy the report folder elsewhere, delete the original: status, report, export, downstream and
    evaluate all work from the new place, and exported files name no path or host of this machine."""
    root, _ = study
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    hidden = root.with_name(root.name + "_hidden")
    root.rename(hidden)
    try:
        s = sets(moved)
        assert main(["status", QUICKSTART, *s]) == 0
        assert main(["report", QUICKSTART, *s]) == 0
        out = tmp_path / "exported"
        assert main(["export", QUICKSTART, "--knee", "--out", str(out), *s]) == 0
        assert main(["downstream", QUICKSTART, "--baseline-steps", "0", "--ood", "occlusion:4",
                     "--out", str(tmp_path / "ds"), *s]) == 0
        assert main(["evaluate", str(out / "student.pt"), "--ood", "occlusion:4"]) == 0
        capsys.readouterr()
        host = socket.gethostname()
        for f in out.iterdir():
            text = f.read_text(errors="replace") if f.suffix in (".json", ".md", ".py") else ""
            for bad in (str(root), str(hidden), str(moved), host):
                assert bad not in text, (f.name, bad)
        assert (out / "reproduce_accuracy.py").is_file()
    finally:
        hidden.rename(root)


def _reproduce(folder: Path, data_root: str | None = None) -> subprocess.CompletedProcess:
    """Run the card's script in a fresh interpreter that cannot import gped_search."""
    guard = ("import sys, runpy\n"
             "class _No:\n"
             "    def find_spec(self, name, *a, **k):\n"
             "        if name == 'gped_search' or name.startswith('gped_search.'):\n"
             "            raise ImportError('gped_search is not available here')\n"
             "sys.meta_path.insert(0, _No())\n"
             f"sys.argv = ['reproduce_accuracy.py'] + {['--data-root', data_root] if data_root else []!r}\n"
             f"runpy.run_path({str(folder / 'reproduce_accuracy.py')!r}, run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True, cwd=folder, env=env,
                          timeout=300)


def test_model_card_script_reproduces_the_digits_accuracy(study, tmp_path):
    root, _ = study
    out = tmp_path / "card"
    assert main(["export", QUICKSTART, "--knee", "--out", str(out), *sets(root)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert "divided by 16.0" in card["input"]["preprocessing"]
    assert "manual_seed(1234)" in card["input"]["test_split"] and "360 images" in card["input"]["test_split"]
    assert not any(isinstance(v, float) and v != v for v in card["metrics"].values())  # no nan rows
    assert "nan" not in (out / "model_card.md").read_text()
    r = _reproduce(out)
    assert r.returncode == 0, r.stderr
    assert f"(model card: {card['metrics']['test_student_acc']:.6f})" in r.stdout


def test_model_card_script_reproduces_an_occluded_mnist_accuracy(tmp_path):
    """MNIST with a 6 px occlusion and study seed 3: the script rebuilds the occluded test set itself."""
    data_root = str(Path(os.environ.get("GPED_DATA_ROOT") or ROOT.parent / "shared" / "data").resolve())
    if not (Path(data_root) / "MNIST" / "raw").is_dir():
        pytest.skip("no MNIST under the data root")
    extra = ("data.dataset=mnist", "data.mask_size=6", "data.validation=2000", "data.train_subset=3000",
             "data.ood=null", "seed=3", "teacher.iterations=300", "teacher.burn_in=100",
             "search.space={mlp_width: [16], lambda_g: [0.0]}", "search.sampler=random")
    s = [a for o in (f"report_dir={tmp_path}", *TINY[:6], *extra) for a in ("--set", o)]
    assert main(["run", QUICKSTART, "--n-trials", "1", "--no-progress", "--no-report", "--json", *s]) == 0
    out = tmp_path / "card"
    assert main(["export", QUICKSTART, "--trial", "0", "--out", str(out), *s]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert "divided by 255.0" in card["input"]["preprocessing"]
    assert "manual_seed(3 * 7919 + 2)" in card["input"]["occlusion"]
    r = _reproduce(out, data_root)
    assert r.returncode == 0, r.stderr
    assert "on 10000 images" in r.stdout and "model card:" in r.stdout


def test_a_failed_first_run_leaves_no_study_folder(tmp_path, capsys):
    s = sets(tmp_path, "data.dataset=mnist", f"data.root={tmp_path / 'no_such_data'}")
    assert main(["run", QUICKSTART, "--no-progress", *s]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gped-search: error: mnist: ") and "data.root" in err[0]
    assert not (tmp_path / NAME).exists()


def test_status_and_help_do_not_import_torch(study):
    root, _ = study
    code = ("import sys\nfrom gped_search.cli import main\n"
            f"rc = main(['status', {QUICKSTART!r}] + {sets(root)!r})\n"
            "heavy = sorted(m for m in ('torch', 'matplotlib', 'scipy', 'sklearn', 'pandas') if m in sys.modules)\n"
            "print('HEAVY', heavy, rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY [] 0" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, "-c", "import sys\nfrom gped_search.cli import build_parser\n"
                        "build_parser().format_help()\nimport gped_search\nprint('torch' in sys.modules)"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--hide-scrollbars"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's chromium when it can)")
def test_report_renders_in_headless_chromium_without_overflow(study, tmp_path):
    """At 1400 and 800 px: no horizontal overflow, every image decoded, and the sections added by issue 28
    (learning curves, durations, downstream results once run) present and laid out."""
    root, _ = study
    copy = tmp_path / "reports"
    shutil.copytree(root, copy)  # downstream writes into the study folder: leave the module's study alone
    s = sets(copy)
    assert main(["downstream", QUICKSTART, "--baseline-steps", "0", "--ood", "occlusion:4", *s]) == 0
    assert main(["report", QUICKSTART, *s]) == 0
    page = (copy / NAME / "index.html").read_text()
    probe = ("<script>window.addEventListener('load',function(){var h=function(i){var e=document.getElementById(i);"
             "return e?e.getBoundingClientRect().height:0};document.title='W='"
             "+document.documentElement.scrollWidth+' H='+document.documentElement.scrollHeight"
             "+' IMG='+Array.from(document.images).filter(function(i){return i.naturalWidth>0}).length"
             "+' S='+['curves','durations','downstream'].map(function(i){return h(i)>0?1:0}).join('');});"
             "</script></body>")
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", probe))
    prof = str(tmp_path / "profile")
    for width in (1400, 800):
        flags = [f if not f.startswith("--window-size") else f"--window-size={width},1000" for f in FLAGS]
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={prof}", "--virtual-time-budget=5000",
                              "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
        m = re.search(r"<title>W=(\d+) H=(\d+) IMG=(\d+) S=(\d+)</title>", dom.stdout)
        assert m, dom.stdout[:500] + dom.stderr[-500:]
        page_width, height, images, shown = int(m[1]), int(m[2]), int(m[3]), m[4]
        assert page_width <= width, f"horizontal overflow: the page is {page_width} px wide at a {width} px window"
        assert height > 1000 and images == page.count("data:image/png;base64,") >= 7
        assert shown == "111", f"sections curves, durations, downstream laid out: {shown}"
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}", f"--screenshot={shot}",
                    (copy / NAME / "index.html").as_uri()], capture_output=True, timeout=120)
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[1] == 1400 and img[..., :3].std() > 0.05  # not blank


def test_each_trial_records_its_learning_curve(study):
    """The distillation loss at 20 checks per run, as intermediate values optuna-dashboard draws."""
    import optuna

    root, _ = study
    s = optuna.load_study(study_name=NAME, storage=f"sqlite:///{root / NAME / 'study.db'}")
    for t in s.trials:
        curve = t.intermediate_values
        steps = sorted(curve)
        assert steps[0] == 3 and steps[-1] == 60 and len(steps) == 20, steps  # 60 steps, a point every 3
        assert all(np.isfinite(v) and v > 0 for v in curve.values())
        assert curve[steps[-1]] < curve[steps[0]]  # the loss went down


@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / "studies").rglob("*.yaml") if not p.name.startswith("_")),
    ids=lambda p: p,
)
def test_every_shipped_study_file_is_valid(path):
    """Every study file in ``studies/`` loads and validates, its name and report folder set, so a
    README or benchmark command that names one cannot fail on a typo in the file. (``_*.yaml`` are
    the bases they extend, not studies: see the next test.)"""
    from gped_search.config import load_study

    cfg = load_study(ROOT / path)
    assert cfg.name and cfg.search.n_trials >= 1
    assert not Path(cfg.report_dir).is_absolute()


def test_every_shipped_base_is_extended():
    """A shipped base (``_*.yaml``) is extended by at least one study file: no dead settings lie around."""
    import yaml

    studies = ROOT / "studies"
    docs = {p: yaml.safe_load(p.read_text()) for p in studies.rglob("*.yaml")}
    named = {(p.parent / d["extends"]).resolve() for p, d in docs.items() if "extends" in d}
    bases = sorted(p.resolve() for p in studies.rglob("_*.yaml"))
    assert bases and all(b in named for b in bases), [str(b) for b in bases if b not in named]
