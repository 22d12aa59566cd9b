"""A stage input on S3: `s3://bucket/key.parquet`, or `s3://bucket/prefix/` holding parquet shards, read
with pyarrow's own S3 filesystem (no copy on local disk; with `runtime.engine: ray` each worker reads its
row groups straight from the bucket, so no node needs a shared volume).

Credentials, region and endpoint come from the environment as boto3 and the AWS CLI read them
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or an instance role, AWS_REGION or
AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for MinIO and other S3 servers), never from
params.yaml or the location: a location or an endpoint with `user:secret@` in it is refused, so no key
reaches a lock file, a report or a log; and whatever a server's error quotes of the credentials (a proxy
echoing the request's `x-amz-security-token` or `Authorization`, in any case or encoding), the environment's or
those of `~/.aws/credentials` and a profile, is redacted from every S3 failure's line (`redact_credentials`).
"""

from __future__ import annotations

import fnmatch
import functools
import os

import pyarrow as pa

from scripts.lib.errors import DataError
from scripts.lib.key_redaction import redact_key

SCHEME = "s3://"
# what the AWS SDK sends (the key id and session token as they are, in headers) and signs with
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def is_s3(location) -> bool:
    return isinstance(location, str) and location.startswith(SCHEME)


def bucket_path(location: str) -> str:
    """`bucket/key` of an s3:// location (checked: a bucket, no credentials, no empty or dot segments)."""
    path = location.removeprefix(SCHEME).rstrip("/")
    bucket = path.split("/", 1)[0]
    if "@" in bucket or ":" in bucket:
        raise DataError(f"{SCHEME}…: credentials in an S3 location are refused; set them in the AWS environment")
    if not bucket or any(part in ("", ".", "..") for part in path.split("/")):
        raise DataError(f"{location}: not an S3 location of the form s3://bucket/key")
    return path


def filesystem():
    """pyarrow's S3FileSystem for the AWS environment as it is now (see the module docstring)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _filesystem(region, endpoint())


def endpoint() -> str | None:
    """The S3 endpoint the environment names (None: AWS's own); one with `user:secret@` is refused (the SDK
    takes the user part for the host and quotes it in its errors)."""
    name = next((name for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)
    if name is None:
        return None
    value = os.environ[name]
    if "@" in value.split("://", 1)[-1].split("/", 1)[0]:
        raise DataError(f"{name}: credentials in an S3 endpoint are refused; set them in the AWS environment")
    return value


def redact_credentials(text: str) -> str:
    """`text` without the AWS credentials the SDK signs with, in any case or encoding a server may echo them in
    (key_redaction.redact_key): the environment's, and every other secret known (import_env.redact_line: those
    of the credentials and config files the SDK reads, any profile, AWS_PROFILE's included); the environment's
    only named ones redacted the error of a profile's credentials not at all."""
    from scripts.lib.import_env import redact_line

    for name in CREDENTIAL_VARIABLES:
        text = redact_key(text, os.environ.get(name))
    return redact_line(text)


@functools.cache
def _filesystem(region: str, endpoint: str | None):
    from pyarrow import fs

    # the AWS SDK's own timeouts (1 s to connect, 3 s without data) and retries: a bucket that does not
    # answer stops the stage in seconds, one line, instead of holding it in C where Ctrl-C waits
    return fs.S3FileSystem(region=region, endpoint_override=endpoint)


def shards(location: str) -> list[str]:
    """The s3:// locations of the parquet files of an input: the object itself, or the *.parquet objects
    directly under a prefix, in name order (any case, as local folders). A location ending in `/` is a prefix
    only (an object of the same name without the slash was read in its place)."""
    return [SCHEME + info.path for info in _shard_infos(location)]


def shard_states(location: str) -> list[tuple[str, int, int | None]]:
    """Each shard's location, size and modification time (ns; S3 keeps whole seconds), from the one listing
    shards() makes: what tells an object overwritten, added or deleted since."""
    return [(SCHEME + info.path, info.size, info.mtime_ns) for info in _shard_infos(location)]


def _shard_infos(location: str) -> list:
    from pyarrow import fs

    path = bucket_path(location)
    info = _s3_call(location, filesystem().get_file_info, path)
    if info.type == fs.FileType.File and not location.endswith("/"):  # `name/`: the prefix, never an object `name`
        return [info]
    if info.type == fs.FileType.NotFound:
        raise DataError(f"{location}: input not found on S3")
    listed = _s3_call(location, filesystem().get_file_info, fs.FileSelector(path, recursive=False))
    found = sorted(
        (i for i in listed if i.type == fs.FileType.File and fnmatch.fnmatch(i.base_name.lower(), "*.parquet")),
        key=lambda i: i.path,
    )
    if not found:
        raise DataError(f"{location}: no parquet shards under this S3 prefix")
    return found


def open_input(location: str) -> pa.NativeFile:
    """A random-access reader of one s3:// object (what pq.ParquetFile reads a footer and row groups from)."""
    return _s3_call(location, filesystem().open_input_file, bucket_path(location))


def _s3_call(location: str, function, *args):
    """function(*args), an S3 request about `location`: a failure is one line naming it (pyarrow's message
    names bucket, key and the AWS error, and the server's own message: what it quotes of the credentials is
    redacted)."""
    try:
        return function(*args)
    except FileNotFoundError:
        raise DataError(redact_credentials(f"{location}: input not found on S3")) from None
    except (OSError, ValueError) as exc:
        raise DataError(redact_credentials(f"{location}: cannot read from S3 ({exc})".splitlines()[0])) from None
