"""An S3-compatible object store (AWS S3, MinIO, Ceph, moto): ``s3://bucket/prefix``.

Objects are read, written and removed through ``optuna.artifacts.Boto3ArtifactStore`` (keys under the
prefix); listing and the start-up check use the same boto3 client. The endpoint, region and
credentials come only from boto3's default chain: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``),
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or ``AWS_PROFILE`` and
``~/.aws/``), instance roles. None of them is ever written anywhere by gped-search; messages name the
bucket, prefix and endpoint only.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from gped_search.errors import StoreError

from .base import Store

__all__ = ["S3Store"]

_CREDENTIALS = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws/credentials)"


def _client():
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StoreError("search.artifacts s3://...: boto3 is not installed; pip install 'gped-search[s3]'") from None
    cfg = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    try:
        return boto3.session.Session().client("s3", config=cfg)
    except Exception as e:  # a malformed AWS config file or endpoint URL
        raise StoreError(
            f"cannot set up the S3 client ({type(e).__name__}: {_first_line(e)}); check AWS_* settings"
        ) from None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200]


class S3Store(Store):
    """Objects under ``s3://bucket/prefix/``; see the module docstring."""

    def __init__(self, bucket: str, prefix: str = "", client=None):
        from optuna.artifacts import Boto3ArtifactStore

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or _client()
        # avoid_buf_copy: uploads stream from the open file (which upload_fileobj may close: we own it)
        self.objects = Boto3ArtifactStore(bucket, client=self.client, avoid_buf_copy=True)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def open_reader(self, key: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            return self.objects.open_reader(self._key(key))
        except ArtifactNotFound:
            raise KeyError(key) from None
        except Exception as e:
            raise self.error(e, f"reading {self.where(key)}") from None

    def write(self, key: str, body: BinaryIO) -> None:
        try:
            self.objects.write(self._key(key), body)
        except Exception as e:
            raise self.error(e, f"writing {self.where(key)}") from None

    def remove(self, key: str) -> None:
        try:
            self.objects.remove(self._key(key))
        except Exception as e:
            raise self.error(e, f"removing {self.where(key)}") from None

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix)
        keys, token = [], None
        try:
            while True:
                kw = {"Bucket": self.bucket, "Prefix": full, **({"ContinuationToken": token} if token else {})}
                page = self.client.list_objects_v2(**kw)
                keys += [o["Key"] for o in page.get("Contents", [])]
                token = page.get("NextContinuationToken")
                if not token:
                    break
        except Exception as e:
            raise self.error(e, f"listing {self.where(prefix)}") from None
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in keys)

    def check(self, write: bool = False) -> None:
        """The bucket exists and these credentials may list it (and, with ``write``, write and delete in it)."""
        import uuid

        probe = self._key(f".gped-probe-{uuid.uuid4().hex[:12]}")
        try:
            self.client.head_bucket(Bucket=self.bucket)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
            if write:
                self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
                self.client.delete_object(Bucket=self.bucket, Key=probe)
        except Exception as e:
            raise self.error(e, "checking the bucket") from None

    def child(self, name: str) -> S3Store:
        return S3Store(self.bucket, f"{self.prefix}/{name}" if self.prefix else name, client=self.client)

    def error(self, e: BaseException, doing: str) -> StoreError:
        """One line naming what to set: credentials, the endpoint or the bucket."""
        from botocore import exceptions as bx

        where = f"search.artifacts {self.url} (endpoint {self.endpoint})"
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return StoreError(f"{where}: no AWS credentials found; {_CREDENTIALS}")
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            hint = "AWS_ENDPOINT_URL" if os.environ.get("AWS_ENDPOINT_URL") else "AWS_ENDPOINT_URL (for MinIO, Ceph...)"
            return StoreError(f"{where}: cannot reach the endpoint while {doing}; check {hint} and the network")
        if isinstance(e, bx.ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket", "404") or (status == 404 and doing == "checking the bucket"):
                return StoreError(f"{where}: bucket {self.bucket!r} does not exist; create it or fix search.artifacts")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
                return StoreError(f"{where}: the credentials were refused ({code}); {_CREDENTIALS}")
            if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
                return StoreError(
                    f"{where}: access denied while {doing}; the credentials need read/write access to the bucket "
                    f"({_CREDENTIALS})"
                )
            return StoreError(f"{where}: {code or status} while {doing}")
        if isinstance(e, bx.BotoCoreError):
            return StoreError(f"{where}: {type(e).__name__} while {doing}: {_first_line(e)}")
        return StoreError(f"{where}: {type(e).__name__} while {doing}: {_first_line(e)}")
