"""Running a search study: one shared teacher, many students, Pareto fronts.

``run_study`` opens (or resumes) the study named in the study file (:mod:`.storage`), makes sure the
teacher artifact exists (:mod:`.teacher`: sampled once per study, under a file lock, shared by every
trial and worker), and runs trials: sample an architecture -> build -> distil (group LASSO when
lambda_g > 0) -> prune -> fine-tune -> evaluate quality and cost. Objectives are returned to Optuna,
every scalar metric is a user attribute, constraints go through ``trial.set_constraint`` and the
student checkpoint is written to the study's artifact folder (and to Optuna's artifact store, so
optuna-dashboard lists it). Reading a finished study is :mod:`.results`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from gped_search.config import StudyConfig
from gped_search.config.space import parse_space
from gped_search.engine import prepare
from gped_search.seeds import resume_sampler_seed, search_seed
from gped_search.store import check_store, fetch_study_file

from .results import (
    CALIBRATION_ATTR,
    is_scalar,
    study_path,
    trials_frame,
)
from .samplers import make_sampler
from .settings_history import record_settings
from .storage import (
    StudyError,
    fail_dead_trials,
    open_study,
    optuna_quiet,
    storage_url,
)
from .teacher import TEACHER_FILE
from .teacher_store import ensure_shared_teacher
from .trial_lines import echo_trial
from .trials import (
    TrialFailed,
    finished,
    make_objective,
    optimize_batched,
    retry_interrupted,
)

__all__ = ["run_study", "calibrate_front"]


def _work(*args, **kwargs) -> None:
    """One worker: open the study, get the teacher, run trials until the study has ``n_trials``."""
    with optuna_quiet():
        _work_quiet(*args, **kwargs)


def _work_quiet(
    cfg: StudyConfig,
    url: str,
    n_trials: int | None,
    timeout: float | None,
    progress: bool,
    threads: int | None = None,
    teacher_progress: bool = True,
    worker: int = 0,
    restart: bool = False,
    announce: bool = False,
) -> None:
    if threads:
        torch.set_num_threads(threads)
    p = prepare(cfg)  # data first: a bad data root fails before a storage is created
    if teacher_progress:  # a sign of life before the teacher and the first trial
        _say_data(p.bundle)
    study = _open_reseeded(cfg, url, worker)
    artifact_dir = cfg.out_dir.resolve()
    teacher, info = ensure_shared_teacher(p, artifact_dir, url, progress=teacher_progress, restart=restart)
    if teacher_progress:
        how = "sampled" if info["teacher_sampled_here"] else "copied" if info["teacher_copied_from"] else "loaded"
        _say(f"teacher: {how} ({info['teacher_iterations']:,} SGLD iterations); {finished(study)} trials done before")
    _record_teacher(study, teacher, info, artifact_dir)
    fail_dead_trials(study)
    if worker == 0:
        retry_interrupted(study)  # a Ctrl-C'd trial's parameters run again (it stays FAIL, reason recorded)
    specs = parse_space(cfg.search.space)
    target = n_trials if n_trials is not None else cfg.search.n_trials
    remaining = None if target is None else max(0, target - finished(study))
    if remaining == 0:
        return
    timeout = timeout if timeout is not None else cfg.search.timeout
    setup = (p, teacher, artifact_dir, specs)
    if cfg.search.batch > 1 or cfg.search.strategy.value != "trials":
        _run_batched(study, cfg, setup, target, timeout, progress, announce)
    else:
        _run_one_by_one(study, cfg, setup, target, remaining, timeout, progress, announce)


def _say_data(b) -> None:
    """The data line: the dataset's name and the sizes of its splits."""
    val = f", {len(b.val):,} validation" if b.val is not None else ""
    _say(f"data: {b.name}, {len(b.transfer):,} transfer{val}, {len(b.test):,} test images")


def _open_reseeded(cfg: StudyConfig, url: str, worker: int) -> optuna.Study:
    """Open the study; a resumed study or a sibling worker gets a sampler seeded apart from the first run's."""
    study = open_study(cfg, url)
    n_before = len(study.get_trials(deepcopy=False))
    if n_before or worker:
        # A sampler seeded like the first run's (or a sibling worker's) would repeat its parameters.
        seed = resume_sampler_seed(search_seed(cfg), n_before, worker)
        study.sampler = make_sampler(cfg, parse_space(cfg.search.space), seed=seed)
    return study


