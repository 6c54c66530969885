"""Where lake files live: URIs, filesystems, S3 options, listings, pinned identities, retries.

Local paths and ``s3://`` URIs both go through ``pyarrow.fs`` (``LocalFileSystem`` /
``S3FileSystem``), so a test against a local S3 endpoint exercises the code path real S3 uses.

NOTE [ S3 retries are bounded in time ]
Two layers, both bounded. The AWS SDK inside pyarrow retries each request (``max_attempts``,
exponential backoff with jitter); on top, every listing, footer read and row-group read is one
*operation* that :func:`retrying` repeats for transient errors (5xx, throttling, dropped
connections) with its own backoff, at most ``retries`` times and never past ``retry_deadline``
seconds. Permanent errors (missing object or bucket, refused credentials) are never retried.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from ...errors import ConfigError, ConnectionFailedError, NotFoundError, SourceChangedError

T = TypeVar("T")

_GLOB_CHARS = re.compile(r"[*?\[]")


# --------------------------------------------------------------------------- storage options


@dataclass(frozen=True)
class S3Options:
    """fsspec/s3fs-style ``storage_options`` translated to ``pyarrow.fs.S3FileSystem`` terms."""

    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_override: str | None = None
    scheme: str | None = None
    anonymous: bool = False
    role_arn: str | None = None
    connect_timeout: float | None = None
    request_timeout: float | None = None
    max_attempts: int = 3  # per request, inside the AWS SDK
    retries: int = 5  # per operation (listing, footer, row group), ours
    retry_deadline: float = 60.0  # seconds, per operation

    def secrets(self) -> list[str]:
        return [s for s in (self.secret_key, self.session_token, self.access_key) if s]


_SUPPORTED = (
    "key, secret, token, endpoint_url, region, client_kwargs={region_name, endpoint_url}, "
    "anon, use_ssl, role_arn, config_kwargs={connect_timeout, read_timeout, retries="
    "{max_attempts}}, connect_timeout, read_timeout, retries, retry_deadline"
)


def parse_storage_options(options: Mapping[str, Any] | None) -> S3Options:
    """Translate fsspec/s3fs-style options (``key``, ``secret``, ``token``, ``endpoint_url``,
    ``client_kwargs``, ``anon`` ...) to :class:`S3Options`; an unknown option is a ConfigError."""
    opts = dict(options or {})
    client = dict(opts.pop("client_kwargs", None) or {})
    config = dict(opts.pop("config_kwargs", None) or {})
    out: dict[str, Any] = {}

    def take(names: tuple[str, ...], src: dict[str, Any]) -> Any:
        val = None
        for n in names:
            if n in src:
                v = src.pop(n)
                val = v if val is None else val
        return val

    out["access_key"] = take(("key", "access_key", "aws_access_key_id"), opts)
    out["secret_key"] = take(("secret", "secret_key", "aws_secret_access_key"), opts)
    out["session_token"] = take(("token", "session_token", "aws_session_token"), opts)
    out["access_key"] = out["access_key"] or take(("aws_access_key_id",), client)
    out["secret_key"] = out["secret_key"] or take(("aws_secret_access_key",), client)
    out["session_token"] = out["session_token"] or take(("aws_session_token",), client)
    out["region"] = take(("region", "region_name"), opts) or take(("region_name",), client)
    endpoint = take(("endpoint_url", "endpoint_override"), opts) or take(("endpoint_url",), client)
    use_ssl = take(("use_ssl",), opts)
    if use_ssl is None:
        use_ssl = take(("use_ssl",), client)
    out["anonymous"] = bool(take(("anon", "anonymous"), opts) or False)
    out["role_arn"] = take(("role_arn",), opts)
    out["connect_timeout"] = take(("connect_timeout",), opts) or take(("connect_timeout",), config)
    out["request_timeout"] = take(("read_timeout", "request_timeout"), opts) or take(
        ("read_timeout",), config
    )
    retries_cfg = config.pop("retries", None)
    if isinstance(retries_cfg, Mapping) and "max_attempts" in retries_cfg:
        out["max_attempts"] = int(retries_cfg["max_attempts"])
    if "max_attempts" in opts:
        out["max_attempts"] = int(opts.pop("max_attempts"))
    if "retries" in opts:
        out["retries"] = int(opts.pop("retries"))
    if "retry_deadline" in opts:
        out["retry_deadline"] = float(opts.pop("retry_deadline"))
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        out["endpoint_override"] = parts.netloc or parts.path
        out["scheme"] = parts.scheme or None
    if use_ssl is not None and out.get("scheme") is None:
        out["scheme"] = "https" if use_ssl else "http"
    leftovers = sorted([*opts, *(f"client_kwargs.{k}" for k in client)])
    leftovers += sorted(f"config_kwargs.{k}" for k in config)
    if leftovers:
        raise ConfigError(
            f"unsupported storage option(s) {leftovers} for an S3 lake; supported: {_SUPPORTED}"
        )
    for k in ("max_attempts", "retries"):
        if k in out and out[k] < 1:
            raise ConfigError(f"storage option {k!r} must be >= 1, got {out[k]}")
    return S3Options(**{k: v for k, v in out.items() if v is not None})


# --------------------------------------------------------------------------- URIs


@dataclass(frozen=True)
class Location:
    """One entry of the user's ``uri``: a file, a directory or a glob, local or on S3."""

    scheme: str  # "s3" or "file"
    path: str  # filesystem path: "bucket/key..." for S3, absolute path locally
    glob: bool

    def display(self, path: str | None = None) -> str:
        p = self.path if path is None else path
        return f"s3://{p}" if self.scheme == "s3" else p


