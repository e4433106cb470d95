"""Figures reused from the last report when nothing they are drawn from has changed.

Drawing is most of what ``gped-search report`` costs (about 3 of 5 s on the quickstart on an idle 2-core
machine). A report records, in ``.figures.json`` beside its PNGs, a digest of everything its figures are
drawn from (the trials table, objectives, highlights, compared studies, extras, the report code and the
plotting libraries' versions) and each PNG's SHA-256. The next report with the same digest reads a PNG back
instead of drawing it, provided the file on disk is still the one written; anything else is drawn again.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path

__all__ = ["FigureCache", "png_bytes", "inputs_digest"]

MANIFEST = ".figures.json"


def png_bytes(fig) -> bytes:
    """The figure as PNG (the report's resolution), closed afterwards."""
    import matplotlib

    matplotlib.use("Agg")  # never a window, whatever $DISPLAY says
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
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

    def render(self, name: str, make: Callable[[], object]) -> bytes:
        path = self.out / name
        sha = self.old.get(name)
        if sha is not None and path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == sha:
                self.files[name] = sha
                self.reused.append(name)
                return data
        data = png_bytes(make())
        self.files[name] = hashlib.sha256(data).hexdigest()
        return data

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"digest": self.digest, "files": dict(sorted(self.files.items()))}, indent=1)
        (self.out / MANIFEST).write_text(text + "\n")
