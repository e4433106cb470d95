"""Reading study files: YAML errors as one line, and ``extends:`` (a study file that says only what differs).

A study file may name another as its base, ``extends: base.yaml`` (a path relative to the file). The base
is read first (it may extend another), then the file's own keys are merged into it section by section:
a mapping merges key by key, anything else (a list, a number) replaces the base's value, and
``search.space`` and ``search.objectives`` are replaced as a whole (a file that lists a space or objectives
says what they are). A cycle or a
missing base is one error line naming the files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gped_search.errors import ConfigError

__all__ = ["read_mapping", "merge"]

WHOLE = ("space", "objectives")
"""Keys whose mapping replaces the base's instead of merging into it (study files)."""


def merge(base: dict, extra: dict, whole: tuple[str, ...] = WHOLE, _space: bool = False) -> dict:
    """``extra`` merged into ``base``: mappings key by key, except the keys in ``whole``. Inside a merged
    ``space``, None removes that parameter (``--set search.space.lambda_g=null``)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in whole:
            out[k] = merge(out[k], v, whole, _space=k == "space")
        elif v is None and _space:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _read_yaml(p: Path, loader) -> dict:
    try:
        data = yaml.load(p.read_text(), Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # one line
        raise ConfigError(f"{p}: malformed YAML{at}: {problem}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file") from e
    except (ValueError, RecursionError) as e:  # an integer of > 4300 digits, nesting too deep for the parser
        raise ConfigError(f"{p}: unreadable YAML ({type(e).__name__}: {str(e).split(':')[0][:80]})") from e
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or type(e).__name__})") from e
    if data is None or data == {}:
        raise ConfigError(f"{p}: the study file is empty (see studies/quickstart.yaml for one to start from)")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a study file must be a mapping at the top level")
    return data


def read_mapping(path: Path, loader, _seen: tuple[Path, ...] = ()) -> dict:
    """The study file's mapping with its ``extends`` chain resolved (``extends`` itself removed)."""
    p = Path(path)
    here = p.resolve()
    if here in _seen:
        chain = " -> ".join(str(s) for s in (*_seen, here))
        raise ConfigError(f"{_seen[0]}: extends: a cycle ({chain})")
    if not p.is_file():
        if _seen:
            raise ConfigError(f"{_seen[-1]}: extends: base study file not found: {p}")
        raise ConfigError(f"study file not found: {p}")
    data = _read_yaml(p, loader)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{p}: extends must be the path of another study file, got {base!r}")
    parent = read_mapping(p.parent / base, loader, (*_seen, here))
    return merge(parent, data)