def parse_location(uri: str | os.PathLike[str]) -> Location:
    text = os.fspath(uri)
    if text.startswith("s3://") or text.startswith("s3a://"):
        parts = urlsplit(text)
        # never keep credentials written into a URI (s3://KEY:SECRET@bucket/...)
        bucket = parts.hostname or ""
        if not bucket:
            raise ConfigError(f"S3 URI {_strip_userinfo(text)!r} has no bucket")
        path = bucket + (parts.path or "")
        return Location("s3", path.rstrip("/") or bucket, bool(_GLOB_CHARS.search(path)))
    if text.startswith("file://"):
        text = unquote(urlsplit(text).path)
    elif "://" in text:
        raise ConfigError(
            f"unsupported lake URI scheme in {_strip_userinfo(text)!r}: use s3:// or a local path"
        )
    path = os.path.abspath(os.path.expanduser(text))
    return Location("file", path, bool(_GLOB_CHARS.search(path)))


def _strip_userinfo(uri: str) -> str:
    return re.sub(r"^(\w+://)[^/@]*@", r"\1", uri)


def display_uri(uri: Any) -> str:
    """The user's uri (or list of them) as text for messages, without credentials."""
    if isinstance(uri, str | os.PathLike):
        return _strip_userinfo(os.fspath(uri))
    items = [_strip_userinfo(os.fspath(u)) for u in uri]
    return items[0] if len(items) == 1 else f"[{items[0]}, ... {len(items)} paths]"


# --------------------------------------------------------------------------- filesystems

_FS_CACHE: dict[tuple[Any, ...], Any] = {}
_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def filesystem_for(scheme: str, s3: S3Options, bucket: str | None = None) -> Any:
    """A pyarrow filesystem for ``scheme``, made once per process (never inherited across fork)
    and per configuration (the AWS environment variables included)."""
    env = tuple(os.environ.get(k) for k in _AWS_ENV) if scheme == "s3" else ()
    key = (os.getpid(), scheme, s3 if scheme == "s3" else None, env, bucket)
    fs = _FS_CACHE.get(key)
    if fs is None:
        fs = _make_s3(s3, bucket) if scheme == "s3" else _local()
        _FS_CACHE[key] = fs
    return fs


def _local() -> Any:
    from pyarrow import fs as pafs

    return pafs.LocalFileSystem()


