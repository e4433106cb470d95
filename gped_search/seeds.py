"""Every random stream's seed, derived in one place from a study, search or trial seed.

``derive_seed(seed, stream)`` is the seed of a named stream. The formulas are the ones the
project's published results were made with (mostly ``seed * 7919 + k``), kept so that those results
reproduce; a new stream takes a new name and a fresh offset here, never arithmetic at the call site.
"""

from __future__ import annotations

__all__ = ["STREAMS", "derive_seed", "search_seed", "trial_seed", "resume_sampler_seed"]

# fmt: off
STREAMS: dict[str, tuple[int, int]] = {
    # stream: (multiplier, offset) -> seed * multiplier + offset (+ index)
    "train-mask": (7919, 1),               # occlusion positions of the training images
    "test-mask": (7919, 2),                # ... of the test images (data.recipe writes this formula into model cards)
    "ood-mask": (7919, 3),                 # ... of the OOD dataset's images
    "ood-val-mask": (7919, 29),            # ... of the validation OOD images (the OOD dataset's training images)
    "ood-occlusion": (1, 101),             # the study seed of an ``occlusion:<size>`` OOD set (its test-mask stream)
    "baseline-batches": (7919, 5),         # minibatches of the deterministic baseline
    "chain-batches": (7919, 11),           # SGLD minibatches and noise of the teacher chain
    "student-batches": (7919, 13),         # transfer minibatches of students trained from a finished teacher
    "fine-tune": (1, 1),                   # the data seed of fine-tuning after pruning
    "fine-tune-round": (7919, 17),         # ... after round ``index`` >= 1 of an iterative schedule
    "importance-batches": (7919, 19),      # transfer minibatches whose gradients score units (round ``index``)
    "derivative-directions": (7919, 23),   # random directions of derivative matching
    "chain-init": (1000, 0),               # initial weights of chain ``index``
    "supernet": (7919, 31),                # initial weights and minibatches of a supernet (search.strategy supernet)
    "sandwich": (7919, 37),                # the random sub-networks of each sandwich step
    "supernet-space": (7919, 41),          # the architectures a supernet scores, when the space is sampled
    "supernet-check": (7919, 43),          # the configurations trained alone to measure Kendall tau
    "halving-rung": (7919, 47),            # transfer minibatches of successive halving's rung ``index``
}
# fmt: on


def derive_seed(seed: int, stream: str, index: int = 0) -> int:
    """The seed of ``stream`` for ``seed`` (``index`` numbers the members of a stream, e.g. chains)."""
    try:
        mult, offset = STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}") from None
    return int(seed) * mult + offset + int(index)


def search_seed(cfg) -> int:
    """The seed of a study's sampler and of its trials' students: ``search.seed``, else the study seed."""
    return cfg.seed if cfg.search.seed is None else cfg.search.seed


def trial_seed(study_seed: int, number: int) -> int:
    """A per-trial seed (initial weights) derived from (search seed, trial number)."""
    return (study_seed * 1_000_003 + number * 7919 + 17) % (2**31 - 1)


def resume_sampler_seed(search_seed: int, trials_before: int, worker: int) -> int:
    """The sampler seed of a resumed run or an extra worker: a sampler seeded like the first run's
    would repeat its parameters."""
    return (search_seed * 1_000_003 + trials_before * 7919 + worker * 104_729 + 1) % (2**31 - 1)
