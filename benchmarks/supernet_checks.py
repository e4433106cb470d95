"""The supernet studies' own records (issue 25): cost, scored architectures and the Kendall tau check.

    python benchmarks/supernet_checks.py [REPORT_DIR] [--out reports/strategies/supernet_checks.csv]

Reads every study under REPORT_DIR (default reports/headline) that ran ``search.strategy: supernet``
and writes one row per configuration trained alone for the tau check (inherited vs stand-alone
validation KL) plus each study's tau, supernet seconds and scoring seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir", nargs="?", default=str(ROOT / "reports" / "headline"))
    ap.add_argument("--out", default=str(ROOT / "reports" / "strategies" / "supernet_checks.csv"))
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    for db in sorted(Path(a.report_dir).glob("*/study.db")):
        storage = f"sqlite:///{db.resolve()}"
        for s in optuna.get_all_study_summaries(storage):
            st = optuna.load_study(study_name=s.study_name, storage=storage)
            sn, chk = st.user_attrs.get("supernet"), st.user_attrs.get("supernet_check")
            if not isinstance(sn, dict) or not isinstance(chk, dict):
                continue
            for r in chk["rows"]:
                rows.append(
                    {
                        "study": s.study_name,
                        "tau": chk["tau"],
                        "check_seconds": chk["seconds"],
                        "supernet_seconds": sn["seconds"],
                        "score_seconds": sn["score_seconds"],
                        **r,
                        "ratio": r["inherited_kl"] / r["alone_kl"],
                    }
                )
    if not rows:
        print(f"no supernet study with a tau check under {a.report_dir}", file=sys.stderr)
        return 1
    df = pd.DataFrame(rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out, index=False)
    per = df.groupby("study").agg(tau=("tau", "first"), n=("arch", "size"), ratio=("ratio", "median"))
    print(per.to_string())
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
