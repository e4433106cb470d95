"""The same study twice gives the same trials (issue 28, item 18): the shipped quickstart's objectives are
exact counts (MACs, bytes), so nothing measured feeds the sampler, and a run repeats bit for bit."""

from __future__ import annotations

import yaml
from conftest import QUICKSTART, cli, tiny_sets

FAST = ("distill.steps=30", "prune.finetune_steps=10", "search.space.family=[mlp]")


def test_shipped_studies_have_no_measured_objective():
    from pathlib import Path

    for path in sorted((Path(QUICKSTART).parent).rglob("*.yaml")):
        search = (yaml.safe_load(path.read_text()) or {}).get("search") or {}
        measured = {"latency_ms", "train_seconds"} & set(search.get("objectives") or {})
        assert not measured, f"{path.name}: {measured} makes the search depend on the machine's load"


def test_a_study_run_twice_with_the_same_seed_proposes_the_same_trials(tmp_path):
    """Four trials (two random, two from TPE's model of the first ones): parameters and objectives
    equal to the last bit in a second study with the same settings (it shares the first one's teacher,
    as a study in the same folder does: the chain's own repeatability is tested in test_chain)."""
    from gped_search.config import load_study
    from gped_search.search import open_study, trials_frame

    frames = []
    for name in ("first", "second"):
        sets = tiny_sets(tmp_path, "device=cpu", f"name={name}", *FAST)
        rc, _, err = cli(["run", QUICKSTART, "--n-trials", "4", "--no-progress", "--no-report", *sets])
        assert rc == 0, err
        cfg = load_study(QUICKSTART, [s for s in sets if s != "--set"])
        frames.append(trials_frame(open_study(cfg, create=False)).sort_values("number").reset_index(drop=True))
    a, b = frames
    params = [c for c in a.columns if c.startswith("param_")]
    assert params and len(a) == len(b) == 4
    assert a[params].equals(b[params]), (a[params], b[params])
    for objective in ("kl", "bytes_fp32", "macs"):
        assert a[objective].tolist() == b[objective].tolist(), objective
