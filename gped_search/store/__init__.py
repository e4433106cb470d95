"""A study's files in an object store (``search.artifacts``), for workers that share no filesystem.

:mod:`.base` (the store interface, a folder store), :mod:`.urls` (``open_store``), :mod:`.s3` (S3-compatible stores
through boto3 / ``optuna.artifacts.Boto3ArtifactStore``), :mod:`.files` (checksummed objects and the
local cache), :mod:`.lease` (the teacher lease in the study's database) and :mod:`.chain_sync` (the
teacher chain's checkpoints). How the study's teacher uses them: :mod:`gped_search.search.teacher_store`.
"""

from gped_search.errors import StoreError

from .base import LocalStore, Store
from .files import fetch_study_file, get_file, publish_study_file, put_file, stored_sha256
from .urls import open_store, study_store

__all__ = [
    "StoreError",
    "Store",
    "LocalStore",
    "open_store",
    "study_store",
    "check_store",
    "get_file",
    "put_file",
    "stored_sha256",
    "fetch_study_file",
    "publish_study_file",
]


def check_store(cfg, write: bool = False) -> Store | None:
    """The study's store after a start-up check (one line naming what to set on failure); None without one.
    ``write``: also that these credentials may write and delete there (``run``)."""
    store = study_store(cfg)
    if store is not None:
        store.check(write=write)
    return store
