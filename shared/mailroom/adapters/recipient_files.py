"""Uploaded recipient files of bulk batches (issue 17), in S3.

The client PUTs the file to a presigned URL; ``freeze`` copies it (server
side, whatever its size) to the key the planner reads, so a second PUT to
the same URL after the batch started changes nothing the planner sees.
The planner reads the frozen copy as a stream from a byte offset (an HTTP
Range request), so a resumed planner neither re-reads nor holds the file.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.domain.errors import DependencyUnavailable

# Bytes per read from S3: a handful of recipients' lines, not the file.
READ_CHUNK_BYTES = 256 * 1024


def upload_key(client_id: uuid.UUID, batch_id: uuid.UUID) -> str:
    return f"uploads/{client_id}/{batch_id}"


def frozen_key(batch_id: uuid.UUID) -> str:
    return f"started/{batch_id}"


class RecipientFiles(abc.ABC):
    @abc.abstractmethod
    def upload_url(self, key: str, expires_seconds: int, content_type: str) -> str:
        """A presigned PUT URL for ``key``."""

    @abc.abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, None if nothing was uploaded there."""

    @abc.abstractmethod
    def freeze(self, source: str, target: str) -> None:
        """Copy ``source`` to ``target`` inside the bucket."""

    @abc.abstractmethod
    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The object's bytes from ``offset`` (``length`` of them, or to the end), in chunks."""


class S3RecipientFiles(RecipientFiles):
    """S3 through boto3; AWS_ENDPOINT_URL alone points it at AWS, LocalStack or moto."""

    def __init__(self, bucket: str, region: str) -> None:
        self._bucket = bucket
        self._region = region
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            self._client = boto3.client(
                "s3",
                region_name=self._region,
                config=BotoConfig(
                    connect_timeout=2,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                ),
            )
        return self._client

    def _bucket_name(self) -> str:
        if not self._bucket:
            raise DependencyUnavailable("BATCH_UPLOADS_BUCKET is not configured")
        return self._bucket

    def upload_url(self, key: str, expires_seconds: int, content_type: str) -> str:
        try:
            return str(
                self.client.generate_presigned_url(
                    "put_object",
                    Params={"Bucket": self._bucket_name(), "Key": key},
                    ExpiresIn=expires_seconds,
                )
            )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"presigning the upload failed: {error}") from error

    def size(self, key: str) -> int | None:
        try:
            answer = self.client.head_object(Bucket=self._bucket_name(), Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise DependencyUnavailable(f"S3 did not answer: {error}") from error
        except BotoCoreError as error:
            raise DependencyUnavailable(f"S3 did not answer: {error}") from error
        return int(answer["ContentLength"])

    def freeze(self, source: str, target: str) -> None:
        bucket = self._bucket_name()
        try:
            self.client.copy_object(
                Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source}
            )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"copying the upload failed: {error}") from error

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        params: dict[str, Any] = {"Bucket": self._bucket_name(), "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            params["Range"] = f"bytes={offset}-{end}"
        try:
            answer = self.client.get_object(**params)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "InvalidRange":
                return  # the offset is the end of the file: nothing left
            raise DependencyUnavailable(f"reading the recipients file failed: {error}") from error
        except BotoCoreError as error:
            raise DependencyUnavailable(f"reading the recipients file failed: {error}") from error
        body = answer["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK_BYTES)
        finally:
            body.close()
