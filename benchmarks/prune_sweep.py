"""Group-LASSO sweep on one student: units kept, size, latency, KL/accuracy before/after pruning and
after fine-tuning, against plain (unpruned) students of the same widths. Prints JSON.

Uses a study's teacher artifact (run the study first, or this samples it once):

    python benchmarks/prune_sweep.py studies/mnist_mlp.yaml --lambdas 0,1e-4,3e-4,1e-3 \
        --set teacher.iterations=50000 --set distill.steps=3000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from gped_search.config import PruneRule, load_study
from gped_search.distill.loop import train_student
from gped_search.engine import (
    make_trainer,
    prepare,
    prune_and_finetune,
    student_arch_for,
    student_record,
)
from gped_search.metrics.cost import measure_latency
from gped_search.models import build
from gped_search.search.teacher import ensure_teacher

KEYS = ("kl", "student_acc", "expected_entropy_mae", "params", "bytes_fp32")


def latency(model, p, batch: int) -> float:
    return measure_latency(
        model,
        p.bundle.in_shape,
        batch=batch,
        device=str(p.device),
        threads=1,
        repeats=50,
        warmup=10,
    )["median_ms"]


def distil(p, teacher, widths, lambda_g, steps, seed):
    cfg = p.cfg
    s = replace(cfg.student, widths=tuple(widths))
    torch.manual_seed(seed)
    model = build(student_arch_for(p, s)).to(p.device)
    tr = make_trainer(model, p, cfg.distill, lambda_g=lambda_g)
    train_student(tr, teacher, p.bundle.transfer, steps, cfg.distill, cfg.data, seed=seed)
    return model


def pick(rec):
    return {k: rec[k] for k in KEYS if k in rec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--lambdas", default="0,1e-4,3e-4,1e-3")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_study(args.study, args.overrides)
    p = prepare(cfg)
    teacher, _ = ensure_teacher(p, cfg.out_dir, progress=False)
    steps = cfg.distill.steps
    prune = replace(cfg.prune, rule=PruneRule.threshold)
    out = {
        "study": cfg.name,
        "dataset": cfg.data.dataset.value,
        "mask_size": cfg.data.mask_size,
        "student": list(cfg.student.widths),
        "steps": steps,
        "finetune_steps": prune.finetune_steps,
        "tau": prune.tau,
        "teacher": {k: teacher.metrics[k] for k in ("teacher_acc", "teacher_nll")},
        "latency": "CPU, 1 thread, median of 50 after 10 warm-up runs",
        "rows": [],
    }
    for lam in (float(v) for v in args.lambdas.split(",")):
        t0 = time.perf_counter()
        model = distil(p, teacher, cfg.student.widths, lam, steps, args.seed)
        row = {"lambda_g": lam, "before": pick(student_record(model, teacher, p))}
        if lam > 0:
            # the one prune -> fine-tune schedule; the record after pruning, before fine-tuning, is "pruned"
            info = prune_and_finetune(
                model,
                teacher,
                p,
                prune,
                cfg.distill,
                args.seed,
                after_prune=lambda m, r, row=row: row.update(pruned=pick(student_record(m.model, teacher, p))),
            )
            row["units_kept"] = info["units_kept"]
            row["finetuned"] = pick(student_record(model, teacher, p))
            # The budget-matched plain student: the pruned widths, trained without the penalty.
            plain = distil(p, teacher, info["units_kept"], 0.0, steps + prune.finetune_steps, args.seed)
            row["plain_same_widths"] = pick(student_record(plain, teacher, p))
        else:
            row["units_kept"] = list(cfg.student.widths)
        row["latency_ms_b1"] = latency(model, p, 1)
        row["latency_ms_b256"] = latency(model, p, 256)
        row["seconds"] = time.perf_counter() - t0
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