def _make_s3(o: S3Options, bucket: str | None) -> Any:
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=o.max_attempts),
    }
    if o.anonymous:
        kwargs["anonymous"] = True
    if o.access_key or o.secret_key:
        kwargs["access_key"], kwargs["secret_key"] = o.access_key, o.secret_key
        if o.session_token:
            kwargs["session_token"] = o.session_token
    if o.role_arn:
        kwargs["role_arn"] = o.role_arn
    for name in ("endpoint_override", "scheme", "connect_timeout", "request_timeout"):
        if getattr(o, name) is not None:
            kwargs[name] = getattr(o, name)
    env_endpoint = _endpoint_from_env()
    if o.endpoint_override is None and env_endpoint:  # as boto3 and s3fs honour it
        parts = urlsplit(env_endpoint if "://" in env_endpoint else f"//{env_endpoint}")
        kwargs["endpoint_override"] = parts.netloc or parts.path
        if parts.scheme:
            kwargs["scheme"] = parts.scheme
    region = o.region or _region_from_env()
    if region is None and o.endpoint_override is None and bucket and not _endpoint_from_env():
        try:  # real AWS, no region configured: ask S3 where the bucket lives
            region = pafs.resolve_s3_region(bucket)
        except (OSError, ValueError):
            region = None
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def _region_from_env() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


# --------------------------------------------------------------------------- errors + retries

_TRANSIENT = re.compile(
    r"HTTP status 5\d\d|SLOW_DOWN|SlowDown|SERVICE_UNAVAILABLE|ServiceUnavailable|THROTTL|"
    r"Throttl|INTERNAL_FAILURE|InternalError|REQUEST_TIMEOUT|RequestTimeout|NETWORK_CONNECTION|"
    r"Connection reset|Broken pipe|curlCode: (?:7|28|52|55|56)|Timeout was reached|"
    r"Unexpected end of stream|response code: 5\d\d",
)
_DENIED = re.compile(
    r"ACCESS_DENIED|AccessDenied|INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|"
    r"SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch|HTTP status 403|EXPIRED_TOKEN|"
    r"ExpiredToken|InvalidToken|UNRECOGNIZED_CLIENT|No response body.*403|Forbidden",
)
_NO_BUCKET = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|bucket does not exist", re.IGNORECASE)
_NO_KEY = re.compile(r"NO_SUCH_KEY|NoSuchKey|HTTP status 404|Path does not exist|not found")


_PERMANENT_NET = re.compile(r"curlCode: 6\b|Could not resolve host")


def is_transient(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, OSError)
        and bool(_TRANSIENT.search(text))
        and not (_PERMANENT_NET.search(text))
    )


def scrub(text: str, s3: S3Options | None) -> str:
    """Remove every configured secret (and the key id) from an error text."""
    for secret in s3.secrets() if s3 is not None else ():
        text = text.replace(secret, "***")
    return re.sub(r"(Credential=)[^/,\s]+", r"\1***", text)


def translate(
    exc: BaseException, what: str, s3: S3Options | None, elapsed: float = 0.0, attempts: int = 1
) -> Exception:
    """An OSError from pyarrow.fs -> the tensorfeed error naming ``what`` (never a secret)."""
    msg = scrub(str(exc), s3)
    if _NO_BUCKET.search(msg):
        return NotFoundError(f"{what}: the bucket does not exist ({msg})")
    if _DENIED.search(msg):
        return ConnectionFailedError(
            f"{what}: access denied; check the credentials (storage_options key/secret/token, the "
            f"AWS_* environment variables or the AWS profile) and the bucket policy ({msg})"
        )
    if isinstance(exc, FileNotFoundError) or _NO_KEY.search(msg):
        return NotFoundError(f"{what}: no such file or object ({msg})")
    # name the server, not only the object: a driver's text may not say which endpoint it tried
    at = f" at {s3.endpoint_override}" if s3 is not None and s3.endpoint_override else ""
    if is_transient(exc):
        return ConnectionFailedError(
            f"{what}{at}: gave up after {attempts} attempt(s) in {elapsed:.1f}s of transient "
            f"errors (5xx, throttling, dropped connections); last error: {msg}"
        )
    return ConnectionFailedError(f"{what}{at}: {msg}")


