"""Verified exports kept in the study folder, so that exporting the same student again is a copy.

Most of ``gped-search export`` is importing ``torch`` and ``torch.export`` and tracing the student (about
4 of 6 s for the quickstart's knee on an idle 2-core machine). Every export of a trial is therefore also
kept in ``<study folder>/.export_cache/trial-NNNNN/``, with a manifest holding the digest of everything
the files are made from: the checkpoint's SHA-256, the card's metadata (study, trial, metrics), the
formats, the source of the ``gped_search`` package and the installed torch version. A later export with
the same digest, whose kept files still hash as recorded, copies those files instead of writing them
again: exporting is deterministic (the checkpoint, program and ONNX files come out byte for byte the
same), so the copy is what a new export would write and verify, and the verification figures are the
ones measured when the files were written. Only the card's ``created_utc`` is new. int8 exports
(``onnx-int8``, calibrated on data) are never kept. ``gped-search run`` exports the recommended (knee)
student into the cache when its study ends, so ``export --knee`` right after a run imports no torch.

Imports no torch: a hit costs reading and copying a few files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["CACHE_DIR", "ExportCache"]

CACHE_DIR = ".export_cache"
MANIFEST = "manifest.json"
KEEP = 8
"""Trials whose export is kept; the least recently used beyond this many are removed."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _code_digest() -> str:
    """The package's source and torch's version: a change to either makes every kept export stale."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for name in ("torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            h.update(f"{name} {version(name)}\n".encode())
        except PackageNotFoundError:
            h.update(f"{name} -\n".encode())
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class ExportCache:
    """The kept export of trial ``number`` of a study whose folder is ``study_dir``, for these inputs.

    ``copy_to(out)`` places the kept files in ``out`` and returns what :func:`export_student` would have
    returned (None when nothing current is kept); ``keep(result)`` keeps a finished export's files.
    """

    def __init__(self, study_dir: str | os.PathLike, number: int, checkpoint: Path, meta: dict, formats):
        self.root = Path(study_dir) / CACHE_DIR
        self.entry = self.root / f"trial-{int(number):05d}"
        self.formats = tuple(formats)
        self.usable = "onnx-int8" not in self.formats
        inputs = {
            "checkpoint": _sha256(Path(checkpoint)),
            "meta": meta,
            "formats": list(self.formats),
            "code": _code_digest() if self.usable else "",
        }
        self.key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()

    # ------------------------------------------------------------------ reading
    def _manifest(self) -> dict | None:
        if not self.usable:
            return None
        try:
            m = json.loads((self.entry / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(m, dict) or m.get("key") != self.key or not isinstance(m.get("files"), dict):
            return None
        for name, sha in m["files"].items():
            path = self.entry / name
            if not path.is_file() or _sha256(path) != sha:
                return None  # changed or lost on disk: export again
        return m

    def current(self) -> bool:
        """Whether a current copy is kept (its files unchanged on disk)."""
        return self._manifest() is not None

    def copy_to(self, out: str | os.PathLike) -> dict | None:
        """The kept export copied into ``out`` (as a fresh export: staged, then moved into place, an earlier
        export's other files removed), or None."""
        m = self._manifest()
        if m is None:
            return None
        from gped_search.export_place import move_into_place, write_card

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        card = dict(m["card"])
        card["created_utc"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        names = [*m["files"], "model_card.json", "model_card.md"]
        stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        try:
            for name in m["files"]:
                shutil.copyfile(self.entry / name, stage / name)
            write_card(stage, card)
            stale = move_into_place(stage, out, names, m["exporter_names"])
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(OSError):  # a read-only study folder still exports
            os.utime(self.entry / MANIFEST)  # recently used: kept longest
        res = dict(m["result"])
        res.update(
            out_dir=out,
            removed_stale=stale,
            card=card,
            files={k: out / v for k, v in m["result_files"].items()},
            from_cache=True,
            verified_utc=m["card"].get("created_utc"),
        )
        return res

    # ------------------------------------------------------------------ writing
    def keep(self, res: dict, exporter_names) -> None:
        """Keep the files of ``res`` (:func:`export_student`'s result) under this key; never fails the export."""
        if not self.usable:
            return
        try:
            self._keep(res, exporter_names)
        except OSError:
            shutil.rmtree(self.entry, ignore_errors=True)

    def _keep(self, res: dict, exporter_names) -> None:
        cards = {"card_json", "card_md"}
        files = {Path(p).name: _sha256(Path(p)) for k, p in res["files"].items() if k not in cards}
        self.root.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".keep-", dir=self.root))
        try:
            for k, p in res["files"].items():
                if k not in cards:
                    shutil.copyfile(p, stage / Path(p).name)
            manifest = {
                "key": self.key,
                "files": files,
                "exporter_names": sorted(exporter_names),
                "card": res["card"],
                "result_files": {k: Path(p).name for k, p in res["files"].items()},
                "result": {
                    k: res.get(k) for k in ("sha256", "verification", "dynamic_batch", "quantization") if k in res
                },
            }
            (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
            shutil.rmtree(self.entry, ignore_errors=True)
            os.replace(stage, self.entry)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self._trim()

    def _trim(self) -> None:
        entries = [p for p in self.root.glob("trial-*") if (p / MANIFEST).is_file()]
        entries.sort(key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)
