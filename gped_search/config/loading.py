"""Reading a study file into a :class:`StudyConfig`: YAML 1.2 numbers, type coercion, ``--set`` overrides.

A study file is YAML whose top-level keys map onto :class:`StudyConfig` (the dataclasses live in
:mod:`gped_search.config.schema`; ``extends:`` is :mod:`gped_search.config.study_files`). Unknown keys are an error that names the valid
keys and the closest one, values are type-checked and range-checked, and ``--set a.b=c`` overrides
are applied after the file itself is validated, so an error is blamed on the file or on the override.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import logging
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from gped_search.errors import ConfigError

from .schema import StudyConfig
from .schema_chain import RENAMED_KEYS
from .study_files import merge, read_mapping

__all__ = ["load_study", "report_base", "parse_overrides", "study_from_dict", "upgrade_keys"]

log = logging.getLogger(__name__)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats: ``1e-3`` is a number, not the string '1e-3' (YAML 1.1)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where} must not be null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        valid = [m.value for m in tp]
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and value in valid:
            return tp(value)
        raise ConfigError(f"{where} must be one of {valid}, got {value!r}")
    if origin is tuple:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            raise ConfigError(f"{where} must be a list, e.g. [{value}], got the single value {value!r}")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        (elem,) = typing.get_args(tp)[:1]
        return tuple(_coerce(elem, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): (_coerce(vt, v, f"{where}.{k}") if vt is not Any else v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{where} is too large a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        if "\x00" in value:
            raise ConfigError(f"{where} must not contain a NUL character")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        place = f"in {where} " if where else ""
        close = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown key {unknown[0]!r} {place}({hint}valid keys: {', '.join(names)})")
    kwargs = {}
    for k, v in data.items():
        kwargs[k] = _coerce(hints[k], v, f"{where}.{k}" if where else k)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, ArithmeticError) as e:  # e.g. unhashable choices, huge integers
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def upgrade_keys(data: dict, warn: bool = True) -> dict:
    """``data`` with renamed keys (:data:`RENAMED_KEYS`) under their new names; each old name found is
    one deprecation line on the ``gped_search`` logger (``warn``), both names at once an error."""
    out = dict(data)
    for section, names in RENAMED_KEYS.items():
        sec = out.get(section)
        if not isinstance(sec, dict) or not any(k in sec for k in names):
            continue
        sec = dict(sec)
        for old, new in names.items():
            if old not in sec:
                continue
            if new in sec:
                raise ConfigError(f"{section}.{old} is the old name of {section}.{new}: give only {section}.{new}")
            sec[new] = sec.pop(old)
            if warn:
                log.warning("%s.%s is deprecated: it is now %s.%s", section, old, section, new)
        out[section] = sec
    return out


def study_from_dict(data: dict | None) -> StudyConfig:
    """Build and validate a :class:`StudyConfig` from a plain mapping (old key names upgraded)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a study file must be a mapping at the top level, got {type(data).__name__}")
    return _from_dict(StudyConfig, upgrade_keys(data))


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict:
    """Turn ``["a.b=3", "c=x"]`` into a nested dict, values parsed as YAML scalars/lists."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key.sub=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.load(raw, Loader=_Loader) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {pair!r}: cannot parse value ({e.__class__.__name__})") from e
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def _merge(base: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """``--set`` overrides applied in order: ``search.space.X=...`` merges into the space (``=null`` removes
    X), while ``search.space={...}`` (the whole mapping) replaces it."""
    out = base
    for o in overrides:
        extra = parse_overrides([o])
        if o.split("=", 1)[0].strip() == "search.space":
            search = dict(out.get("search") or {})
            search["space"] = extra["search"]["space"]
            out = {**out, "search": search}
        else:
            out = merge(out, extra, whole=())
    return out


def report_base(study_file: str | os.PathLike, report_dir: str, name: str) -> Path:
    """Where a study file's relative ``report_dir`` starts: the nearest folder at or above the study
    file's folder that holds the study folder ``<report_dir>/<name>``, else the nearest one holding
    ``<report_dir>``, else the current directory. So ``run studies/x.yaml`` from the project root and
    ``status /abs/project/studies/x.yaml`` from anywhere find the same folder (a path given with
    ``--set report_dir=...`` is relative to the current directory, as every command-line path)."""
    here = Path(study_file).resolve().parent
    ancestors = [here, *here.parents]
    for want in (Path(report_dir) / name, Path(report_dir)):
        for a in ancestors:
            if (a / want).is_dir():
                return a
    return Path.cwd()


def _resolve_report_dir(cfg: StudyConfig, path: Path, overrides) -> StudyConfig:
    if Path(cfg.report_dir).is_absolute() or "report_dir" in parse_overrides(overrides):
        return cfg
    base = report_base(path, cfg.report_dir, cfg.name)
    with contextlib.suppress(OSError):
        if base.samefile(Path.cwd()):
            return cfg  # the usual case: run from the project root; report_dir stays as written
    return dataclasses.replace(cfg, report_dir=str(base / cfg.report_dir))


def load_study(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read a YAML study file, apply ``--set`` overrides, validate. Errors are :class:`ConfigError`.

    A relative ``report_dir`` in the file is resolved by :func:`report_base` (the study folder is found
    from the study file, whatever the current directory)."""
    return _resolve_report_dir(_load_study(path, overrides), Path(path), overrides)


def _upgrade_override(pair: str) -> str:
    """``--set section.old=...`` of a renamed key as ``section.new=...``, with its deprecation line."""
    key, sep, raw = pair.partition("=")
    parts = key.strip().split(".")
    new = RENAMED_KEYS.get(parts[0], {}).get(parts[1]) if len(parts) >= 2 else None
    if new is None:
        return pair
    log.warning("%s.%s is deprecated: it is now %s.%s", parts[0], parts[1], parts[0], new)
    return ".".join([parts[0], new, *parts[2:]]) + sep + raw


def _load_study(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    p = Path(path)
    try:
        data = upgrade_keys(read_mapping(p, _Loader))  # old key names: one deprecation line each, here only
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    overrides = [_upgrade_override(o) for o in overrides]
    try:
        base = study_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    if not overrides:
        return base
    try:
        return study_from_dict(_merge(data, overrides))
    except ConfigError as e:
        # the file alone is valid: name the override that breaks it (one that fails alone with the same
        # error; another may fail alone only because a later override mends it, as iterations and burn_in)
        for o in overrides:
            try:
                study_from_dict(_merge(data, [o]))
            except ConfigError as e1:
                if str(e1) == str(e):
                    raise ConfigError(f"--set {o}: {e1}") from None
        raise ConfigError(f"--set {' '.join(overrides)}: {e}") from None
