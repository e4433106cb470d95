"""Re-run headline studies under one load, seed by seed (issue 25): compute seconds comparable across methods.

The headline and strategy studies in ``reports/headline`` ran over several sessions beside other work
(teacher chains, test suites, helper agents), so one method's seconds may carry more load than
another's. This runs the chosen study files of ``studies/headline`` again, unchanged, into
``reports/equal_load``: seed 0 of every chosen file, then seed 1, and so on, one process at a time on
one thread, reusing the shared teachers of ``reports/headline`` (hard links, not re-sampled). Resumable.

    python benchmarks/equal_load.py run --only mlp_mask0_grid mlp_mask0_halving14
    python benchmarks/equal_load.py plan --only mlp_mask0_grid mlp_mask0_halving14
    gped-search compare reports/equal_load --out reports/strategies/equal_load
"""

from __future__ import annotations

import sys

from headline import SUITE as HEADLINE
from suite import ROOT, Suite, parser

SUITE = Suite(
    studies=HEADLINE.studies,
    reports=ROOT / "reports" / "equal_load",
    prefix=HEADLINE.prefix,
    order=HEADLINE.order,
    teacher_source=HEADLINE.reports,
    relocate=True,
    interleave=True,
)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], ("run", "plan")).parse_args(argv)
    return getattr(SUITE, args.cmd)(args)


if __name__ == "__main__":
    sys.exit(main())
