"""Property tests over bad input: study files, ``--set`` overrides, student checkpoints, teacher artifacts.

Study files are mutations of a valid tiny study (wrong types, unknown keys, out-of-range and
non-finite numbers, huge integers, empty search spaces and choice lists, nonsense objectives, sections
that are not mappings), random text and random bytes. ``load_study`` must either accept the file or
raise :class:`ConfigError`, nothing else; for every rejected file ``gped-search status|run`` prints
exactly one line to stderr and returns 2, and ``run`` never gets as far as the study runner.

Checkpoints and teacher artifacts are random bytes, truncated valid files, foreign dicts saved with
``torch.save``, and pickles whose ``__reduce__`` would create a marker file: the loaders raise only
their own error type, the marker is never created, and ``gped-search evaluate`` returns 2 with one line.

Run with ``pytest -s`` to see how many inputs each property tried; ``GPED_FUZZ_EXAMPLES=2000``
for a deeper run (default 200 per property, no example database is written).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import os
import pickle
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import study_dict

from gped_search.checkpoints import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from gped_search.cli import main
from gped_search.config import ConfigError, load_study
from gped_search.files import sha256_of
from gped_search.models import mlp_arch
from gped_search.models.nets import build
from gped_search.posterior import artifact
from gped_search.posterior.artifact import ArtifactError, load_teacher, save_teacher

EXAMPLES = int(os.environ.get("GPED_FUZZ_EXAMPLES", "200"))  # raise it for a deeper local run
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _cli(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; stderr includes the warnings a fresh process would print."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", quiet)
        rc = main(argv)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return rc, out.getvalue(), err.getvalue() + shown


def _one_clean_line(rc: int, out: str, err: str) -> bool:
    return rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("gped-search: error: ") \
        and len(err.strip()) > len("gped-search: error:")


# --------------------------------------------------------------------------- study files

JUNK = st.one_of(
    st.none(), st.booleans(),
    st.integers(-10**6, 10**6),
    st.integers(2**1024, 2**1100),  # too large for a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "-1", "1e999", ".nan", "yes", "null", "..", "a/b", "mlp", "cnn", "tpe", "grid",
                     "minimize", "maximize", "predictive", "kl", "\x00", "cuda:x"]),
    st.lists(st.one_of(st.integers(-3, 300), st.text(max_size=4), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-3, 3), st.text(max_size=3)), max_size=2),
)
BASE = study_dict("fuzz", Path(tempfile.gettempdir()) / "gped-fuzz-never-written")
BASE["search"]["constraints"] = {"params": 5000}
LEAVES = [(sec, key) for sec, v in BASE.items() if isinstance(v, dict) for key in v] + \
    [(k, None) for k, v in BASE.items() if not isinstance(v, dict)] + \
    [("search.space", k) for k in BASE["search"]["space"]] + \
    [("search.objectives", k) for k in BASE["search"]["objectives"]] + \
    [("search.constraints", "params")]
PARAMS = ["family", "mlp_depth", "mlp_width", "m1", "m2", "lambda_g", "rule", "tau", "ratio", "lr", "dropout"]


def _node(d: dict, dotted: str) -> dict:
    for part in dotted.split("."):
        d = d[part]
    return d


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["leaf", "unknown key", "empty space", "bad range", "objectives", "section",
                                 "space value", "sampler grid"]))
    if kind == "leaf":
        sec, key = draw(st.sampled_from(LEAVES))
        return kind, (sec, key, draw(JUNK))
    if kind == "unknown key":
        where = draw(st.sampled_from([None, "data", "teacher", "student", "distill", "prune", "search",
                                      "search.space"]))
        return kind, (where, draw(st.text(min_size=1, max_size=10)), draw(JUNK))
    if kind == "empty space":
        return kind, (draw(st.sampled_from(PARAMS)), draw(st.sampled_from([[], {}, {"values": []}, {"low": 1},
                                                                          {"high": 2}, None])))
    if kind == "bad range":
        lo, hi = draw(JUNK), draw(JUNK)
        extra = draw(st.dictionaries(st.sampled_from(["log", "step", "shared", "values", "bogus"]), JUNK, max_size=2))
        return kind, (draw(st.sampled_from(PARAMS)), {"low": lo, "high": hi, **extra})
    if kind == "objectives":
        return kind, draw(st.one_of(
            st.dictionaries(st.text(max_size=10), st.one_of(st.sampled_from(["minimize", "maximize"]), JUNK),
                            max_size=3),
            JUNK))
    if kind == "section":
        return kind, (draw(st.sampled_from(["data", "teacher", "student", "distill", "prune", "search"])),
                      draw(JUNK))
    if kind == "space value":
        return kind, (draw(st.sampled_from(PARAMS)), draw(JUNK))
    return kind, draw(st.dictionaries(st.sampled_from(PARAMS), JUNK, max_size=2))


def _apply(data: dict, kind: str, arg) -> None:
    if kind == "leaf":
        sec, key, value = arg
        if key is None:
            data[sec] = value
        else:
            parent = _node(data, sec)
            parent[key] = value
    elif kind == "unknown key":
        where, key, value = arg
        (data if where is None else _node(data, where))[key] = value
    elif kind in ("empty space", "bad range", "space value"):
        name, value = arg
        data["search"]["space"][name] = value
    elif kind == "objectives":
        data["search"]["objectives"] = arg
    elif kind == "section":
        data[arg[0]] = arg[1]
    else:  # the grid sampler over a space of junk
        data["search"]["sampler"] = "grid"
        data["search"]["space"] = arg


@st.composite
def study_text(draw) -> tuple[str, bytes]:
    how = draw(st.sampled_from(["mutated"] * 6 + ["random text", "random bytes"]))
    if how == "random bytes":
        return how, draw(st.binary(max_size=400))
    if how == "random text":
        text = draw(st.text(alphabet=st.sampled_from(list("{}[]:,-?&*!|>'\"#%@` \n\tabcdefgh0123.\\")) | st.characters(),
                            max_size=200))
        return how, text.encode("utf-8", "surrogatepass")
    data = copy.deepcopy(BASE)
    for kind, arg in draw(st.lists(mutation(), min_size=1, max_size=3)):
        try:
            _apply(data, kind, arg)
        except (TypeError, KeyError):  # an earlier mutation replaced the section this one edits
            pass
    return how, yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")


OVERRIDES = st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["teacher.iterations", "search.space", "name", "data",
                                                        "search.objectives.kl", "teacher.widths", "x.y.z", "",
                                                        "teacher", "teacher.iterations.deeper"]),
              st.text(max_size=12)),
    st.text(max_size=15)), max_size=2)


def _heavy(*_a, **_k):
    raise AssertionError("the study runner was reached with a study file that failed validation")


def test_study_files_fail_cleanly():
    seen: Counter = Counter()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "study.yaml"

        @SETTINGS
        @given(study=study_text(), overrides=OVERRIDES, command=st.sampled_from(["status", "run"]))
        def prop(study, overrides, command):
            how, raw = study
            seen["tried"] += 1
            seen[f"tried:{how}"] += 1
            path.write_bytes(raw)
            try:
                load_study(path, overrides)
            except ConfigError as e:
                msg = str(e)
                assert msg and "\n" not in msg.strip(), msg
            else:
                seen["accepted (valid)"] += 1
                return
            argv = [command, str(path), *(f"--set={o}" for o in overrides)]
            if command == "run":
                argv += ["--no-progress", "--no-report"]
            with mock.patch("gped_search.search.run_study", _heavy), \
                    mock.patch("gped_search.search.study.run_study", _heavy):
                rc, out, err = _cli(argv)
            assert _one_clean_line(rc, out, err), (rc, out, err)
            seen["clean error"] += 1

        prop()
    print(f"\n[bad input] study files: {dict(seen)}")
    assert seen["clean error"] > seen["tried"] // 2


@pytest.mark.parametrize("text", [
    "name: x\nsearch: {space: &a {values: *a}}\n",       # a self-referencing space spec
    "data: &d {dataset: digits, ood: *d}\n",             # a self-referencing section
    "teacher: {widths: " + "[" * 300 + "]" * 300 + "}\n",  # deep nesting
    "teacher: {step_size: " + "9" * 400 + "}\n",          # an integer no float can hold
    "search: {space: {mlp_width: {low: 1, high: " + "9" * 400 + "}}}\n",
    "search: {space: {family: [[mlp], {a: 1}]}}\n",      # unhashable choices
    "? [a, b]\n: 1\n",                                   # a list as a key
    "\ufeffname: bom\n",
    "name: !!python/object/apply:os.system ['true']\n",  # a tag safe_load refuses
    "teacher: {widths: " + "[" * 5000 + "]" * 5000 + "}\n",  # nesting too deep for the YAML parser
    "teacher: {iterations: " + "9" * 5000 + "}\n",       # more digits than Python converts
    "search: {sampler: grid, space: {mlp_width: {low: 1, high: 1000000000000}}}\n",  # a grid no memory holds
    "search: {sampler: grid, space: {mlp_depth: {low: 1, high: 1000}, mlp_width: [4, 8]}}\n",
    "search: {space: {m1: {low: 0.5, high: .inf}}}\n",
    "teacher: {step_size: .inf}\n",
    "name: '..'\n",
    'report_dir: "a\\0b"\n',
    "\x1f",
])
def test_nasty_study_files(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    try:
        load_study(path)
    except ConfigError:
        pass
    else:
        return
    rc, out, err = _cli(["status", str(path)])
    assert _one_clean_line(rc, out, err), (rc, out, err)


# --------------------------------------------------------------------------- checkpoints and teacher artifacts

class _Evil:
    """Unpickling this would create the marker file (``open(marker, "w")``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _tiny_model():
    return build(mlp_arch((1, 8, 8), 10, (3,), heads=(("predictive", 0), ("expected_entropy", 1))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid student checkpoint (its bytes) and a valid teacher artifact (its bytes), tiny."""
    d = tmp_path_factory.mktemp("valid")
    ckpt = save_checkpoint(d / "student.pt", _tiny_model(), config=study_dict("fuzz", d), metrics={"kl": 0.1})
    from gped_search.distill.loop import TeacherResult

    model = _tiny_model()
    arch = mlp_arch((1, 8, 8), 10, (3,))
    teacher = TeacherResult(arch, {"predictive": torch.full((4, 10), 0.1)}, None, None,
                            {k: v[None] for k, v in model.state_dict().items()}, {"teacher_acc": 0.5})
    save_teacher(d / "teacher.pt", teacher, {"fuzz": True})
    load_checkpoint(ckpt)
    load_teacher(d / "teacher.pt")
    return {"ckpt": ckpt.read_bytes(), "teacher": (d / "teacher.pt").read_bytes()}


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


SMALL = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=6),
                  st.lists(st.integers(-3, 3), max_size=3))
FOREIGN = st.dictionaries(
    st.one_of(st.sampled_from(["format", "version", "arch", "state_dict", "config", "test", "bank", "metrics",
                               "stats", "ood", "transfer", "family", "hidden"]), st.text(max_size=6)),
    st.recursive(SMALL, lambda c: st.dictionaries(st.text(max_size=6), c, max_size=3) | st.lists(c, max_size=3),
                 max_leaves=6),
    max_size=6)


@st.composite
def bad_file(draw, valid: bytes, fmt: str):
    kind = draw(st.sampled_from(["random bytes", "truncated", "foreign dict", "ours but broken", "evil"]))
    if kind == "random bytes":
        return kind, draw(st.binary(max_size=600)), None
    if kind == "truncated":
        return kind, valid[: draw(st.integers(0, len(valid) - 1))], None
    if kind == "foreign dict":
        return kind, _torch_bytes(draw(FOREIGN)), None
    if kind == "ours but broken":  # the right format tag, the rest missing or junk
        d = draw(FOREIGN)
        d.update({"format": fmt, "version": draw(st.sampled_from([1, 1, 2, "1", None]))})
        return kind, _torch_bytes(d), None
    marker = str(Path(tempfile.gettempdir()) / f"gped-fuzz-marker-{draw(st.integers(0, 10**9))}")
    evil = _Evil(marker)
    payload = draw(st.sampled_from(["raw pickle", "torch.save", "nested"]))
    if payload == "raw pickle":
        return kind, pickle.dumps(evil, protocol=draw(st.integers(0, pickle.HIGHEST_PROTOCOL))), marker
    if payload == "torch.save":
        return kind, _torch_bytes(evil), marker
    return kind, _torch_bytes({"format": fmt, "version": 1, "arch": evil, "state_dict": {"w": evil}}), marker


def test_evil_pickle_payload_is_live(tmp_path):
    """The payload used below does create its marker when unpickled without protection."""
    marker = tmp_path / "marker"
    f = pickle.loads(pickle.dumps(_Evil(str(marker))))
    f.close()
    assert marker.exists()


def test_bad_checkpoints_fail_cleanly(files):
    seen: Counter = Counter()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "student.pt"

        @SETTINGS
        @given(case=bad_file(files["ckpt"], FORMAT), cli=st.booleans())
        def prop(case, cli):
            kind, raw, marker = case
            seen["tried"] += 1
            seen[f"tried:{kind}"] += 1
            path.write_bytes(raw)
            with pytest.raises(CheckpointError) as e:
                load_checkpoint(path)
            assert str(path) in str(e.value)
            if cli:
                rc, out, err = _cli(["evaluate", str(path)])
                assert _one_clean_line(rc, out, err), (rc, out, err)
                seen["cli checked"] += 1
            if marker:
                assert not Path(marker).exists(), "unpickling ran code"
            seen["clean error"] += 1

        prop()
    print(f"\n[bad input] checkpoints: {dict(seen)}")
    assert seen["clean error"] == seen["tried"]


def test_bad_teacher_artifacts_fail_cleanly(files):
    seen: Counter = Counter()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "teacher.pt"

        @SETTINGS
        @given(case=bad_file(files["teacher"], artifact.FORMAT),
               checksum=st.sampled_from(["right", "wrong", "none", "garbage"]))
        def prop(case, checksum):
            kind, raw, marker = case
            seen["tried"] += 1
            seen[f"tried:{kind}"] += 1
            path.write_bytes(raw)
            side = path.with_name("teacher.pt.sha256")
            side.unlink(missing_ok=True)
            if checksum == "right":  # get past the checksum to the loader itself
                side.write_text(sha256_of(path) + "\n")
            elif checksum == "wrong":
                side.write_text("f" * 64 + "\n")
            elif checksum == "garbage":
                side.write_bytes(b"\xff\xfe\x00 not a digest")
            with pytest.raises(ArtifactError) as e:
                load_teacher(path)
            msg = str(e.value)
            assert str(path) in msg and "\n" not in msg
            if checksum in ("wrong", "garbage"):
                assert "checksum mismatch" in msg
            if marker:
                assert not Path(marker).exists(), "unpickling ran code"
            seen["clean error"] += 1

        prop()
    print(f"\n[bad input] teacher artifacts: {dict(seen)}")
    assert seen["clean error"] == seen["tried"]


@pytest.mark.parametrize("what", ["random bytes", "foreign dict", "evil"])
def test_evaluate_with_a_bad_teacher_is_one_line(files, tmp_path, what):
    ckpt = tmp_path / "student.pt"
    ckpt.write_bytes(files["ckpt"])
    bad = tmp_path / "teacher.pt"
    marker = tmp_path / "marker"
    raw = {"random bytes": b"\x80\x04garbage" * 10, "foreign dict": _torch_bytes({"format": artifact.FORMAT}),
           "evil": _torch_bytes(_Evil(str(marker)))}[what]
    bad.write_bytes(raw)
    (tmp_path / "teacher.pt.sha256").write_text(sha256_of(bad) + "\n")
    rc, out, err = _cli(["evaluate", str(ckpt), "--teacher", str(bad)])
    assert rc == 2 and err.count("\n") == 1 and err.startswith("gped-search: error: ") and "teacher.pt" in err, err
    assert not marker.exists()
