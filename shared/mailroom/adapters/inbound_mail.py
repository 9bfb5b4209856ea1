"""Reading the raw inbound mail the SES receipt rule's S3 action stored."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# SES accepts mail up to 40 MB; a bounce is far smaller. Reading is capped so
# that a huge message cannot exhaust the function's memory.
MAX_READ_BYTES = 10 * 1024 * 1024


@lru_cache(maxsize=1)
def _s3() -> Any:
    import boto3  # only the inbound function's SES path needs it

    return boto3.client("s3")


def read_s3_object(bucket: str, key: str) -> bytes:
    response = _s3().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_READ_BYTES - 1}")
    return bytes(response["Body"].read())
