"""Figures reused from the last report when nothing they are drawn from has changed.

Drawing is most of what ``gped-search report`` costs (about 3 of 5 s on the quickstart on an idle 2-core
machine). A report records, in ``.figures.json`` beside its PNGs, a digest of everything its figures are
drawn from (the trials table, objectives, highlights, compared studies, extras, the report code and the
plotting libraries' versions) and each PNG's SHA-256. The next report with the same digest reads a PNG back
instead of drawing it, provided the file on disk is still the one written; anything else is drawn again.

The figures still to draw are drawn on two processes where two cores are free (:meth:`FigureCache.prefetch`:
one forked child draws about half and pipes the PNGs back); ``GPED_REPORT_WORKERS=1`` draws them all here.
A figure is the same bytes whichever process draws it, and any failure of the child is made up by drawing
its figures here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["FigureCache", "png_bytes", "inputs_digest", "workers", "draw_in_two"]

MANIFEST = ".figures.json"
_PNG = b"\x89PNG\r\n\x1a\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # never a window, whatever $DISPLAY says
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG (the report's resolution), closed afterwards. Whole, not cropped
    (``bbox_inches="tight"`` would draw it twice): the figures' constrained layout keeps them inside."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def _code_digest() -> str:
    from importlib.metadata import version  # not matplotlib itself: a report that draws nothing never imports it

    h = hashlib.sha256(" ".join(version(p) for p in ("matplotlib", "pandas", "numpy")).encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):  # the report package draws every figure
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def inputs_digest(*inputs) -> str:
    """SHA-256 over the pickled inputs and the report code: equal digests draw equal figures."""
    h = hashlib.sha256(_code_digest().encode())
    h.update(pickle.dumps(inputs, protocol=pickle.HIGHEST_PROTOCOL))
    return h.hexdigest()


class FigureCache:
    """``render(name, make)``: the PNG bytes of figure ``name``, read back when current, else ``make()``'s."""

    def __init__(self, out: Path, digest: str):
        self.out, self.digest = Path(out), digest
        try:
            old = json.loads((self.out / MANIFEST).read_text())
        except (OSError, ValueError):
            old = {}
        ok = isinstance(old, dict) and old.get("digest") == digest and isinstance(old.get("files"), dict)
        self.old: dict[str, str] = old["files"] if ok else {}
        self.files: dict[str, str] = {}
        self.reused: list[str] = []
        self.drawn: dict[str, bytes] = {}  # by prefetch, not yet rendered

    def _current(self, name: str) -> bytes | None:
        """The last report's PNG of ``name`` when it is still the one written for these inputs."""
        path, sha = self.out / name, self.old.get(name)
        if sha is not None and path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == sha:
                return data
        return None

    def render(self, name: str, make: Callable[[], object]) -> bytes:
        data = self.drawn.pop(name, None)
        if data is None and (data := self._current(name)) is not None:
            self.reused.append(name)
        elif data is None:
            data = png_bytes(make())
        self.files[name] = hashlib.sha256(data).hexdigest()
        return data

    def prefetch(self, jobs: Sequence[tuple[str, Callable[[], object]]]) -> None:
        """Draw the figures of ``jobs`` (``(name, make)``, as :meth:`render` takes them) that are not
        current, on two processes when :func:`workers` allows; :meth:`render` then returns them. Fewer than
        two to draw, or one worker: nothing happens here and :meth:`render` draws each in turn."""
        todo = [(n, m) for n, m in dict(jobs).items() if n not in self.drawn and self._current(n) is None]
        if len(todo) >= 2 and workers() >= 2:
            self.drawn.update(draw_in_two(todo))

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"digest": self.digest, "files": dict(sorted(self.files.items()))}, indent=1)
        (self.out / MANIFEST).write_text(text + "\n")


CHILD_TIMEOUT_S = 120.0
"""How long the parent waits for the child's figures before it kills the child and draws them itself."""


def workers() -> int:
    """Processes to draw figures on: 2 where fork exists, two cores are ours and this process runs one
    thread (forking beside other threads risks a lock held in the child); ``GPED_REPORT_WORKERS=1``: 1."""
    try:
        wanted = int(os.environ.get("GPED_REPORT_WORKERS", "").strip() or 2)
    except ValueError:
        wanted = 2
    if wanted < 2 or not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"):
        return 1
    return 2 if len(os.sched_getaffinity(0)) >= 2 and threading.active_count() == 1 else 1


def _cost(name: str) -> int:
    """A figure's drawing time in units of a plain one (durations, parallel coordinates, hypervolume), as
    measured on the quickstart: a Pareto pair (labels placed by a draw of their own) 3, the one coloured by
    lambda_g (a colour bar besides) 5, the learning curves 2."""
    if name.startswith("pareto_"):
        return 5 if name.endswith("_lambda.png") else 3
    return 2 if name.startswith("learning_curves") else 1


def _halves(jobs):
    """The jobs in two halves of about equal cost (longest first, each to the lighter half)."""
    halves, loads = ([], []), [0, 0]
    for job in sorted(jobs, key=lambda j: -_cost(j[0])):
        i = int(loads[1] < loads[0])
        halves[i].append(job)
        loads[i] += _cost(job[0])
    return halves


def draw_in_two(jobs: Sequence[tuple[str, Callable[[], object]]]) -> dict[str, bytes]:
    """``{name: PNG bytes}`` for every job: a forked child draws about half and pipes them back while this
    process draws the rest; whatever the child does not deliver (it failed, died, or could not start) is
    drawn here afterwards."""
    _pyplot()  # imported once, before the fork, not by each process on its own
    theirs, mine = _halves(jobs)
    got = _fork_and_draw(theirs, mine)
    for name, make in jobs:
        if name not in got:
            got[name] = png_bytes(make())
    return got


def _fork_and_draw(theirs, mine) -> dict[str, bytes]:
    """``mine`` drawn here and ``theirs`` by a forked child, as far as the child delivered them."""
    try:
        r, w = os.pipe()
    except OSError:
        return {}
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns of any fork beside BLAS's threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:  # no process to spare: all drawn here
        os.close(r)
        os.close(w)
        return {}
    if pid == 0:
        _child(r, w, theirs)
    os.close(w)
    try:
        got = {name: png_bytes(make()) for name, make in mine}
        data = _read_all(r, pid, CHILD_TIMEOUT_S)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # this process failed: its error is the report's, not the child's
        raise
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        got.update(_received(data, theirs))
    return got


def _read_all(fd: int, pid: int, timeout: float) -> bytes:
    """Everything the child writes before it closes the pipe; a child silent for ``timeout`` seconds (stuck,
    say on a lock it inherited) is killed and its figures are drawn here instead."""
    import select
    import time

    chunks, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            return b""
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _child(r: int, w: int, jobs) -> NoReturn:
    """The forked child: draw ``jobs``, pickle ``{name: PNG bytes}`` into the pipe, exit 0; any error: 1."""
    code = 1
    try:
        os.close(r)
        data = pickle.dumps({name: png_bytes(make()) for name, make in jobs}, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(w, "wb") as pipe:
            pipe.write(data)
        code = 0
    finally:
        os._exit(code)  # never the parent's cleanup (atexit, buffered output, the test runner)


def _received(data: bytes, jobs) -> dict[str, bytes]:
    """The child's PNGs of ``jobs``; nothing when the pipe held less than a whole message."""
    try:
        sent = pickle.loads(data)
    except Exception:
        return {}
    names = {name for name, _ in jobs}
    if not isinstance(sent, dict):
        return {}
    return {n: b for n, b in sent.items() if n in names and isinstance(b, bytes) and b.startswith(_PNG)}
