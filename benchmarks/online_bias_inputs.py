"""Diagnostic for issue 26 item 4: a student's expected-entropy bias on the transfer (training) inputs it
learns from, against its bias on the validation split (digits, the quickstart's teacher, 2*10^4 iterations).

    python benchmarks/online_bias_inputs.py online 0            # target mode, seed
    python benchmarks/online_bias_inputs.py online 0 polyak     # with distill.online_average polyak
    python benchmarks/online_bias_inputs.py cached 1

Prints the teacher's mean expected entropy and the student's bias (student - teacher) on both input sets.
"""

from __future__ import annotations

import sys

import torch

from gped_search import engine
from gped_search.config import load_study
from gped_search.distill.loop import train_student
from gped_search.metrics.quality import student_outputs
from gped_search.models import build


def main() -> None:
    torch.set_num_threads(1)
    mode, seed = sys.argv[1], int(sys.argv[2])
    avg = sys.argv[3] if len(sys.argv) > 3 else "none"
    sets = [f"seed={seed}", "teacher.iterations=20000", f"distill.target_mode={mode}", f"distill.online_average={avg}"]
    cfg = load_study("studies/quickstart.yaml", sets)
    p = engine.prepare(cfg)
    torch.manual_seed(seed)
    model = build(engine.student_arch_for(p, cfg.student))
    trainer = engine.make_trainer(model, p, cfg.distill, prune=cfg.prune)
    online = mode != "cached"
    teacher = engine.sample_teacher(p, (trainer,) if online else (), False, cache_transfer=True)
    if not online:
        steps = engine.student_steps(cfg)
        train_student(trainer, teacher, p.bundle.transfer, steps, cfg.distill, cfg.data, seed=seed, progress=False)
    out = []
    for name, x, t in (("train", p.bundle.transfer, teacher.transfer), ("val", p.bundle.val.x, teacher.val)):
        s = student_outputs(model, x)["expected_entropy"].squeeze(-1)
        h = t["expected_entropy"].squeeze(-1)
        out.append(f"{name}: teacher {float(h.mean()):.4f} bias {float((s - h).mean()):+.4f}")
    print(mode, avg, seed, " | ".join(out))


if __name__ == "__main__":
    main()
