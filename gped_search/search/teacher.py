"""The study's teacher: sampled once per study (resumed, extended), shared by every trial and worker."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from gped_search.config import StudyConfig, chain_settings, settings_digest, to_dict
from gped_search.engine import Prepared, sample_teacher
from gped_search.files import file_lock
from gped_search.posterior.artifact import ArtifactError, load_teacher, save_teacher
from gped_search.posterior.chain_checkpoint import CHAIN_DIR
from gped_search.posterior.result import TeacherResult

log = logging.getLogger(__name__)

__all__ = ["TEACHER_FILE", "CHAIN_DIR", "teacher_key", "teacher_stamp", "find_teacher", "ensure_teacher"]

TEACHER_FILE = "teacher.pt"


def teacher_key(cfg: StudyConfig) -> str:
    """Digest of every setting the teacher chain depends on, except its length.

    A teacher is identified by (key, iterations): a longer run of the same chain has the same key,
    and a chain is extended by raising ``teacher.iterations``. How the step runs (``cuda_graph``)
    and how often it is checked or checkpointed do not change the posterior it samples.
    """
    d = chain_settings(cfg)
    return settings_digest(
        {
            "seed": cfg.seed,
            "data": d["data"],
            "teacher": d["teacher"],
            "targets": d["distill"]["targets"],
            "temperature": d["distill"]["temperature"],
        }
    )


def teacher_stamp(cfg: StudyConfig) -> str:
    """What a teacher artifact's ``.key`` sidecar says: its key and length, ``"<key> <iterations>"``."""
    return f"{teacher_key(cfg)} {cfg.teacher.iterations}"


def find_teacher(report_dir: Path, stamp: str, exclude: Path | None = None) -> Path | None:
    """A teacher artifact whose sidecar says ``stamp`` (:func:`teacher_stamp`), with its checksum beside
    it, in a study folder of ``report_dir`` other than ``exclude``; None if there is none."""
    for sidecar in sorted(Path(report_dir).glob(f"*/{TEACHER_FILE}.key")):
        other = sidecar.with_name(TEACHER_FILE)
        if sidecar.parent == exclude or not other.is_file() or not other.with_name(TEACHER_FILE + ".sha256").is_file():
            continue
        with contextlib.suppress(OSError):
            if sidecar.read_text().strip() == stamp:
                return other
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (artifacts are never modified in place: they are replaced), else copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def ensure_teacher(
    p: Prepared, artifact_dir: Path, progress: bool = True, restart: bool = False
) -> tuple[TeacherResult, dict]:
    """Load the study's teacher artifact, or sample (resume, extend) and store it, one process at a time.

    A study whose folder has no artifact yet first looks for one with the same teacher key and
    length (same seed, data, teacher and target settings) in the other study folders of its report
    folder, e.g. the grid baseline next to the search, and copies it (checked against its SHA-256)
    instead of sampling the same chain again. Otherwise the chain is sampled with checkpoints in
    ``teacher.chain/``: a worker that died mid-chain left its lock to the OS, and the next one
    resumes from the newest checkpoint. An artifact shorter than ``teacher.iterations`` is extended
    from its chain's final state; ``restart`` discards the chain checkpoints first.
    """
    path = artifact_dir / TEACHER_FILE
    key = teacher_key(p.cfg)
    want = p.cfg.teacher.iterations
    stamp = teacher_stamp(p.cfg)
    reused = extended = None
    with file_lock(artifact_dir / (TEACHER_FILE + ".lock")):
        if not path.exists():
            src = find_teacher(artifact_dir.parent, stamp, exclude=artifact_dir)
            if src is not None:
                for suffix in ("", ".sha256"):
                    _link_or_copy(
                        src.with_name(TEACHER_FILE + suffix),
                        artifact_dir / (TEACHER_FILE + ".part" + suffix),
                    )
                # the checksum first, then the artifact: a crash leaves no artifact without its checksum
                os.replace(
                    artifact_dir / (TEACHER_FILE + ".part.sha256"),
                    path.with_name(TEACHER_FILE + ".sha256"),
                )
                os.replace(artifact_dir / (TEACHER_FILE + ".part"), path)
                reused = str(src)
        sampled = False
        teacher = None
        if path.exists():
            teacher = load_teacher(path, p.device)
            made, its = teacher.stats.get("teacher_key"), int(teacher.stats.get("iterations", 0))
            if made != key:
                raise ArtifactError(
                    f"{path}: made with other data/teacher settings (key {made} != {key}); "
                    f"use a new study name or delete the artifact"
                )
            if its > want:
                raise ArtifactError(
                    f"{path}: the teacher ran {its} iterations, more than teacher.iterations={want}; "
                    f"a chain can be extended, not shortened (set teacher.iterations >= {its})"
                )
            if its < want:
                extended, teacher = its, None
                log.info("teacher: extending the chain from %d to %d iterations", its, want)
        if teacher is None:
            teacher = sample_teacher(
                p,
                progress=progress,
                checkpoint_dir=artifact_dir / CHAIN_DIR,
                key=key,
                restart=restart,
            )
            teacher.stats["teacher_key"] = key
            if extended is not None:
                teacher.stats["extended_from"] = extended
            save_teacher(path, teacher, to_dict(p.cfg))
            sampled = True
        sidecar = path.with_name(TEACHER_FILE + ".key")  # lets sibling studies find this artifact
        if not sidecar.is_file() or sidecar.read_text().strip() != stamp:
            sidecar.write_text(stamp + "\n")
    info = {
        "teacher_artifact": str(path),
        "teacher_sha256": (path.parent / (path.name + ".sha256")).read_text().strip(),
        "teacher_sampled_here": sampled,
        "teacher_key": key,
        "teacher_iterations": int(teacher.stats["iterations"]),
        "teacher_copied_from": reused,
        "teacher_extended_from": extended,
    }
    if reused:
        log.info("teacher: reusing %s (same teacher settings)", reused)
    return teacher, info
