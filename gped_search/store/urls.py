"""A store from its URL (``search.artifacts``): ``s3://bucket/prefix`` or ``file:///folder``."""

from __future__ import annotations

from gped_search.errors import StoreError

from .base import LocalStore, Store
from .s3 import S3Store

__all__ = ["open_store", "study_store"]


def open_store(url: str) -> Store:
    """The store at ``s3://bucket/prefix`` (endpoint and credentials from the AWS environment) or ``file:///path``."""
    if url.startswith("file://"):
        path = url.removeprefix("file://")
        if not path.startswith("/"):
            raise StoreError(f"search.artifacts {url}: give an absolute folder, file:///path/to/folder")
        return LocalStore(path)
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise StoreError(f"search.artifacts {url}: no bucket; give s3://BUCKET/prefix")
        return S3Store(bucket, prefix.strip("/"))
    raise StoreError(f"search.artifacts {url}: give s3://bucket/prefix or file:///folder")


def study_store(cfg) -> Store | None:
    """The study's part of its object store (keys under the study's name), or None without ``search.artifacts``."""
    url = getattr(cfg.search, "artifacts", None)
    return open_store(url).child(cfg.name) if url else None
