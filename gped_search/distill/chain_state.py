"""A :class:`~gped_search.distill.chain.TeacherChain`'s state as plain data, and back (checkpoints).

Split from ``chain.py``: the chains' parameters, every generator (the sampler's state before its next
unconsumed draw), the sampler rule's state (pSGLD's V), the posterior accumulators, the bank, the
online students with their optimisers, schedules and weight averages, and running-mean targets.
"""

from __future__ import annotations

import torch

from gped_search.distill.targets import RunningMeanTargets
from gped_search.posterior.expectations import PosteriorAccumulator

__all__ = ["chain_state", "load_chain_state"]


def _acc_state(acc: PosteriorAccumulator | None) -> dict | None:
    return None if acc is None else {"sums": {k: v.clone() for k, v in acc.sums.items()}, "count": acc.count}


def _acc_load(acc: PosteriorAccumulator | None, d: dict | None) -> None:
    if acc is None or d is None:
        return
    for k, v in d["sums"].items():
        acc.sums[k].copy_(v)
    acc.count = int(d["count"])


def chain_state(self) -> dict:
    """Everything :class:`TeacherChain` carries between iterations, as plain data (see its docstring)."""
    s = self.sampler
    d = {
        "t": s.t,
        "params": [p.detach().cpu().clone() for p in s.params],
        "sampler_gen": s.rng_state(),
        "sampler_state": s.rule.state_dict(),
        "data_gen": self.data_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "acc": {k: _acc_state(v) for k, v in self.acc.items()},
        "halves": [_acc_state(h) for h in self.halves],
        "samples": self.samples,
        "stride": self.stride,
        "bank_index": [i for i, _ in self.bank],
        "bank": [[p.cpu() for p in snap] for _, snap in self.bank],
        "seconds": self.seconds,
        "history": list(self.history),
        "trace": torch.stack(self.trace).cpu() if self.trace else None,
        "sessions": self.sessions,
        "students": [],
    }
    for tr in self.students:
        d["students"].append(
            {
                "model": {k: v.detach().cpu().clone() for k, v in tr.model.state_dict().items()},
                "opt": tr.opt.state_dict(),
                "sched": tr.sched.state_dict(),
                "steps": tr.steps,
                "nonfinite": tr.nonfinite.cpu(),
                "last_loss": tr.last_loss.detach().cpu(),
            }
        )
    for rec, avg in zip(d["students"], self.averages):
        rec["average"] = {k: v.detach().cpu().clone() for k, v in avg.state_dict().items()}
    if self.lock is not None and len(self.students) > 1:
        d["lock"] = {
            "opt": self.lock.opt.state_dict(),
            "sched": self.lock.sched.state_dict(),
            "nonfinite": self.lock.nonfinite.cpu(),
            "active": list(self.lock.active),
        }
    if isinstance(self.source, RunningMeanTargets):
        d["running_mean"] = {
            "sums": {k: v.cpu() for k, v in self.source.sums.items()},
            "counts": self.source.counts.cpu(),
        }
    return d


@torch.no_grad()
def load_chain_state(self, d: dict) -> None:
    """Restore :func:`chain_state`'s output into ``self`` (a chain built with the same settings)."""
    s, dev = self.sampler, self.device
    s.t = int(d["t"])
    for p, v in zip(s.params, d["params"]):
        p.copy_(v)
    s.set_rng_state(d["sampler_gen"])
    s.rule.load_state_dict(d.get("sampler_state"), dev)
    self.data_gen.set_state(d["data_gen"])
    torch.set_rng_state(d["torch_rng"])
    for k, v in d["acc"].items():
        if k not in self.acc:
            raise ValueError(f"checkpoint has a {k!r} accumulator this run does not")
        _acc_load(self.acc[k], v)
    for h, v in zip(self.halves, d["halves"]):
        _acc_load(h, v)
    self.samples, self.stride = int(d["samples"]), int(d["stride"])
    self.bank = [(int(i), [p.to(dev) for p in snap]) for i, snap in zip(d["bank_index"], d["bank"])]
    self.seconds = float(d["seconds"])
    self.history = list(d["history"])
    # a checkpoint from before the trace has none: the trace starts here
    trace = d.get("trace")
    self.trace = [] if trace is None else [row.to(dev) for row in torch.as_tensor(trace).unbind(0)]
    self.sessions = int(d["sessions"])
    if len(d["students"]) != len(self.students):
        raise ValueError(f"checkpoint has {len(d['students'])} online students, this run {len(self.students)}")
    for tr, sd in zip(self.students, d["students"]):
        tr.model.load_state_dict(sd["model"])
        tr.opt.load_state_dict(sd["opt"])
        tr.sched.load_state_dict(sd["sched"])
        tr.steps = int(sd["steps"])
        tr.nonfinite.copy_(sd["nonfinite"])
        tr.last_loss = sd["last_loss"].to(dev)
    for avg, sd in zip(self.averages, d["students"]):
        if "average" in sd:
            avg.load_state_dict(sd["average"])
    if "lock" in d and self.lock is not None and len(self.students) > 1:
        self.lock.opt.load_state_dict(d["lock"]["opt"])
        self.lock.sched.load_state_dict(d["lock"]["sched"])
        self.lock.nonfinite.copy_(d["lock"]["nonfinite"])
        self.lock.active = list(d["lock"]["active"])
        self.lock._idx = torch.tensor(self.lock.active, dtype=torch.long, device=dev)
    if "running_mean" in d and isinstance(self.source, RunningMeanTargets):
        for k, v in d["running_mean"]["sums"].items():
            self.source.sums[k].copy_(v)
        self.source.counts.copy_(d["running_mean"]["counts"])
