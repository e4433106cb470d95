"""``docs/study-keys.md``, generated from the schema: every study-file key with its type, default and
the docstring it has in :mod:`gped_search.config.schema` (and :mod:`.schema_chain`, :mod:`.schema_strategy`).

    python -m gped_search.config.keys_doc            # rewrite docs/study-keys.md
    python -m gped_search.config.keys_doc --check    # exit 1 when the file differs from the schema
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path

from .schema import StudyConfig

__all__ = ["field_docs", "render", "main", "DOC"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "study-keys.md"
"""Where the generated reference lives in a source checkout."""

HEADER = """# Study-file keys

Generated from the schema (`gped_search/config/schema.py`, `schema_chain.py`, `schema_strategy.py`) by
`python -m gped_search.config.keys_doc`; `tests/test_study_keys_doc.py` fails when this file and the
schema differ. Do not edit it by hand: edit the field's docstring and regenerate.

A study file is YAML with these sections; a key left out takes its default. `extends: base.yaml` reads
a base file first (see the README), and `--set section.key=value` overrides any key on the command line.
`search.space` is described in the README (its parameters) and `gped_search/config/space.py`.
"""


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring: the string literal right after its annotated assignment in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    out = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def _type_text(tp) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(m.value for m in tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_text(a) for a in args)
    if origin is tuple:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
    else:  # pragma: no cover - every study key has a default
        return "(required)"
    if isinstance(v, enum.Enum):
        v = v.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, (list, dict)):
        return f"`{v}`" if v else ("`[]`" if isinstance(v, list) else "`{}`")
    return f"`{v}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _section(cls: type, prefix: str, out: list[str], nested: list[tuple[type, str]]) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((tp, f"{prefix}{f.name}."))
            continue
        rows.append(
            f"| `{prefix}{f.name}` | {_cell(_type_text(tp))} | {_cell(_default_text(f))} | {_cell(docs.get(f.name, ''))} |"
        )
    out += ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]


def render() -> str:
    """The whole reference, from the dataclasses of :class:`StudyConfig`."""
    out = [HEADER, "## top level", ""]
    queue: list[tuple[type, str]] = []
    _section(StudyConfig, "", out, queue)
    while queue:
        cls, prefix = queue.pop(0)
        out += [f"## {prefix.rstrip('.')}", ""]
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            out += [" ".join(cls.__doc__.split()), ""]
        _section(cls, prefix, out, queue)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write (or --check) docs/study-keys.md from the schema.")
    ap.add_argument("--check", action="store_true", help="exit 1 when the file differs from the schema")
    ap.add_argument("--out", type=Path, default=DOC)
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        if not same:
            print(f"{args.out} differs from the schema: run python -m gped_search.config.keys_doc", file=sys.stderr)
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