def _record_teacher(study: optuna.Study, teacher, info: dict, artifact_dir: Path) -> None:
    """Record the teacher (artifact, sha256, metrics) and what the learning curves are on the study."""
    if (
        "teacher_artifact" not in study.user_attrs
        or info["teacher_sampled_here"]
        or study.user_attrs.get("teacher_sha256") != info["teacher_sha256"]
    ):
        study.set_user_attr("teacher_artifact", Path(info["teacher_artifact"]).relative_to(artifact_dir).as_posix())
        study.set_user_attr("teacher_sha256", info["teacher_sha256"])
        study.set_user_attr("teacher", {k: v for k, v in {**teacher.metrics, **teacher.stats}.items() if is_scalar(v)})
        if info["teacher_copied_from"]:
            study.set_user_attr("teacher_copied_from", info["teacher_copied_from"])
    if "intermediate_values" not in study.user_attrs:  # what optuna-dashboard's learning-curve plot shows
        study.set_user_attr(
            "intermediate_values",
            "each trial's distillation loss (its learning curve) at about 20 points; x = student step",
        )


def _run_batched(study, cfg: StudyConfig, setup: tuple, target, timeout, progress: bool, announce: bool) -> None:
    """Batch, halving or supernet mode: :func:`optimize_batched` (a supernet trained first)."""
    p, teacher, artifact_dir, specs = setup
    batch, nets = cfg.search.batch, None
    if cfg.search.strategy.value == "supernet":
        from .supernet_run import prepare_supernet

        nets = prepare_supernet(study, p, teacher, artifact_dir, specs, budget=target or batch, progress=progress)
    kwargs = {"n_trials": target, "batch": batch, "progress": progress, "timeout": timeout, "announce": announce}
    optimize_batched(study, cfg, p, teacher, artifact_dir, specs, **kwargs, nets=nets)


def _run_one_by_one(study, cfg: StudyConfig, setup: tuple, target, remaining, timeout, progress, announce) -> None:
    """One trial at a time in ``study.optimize``, with a progress bar and a line per trial when asked."""
    p, teacher, artifact_dir, specs = setup
    callbacks = (
        [optuna.study.MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.PRUNED))]
        if target is not None
        else []
    )
    if announce:
        callbacks.append(lambda st, t: echo_trial(st, t.number))
    bar = None
    if progress and remaining is not None:  # labelled; each trial's steps and live loss show beneath it
        from tqdm.auto import tqdm

        bar = tqdm(total=remaining, desc=f"trials ({finished(study)} done before)", unit="trial")
        callbacks.append(lambda st, t: bar.update(1))
    try:
        study.optimize(
            make_objective(cfg, p, teacher, artifact_dir, specs, progress=progress),
            n_trials=remaining,
            timeout=timeout,
            catch=(TrialFailed,),
            callbacks=callbacks,
            gc_after_trial=True,
        )
    finally:
        if bar is not None:
            bar.close()


def _say(line: str) -> None:
    """One progress line on stderr (beside the bars), only when progress is shown."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def _worker_main(
    cfg: StudyConfig,
    url: str,
    n_trials: int | None,
    timeout: float | None,
    threads: int,
    worker: int = 0,
    announce: bool = False,
) -> None:
    _work(
        cfg,
        url,
        n_trials,
        timeout,
        progress=False,
        threads=threads,
        teacher_progress=False,
        worker=worker,
        announce=announce,
    )


def run_study(
    cfg: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    restart: bool = False,
    announce: bool = False,
) -> optuna.Study:
    """Run (or resume) the study until it has ``n_trials`` finished trials or ``timeout`` passes.

    ``n_trials`` counts COMPLETE trials in the whole study, so re-running the same command after an
    interruption only adds the missing ones. With ``workers > 1`` the teacher is sampled first, then
    ``workers`` processes share the storage (they may finish up to ``workers - 1`` extra trials,
    ``(workers - 1) * search.batch`` in batch mode). ``threads``: torch intra-op threads per process
    (default: torch's own for one process, the CPU count divided by ``workers`` for several).
    The teacher chain resumes from its checkpoints (``restart`` discards them) and is extended when
    ``teacher.iterations`` grows; each trial records the teacher (key, iterations) it was trained against.
    ``announce`` prints one line per finished trial. A first run that fails before any trial (bad data
    root, unreachable storage) leaves no report folder behind.
    """
    created = not cfg.out_dir.exists()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_study(cfg, n_trials, timeout, workers, storage, progress, threads, restart, announce)
    except BaseException:
        if created:
            _remove_if_unused(cfg.out_dir)
        raise


_SCAFFOLD = {"study.yaml", TEACHER_FILE + ".lock"}


def _remove_if_unused(folder: Path) -> None:
    """Remove a report folder this run created if it holds nothing but the run's scaffolding."""
    with contextlib.suppress(OSError):
        if {f.name for f in folder.iterdir()} <= _SCAFFOLD:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()


def check_strategy(cfg: StudyConfig, workers: int = 1) -> None:
    """One line, before any work, for settings ``search.strategy`` cannot run with."""
    strategy = cfg.search.strategy.value
    if strategy == "trials":
        return
    from gped_search.errors import ConfigError
    from gped_search.metrics.interim import check_objectives

    check_objectives(list(cfg.search.objectives), strategy)
    if strategy == "halving":
        from .halving import bracket_size, rung_plan

        rung_plan(cfg, bracket_size(cfg, cfg.search.n_trials))
        return
    from gped_search.supernet.space import ArchSpace

    if workers > 1:
        raise StudyError("search.strategy supernet runs in one worker process: use --workers 1")
    if cfg.search.sampler == "grid":
        raise ConfigError(
            "search.sampler: grid cannot run with search.strategy supernet, which chooses the architectures "
            "itself (use tpe, random, qmc or gp for the other parameters)"
        )
    if cfg.distill.derivative_weight > 0:
        raise ConfigError("distill.derivative_weight: search.strategy supernet distils without derivative matching")
    ArchSpace(cfg, parse_space(cfg.search.space))  # a space with nothing to slice


def _run_study(
    cfg: StudyConfig, n_trials, timeout, workers, storage, progress, threads, restart, announce
) -> optuna.Study:
    if not os.access(cfg.out_dir, os.W_OK):
        raise StudyError(f"report folder {cfg.out_dir} is not writable")
    check_strategy(cfg, workers)
    url = storage_url(cfg, storage, workers)
    check_store(cfg, write=True)  # a wrong bucket, no credentials (or read-only ones), no endpoint: one line, first
    if url.startswith("sqlite") and workers > 1:
        raise StudyError(
            "SQLite is not for parallel writers: use --workers with the default (a journal file) "
            "or a PostgreSQL/MySQL URL"
        )
    record_settings(cfg)
    if workers <= 1:
        _work(
            cfg,
            url,
            n_trials,
            timeout,
            progress,
            threads=threads,
            teacher_progress=progress,
            restart=restart,
            announce=announce,
        )
        study = open_study(cfg, url, create=False)
        calibrate_front(study, cfg)
        return study
    # Teacher first, in this process, so workers never race for it (data first: see _work).
    p = prepare(cfg)
    open_study(cfg, url)
    ensure_shared_teacher(p, cfg.out_dir.resolve(), url, progress=progress, restart=restart)
    ctx = multiprocessing.get_context("spawn")
    if threads:
        torch.set_num_threads(threads)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(cfg, url, n_trials, timeout, threads, i, announce),
            daemon=False,
        )
        for i in range(workers)
    ]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    bad = [pr.exitcode for pr in procs if pr.exitcode != 0]
    if bad:
        raise StudyError(
            f"{len(bad)} of {workers} workers exited with an error (codes {bad}); "
            f"the study's records are intact: re-run the command to resume"
        )
    study = open_study(cfg, url, create=False)
    calibrate_front(study, cfg)
    return study