def retrying(fn: Callable[[], T], what: str, s3: S3Options | None) -> T:
    """Run one I/O operation, repeating it on transient errors (see NOTE [ S3 retries ... ])."""
    attempts = s3.retries if s3 is not None else 1
    deadline = s3.retry_deadline if s3 is not None else 0.0
    start = time.monotonic()
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OSError as exc:
            elapsed = time.monotonic() - start
            if not is_transient(exc) or attempt == attempts or elapsed + delay > deadline:
                raise translate(exc, what, s3, elapsed, attempt) from None
        time.sleep(delay * (0.5 + random.random() / 2))  # jitter: workers do not retry in lockstep
        delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- listings


@dataclass(frozen=True)
class FileEntry:
    """One lake file and the identity pinned for the epoch: size, mtime and (S3) ETag."""

    path: str  # filesystem path
    size: int
    mtime_ns: int | None
    scheme: str
    etag: str | None = None

    @property
    def display(self) -> str:
        return f"s3://{self.path}" if self.scheme == "s3" else self.path

    def with_etag(self, etag: str | None) -> FileEntry:
        return FileEntry(self.path, self.size, self.mtime_ns, self.scheme, etag)


_SUFFIXES = {
    "parquet": (".parquet", ".parq", ".pq"),
    "csv": (".csv", ".csv.gz", ".tsv"),
    "json": (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz"),
}


def _hidden(rel: str) -> bool:
    return any(p.startswith((".", "_")) and "=" not in p for p in rel.split("/"))


def list_files(
    locations: Sequence[Location], fmt: str, s3: S3Options, filesystem: Any = None
) -> tuple[Any, list[FileEntry]]:
    """Expand files, directories and globs into a sorted, de-duplicated list of lake files."""
    schemes = {loc.scheme for loc in locations}
    if len(schemes) > 1:
        raise ConfigError("a lake's paths must all be local or all be on S3, not a mix")
    scheme = schemes.pop()
    bucket = locations[0].path.split("/", 1)[0] if scheme == "s3" else None
    fs = filesystem if filesystem is not None else filesystem_for(scheme, s3, bucket)
    s3opt = s3 if scheme == "s3" else None
    seen: dict[str, FileEntry] = {}
    for loc in locations:
        for e in _expand(fs, loc, fmt, s3opt):
            seen.setdefault(e.path, e)
    return fs, [seen[p] for p in sorted(seen)]


def _entry(info: Any, scheme: str) -> FileEntry:
    return FileEntry(info.path, int(info.size or 0), info.mtime_ns, scheme)


def _expand(fs: Any, loc: Location, fmt: str, s3: S3Options | None) -> list[FileEntry]:
    from pyarrow import fs as pafs

    shown = loc.display()
    if loc.glob:
        base = _glob_base(loc.path)
        infos = (
            retrying(
                lambda: fs.get_file_info(pafs.FileSelector(base, recursive=True)),
                f"listing {shown}",
                s3,
            )
            if _exists_dir(fs, base, s3, loc)
            else []
        )
        files = [
            _entry(i, loc.scheme)
            for i in infos
            if i.type == pafs.FileType.File
            and fnmatch.fnmatchcase(i.path, loc.path)
            and not _hidden(posixpath.relpath(i.path, base))
        ]
        if not files:
            raise NotFoundError(f"no file matches the pattern {shown}")
        return files
    info = retrying(lambda: fs.get_file_info(loc.path), f"looking up {shown}", s3)
    if info.type == pafs.FileType.File:
        return [_entry(info, loc.scheme)]
    if info.type == pafs.FileType.NotFound:
        if loc.scheme == "s3":  # an S3 "directory" may exist only as a key prefix
            infos = _list_prefix(fs, loc, s3)
            if infos:
                return _filter_dir(infos, loc, fmt)
            _check_bucket(fs, loc, s3)
        raise NotFoundError(f"the lake path {shown} does not exist")
    infos = _list_prefix(fs, loc, s3)
    files = _filter_dir(infos, loc, fmt)
    if not files:
        raise NotFoundError(
            f"the lake directory {shown} holds no {fmt} files (looked for {', '.join(_SUFFIXES[fmt])})"
        )
    return files


def _exists_dir(fs: Any, base: str, s3: S3Options | None, loc: Location) -> bool:
    from pyarrow import fs as pafs

    info = retrying(lambda: fs.get_file_info(base), f"looking up {loc.display(base)}", s3)
    if info.type == pafs.FileType.NotFound and loc.scheme == "s3":
        _check_bucket(fs, loc, s3)
        return True  # a prefix without a directory marker
    return info.type == pafs.FileType.Directory


def _list_prefix(fs: Any, loc: Location, s3: S3Options | None) -> list[Any]:
    from pyarrow import fs as pafs

    return retrying(
        lambda: fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)),
        f"listing {loc.display()}",
        s3,
    )


