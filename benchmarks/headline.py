"""Run the headline comparison (issue 16): the paper's grid vs group-LASSO pruning vs the search.

Every study file in ``studies/headline/`` is run once per search seed, as the Optuna study
``headline_<file>_s<seed>`` in ``reports/headline/`` (see ``suite.py``: resumable, one teacher per
setting).

    python benchmarks/headline.py teachers [--only mlp_mask0]     # sample the shared teachers only
    python benchmarks/headline.py run [--only mlp_mask0] [--seeds 0 1 2]
    python benchmarks/headline.py plan                            # what would run, and what is done
    gped-search compare reports/headline --out reports/headline_comparison
"""

from __future__ import annotations

import sys

from suite import ROOT, Suite, parser

# The NSGA-II study of mask 0 is costly on two cores: it runs after everything else of its setting.
SUITE = Suite(
    studies=ROOT / "studies" / "headline",
    reports=ROOT / "reports" / "headline",
    prefix="headline",
    order=("grid", "prune", "tpe", "supernet", "qmc", "halving", "halving14", "halving25", "nsga2"),
    last=("nsga2",),
)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], ("teachers", "run", "plan")).parse_args(argv)
    return getattr(SUITE, args.cmd)(args)


if __name__ == "__main__":
    sys.exit(main())