def calibrate_front(study: optuna.Study, cfg: StudyConfig, rounds: int = 10) -> dict:
    """Re-measure the latency of the front's students together, in one calibration pass.

    Trial-time latencies were measured minutes apart under whatever else the machine was doing;
    here the front candidates (the front under the trial-time figures) are timed in interleaved,
    shuffled rounds (:func:`~gped_search.metrics.cost.calibrate_latency`). The result is stored as
    the study attribute ``latency_calibration`` (trial number -> [median, p10, p90] ms over rounds);
    :func:`trials_frame` then reports those figures as ``latency_ms``/``latency_p10_ms``/
    ``latency_p90_ms`` (the trial-time figure stays as ``latency_trial_ms``), and fronts treat latency
    differences inside the p10..p90 spread as ties. Only when latency is an objective.
    """
    if "latency_ms" not in study.user_attrs.get("objectives", []):
        return {}
    from gped_search.checkpoints import load_checkpoint
    from gped_search.metrics.cost import calibrate_latency

    df = trials_frame(study, calibrated=False)
    front = df[df["on_front"]] if "on_front" in df else df.iloc[:0]
    models, shape, precision = {}, None, {}
    for _, row in front.iterrows():
        ckpt = fetch_study_file(cfg, row.get("checkpoint"), study_path(cfg.out_dir, row.get("checkpoint")))
        if ckpt is None or not ckpt.is_file():
            continue
        model, _ = load_checkpoint(ckpt)
        models[int(row["number"])] = model
        shape = model.arch.in_shape
        precision[int(row["number"])] = str(row.get("precision", "fp32"))
    if len(models) < 2:
        return {}
    device = str(row.get("latency_device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    with tempfile.TemporaryDirectory(prefix="gped-onnx-") as tmp:
        measure = None
        if "onnxruntime" in set(front.get("latency_backend", [])):  # timed as deployed: ONNX Runtime sessions
            from gped_search.quant.deploy import onnx_files
            from gped_search.quant.onnx import measure_latency_ort as measure

            models = onnx_files(models, precision, cfg, tmp)
        cal = calibrate_latency(
            models,
            shape,
            batch=cfg.search.latency_batch,
            device=device,
            threads=1 if device == "cpu" else None,
            rounds=rounds,
            measure=measure,
        )
    out = {str(n): [c["median_ms"], c["p10_ms"], c["p90_ms"]] for n, c in cal.items()}
    study.set_user_attr(CALIBRATION_ATTR, out)
    return out
