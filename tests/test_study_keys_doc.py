"""docs/study-keys.md is generated from the schema and stays in step with it."""

from __future__ import annotations

import dataclasses
import typing

from gped_search.config import StudyConfig
from gped_search.config.keys_doc import DOC, field_docs, main, render


def test_the_key_reference_matches_the_schema():
    assert DOC.read_text() == render(), "docs/study-keys.md is stale: run python -m gped_search.config.keys_doc"
    assert main(["--check"]) == 0


def keys(cls: type, prefix: str = ""):
    """(dotted key, docstring) of every leaf setting of a study file."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", docs.get(f.name)


def test_every_key_is_in_the_reference_with_its_meaning():
    text = render()
    found = list(keys(StudyConfig))
    assert len(found) > 80
    for key, doc in found:
        assert f"| `{key}` |" in text, key
        assert doc, f"{key} has no docstring in the schema"


def test_a_drifted_reference_is_caught(tmp_path):
    stale = tmp_path / "keys.md"
    stale.write_text(render().replace("`distill.lr`", "`distill.learning_rate`"))
    assert main(["--check", "--out", str(stale)]) == 1