def _filter_dir(infos: list[Any], loc: Location, fmt: str) -> list[FileEntry]:
    from pyarrow import fs as pafs

    out = []
    for i in infos:
        if i.type != pafs.FileType.File or _hidden(posixpath.relpath(i.path, loc.path)):
            continue
        if i.path.lower().endswith(_SUFFIXES[fmt]):
            out.append(_entry(i, loc.scheme))
    return out


def _check_bucket(fs: Any, loc: Location, s3: S3Options | None) -> None:
    from pyarrow import fs as pafs

    bucket = loc.path.split("/", 1)[0]
    info = retrying(lambda: fs.get_file_info(bucket), f"looking up bucket s3://{bucket}", s3)
    if info.type == pafs.FileType.NotFound:
        raise NotFoundError(f"the bucket s3://{bucket} (of {loc.display()}) does not exist")


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    for i, p in enumerate(parts):
        if _GLOB_CHARS.search(p):
            return "/".join(parts[:i]) or "/"
    return posixpath.dirname(pattern)


# --------------------------------------------------------------------------- pinned identity


def current_identity(fs: Any, entry: FileEntry, s3: S3Options | None) -> FileEntry | None:
    """The file's identity now (None if it is gone): a stat locally, a HEAD on S3."""
    from pyarrow import fs as pafs

    if entry.scheme == "s3":

        def head() -> FileEntry | None:
            try:
                meta = fs.open_input_file(entry.path).metadata()
            except FileNotFoundError:
                return None
            except OSError as exc:
                if _NO_KEY.search(str(exc)):
                    return None
                raise
            length = _meta(meta, "Content-Length")
            return FileEntry(entry.path, int(length or 0), entry.mtime_ns, "s3", _etag(meta))

        return retrying(head, f"checking {entry.display}", s3)
    info = fs.get_file_info(entry.path)
    if info.type == pafs.FileType.NotFound:
        return None
    return FileEntry(entry.path, int(info.size or 0), info.mtime_ns, entry.scheme)


def _meta(meta: Mapping[Any, Any], name: str) -> str | None:
    """A header from ``NativeFile.metadata()`` (keys and values may be str or bytes)."""
    for k, v in meta.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key.lower() == name.lower():
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def _etag(meta: Mapping[Any, Any]) -> str | None:
    v = _meta(meta, "ETag")
    return v.strip('"') if v else None


def etag_of(handle: Any) -> str | None:
    try:
        return _etag(handle.metadata())
    except (OSError, AttributeError):
        return None


def check_unchanged(pinned: FileEntry, now: FileEntry | None) -> None:
    """Raise SourceChangedError when the file is not the one pinned for this epoch."""
    if now is None:
        raise SourceChangedError(
            f"the lake changed under this epoch: {pinned.display} was deleted after the epoch's "
            "file list was pinned"
        )
    what = []
    if now.size != pinned.size:
        what.append(f"size {pinned.size} -> {now.size}")
    if pinned.etag and now.etag and pinned.etag != now.etag:
        what.append(f"ETag {pinned.etag} -> {now.etag}")
    if (
        pinned.scheme != "s3"
        and pinned.mtime_ns is not None
        and now.mtime_ns is not None
        and pinned.mtime_ns != now.mtime_ns
    ):
        what.append("modification time changed")
    if what:
        raise SourceChangedError(
            f"the lake changed under this epoch: {pinned.display} was replaced "
            f"({', '.join(what)}) after the epoch's file list was pinned; start a new epoch "
            "(LakeStream) or call refresh() (LakeDataset) to read the new version"
        )
