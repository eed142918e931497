"""Fetch the dataset archive: stream with progress, resume, retry, verify the md5, rename into place.

A download goes to a partial file beside the target (data/raw/.archive.tar.gz.part)
that survives failed attempts and reruns, so an interrupted download continues
with an HTTP Range request where it stopped. Only a file whose md5 matches ever
replaces the target.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import urlparse

from tqdm import tqdm

from cifarbudget.errors import UserError
from cifarbudget.io import atomic_path
from cifarbudget.paths import ARCHIVE

CHUNK_BYTES = 1 << 20


class _TransientError(Exception):
    """A failure worth retrying: the connection dropped or timed out, or the server erred."""


def partial_path(target: Path) -> Path:
    """Where the download of `target` accumulates until its md5 is verified."""
    return target.with_name(f".{target.name}.part")


def fetch_archive(source: str, md5: str, target: str | Path = ARCHIVE, *, attempts: int = 5,
                  backoff: float = 1.0, timeout: float = 60.0,
                  sleep: Callable[[float], None] = time.sleep) -> None:
    """Put the file at `source` (http(s) URL or local path) at `target` if its md5 is `md5`.

    Transient network errors are retried `attempts` times in a row, sleeping
    `backoff`, 2 x `backoff`, ... seconds in between. Any failure leaves `target`
    as it was.
    """
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise UserError(f"data.md5: {md5!r} is not an md5 checksum; give the 32 hex digits "
                        f"printed by `md5sum ARCHIVE`")
    target = Path(target)
    with atomic_path(target) as tmp:
        if urlparse(source).scheme in ("http", "https"):
            part = partial_path(target)
            _download(source, part, attempts, backoff, timeout, sleep)
            _verify_md5(part, md5, source)
            os.replace(part, tmp)
        elif "://" in source:
            raise UserError(f"data.source: {source!r} has an unsupported scheme; give an http(s) URL "
                            f"or a local path")
        else:
            _copy_local(Path(source).expanduser(), tmp)
            _verify_md5(tmp, md5, source)


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_md5(path: Path, expected: str, source: str) -> None:
    actual = _file_md5(path)
    if actual != expected:
        path.unlink()  # a corrupt download must not be resumed
        raise UserError(f"{source}: md5 mismatch: expected {expected} (data.md5), got {actual}; "
                        f"the file is corrupt or data.md5 is wrong: fix data.md5 or rerun to download "
                        f"again")


def _stream(read: Callable[[int], bytes], out: BinaryIO, total: int | None, initial: int,
            desc: str) -> int:
    """Copy chunks from `read` to `out` under a progress bar; return the bytes copied."""
    copied = 0
    with tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
              unit_divisor=1024) as bar:
        while chunk := read(CHUNK_BYTES):
            out.write(chunk)
            copied += len(chunk)
            bar.update(len(chunk))
    return copied


def _copy_local(source: Path, dest: Path) -> None:
    try:
        src = open(source, "rb")
    except OSError as exc:
        raise UserError(f"data.source: cannot read {source} ({exc.strerror}); give the path of an "
                        f"existing archive or an http(s) URL") from None
    with src, open(dest, "wb") as out:
        _stream(src.read, out, os.fstat(src.fileno()).st_size, 0, f"copying {source.name}")


def _describe(exc: BaseException) -> str:
    """E.g. "ConnectionResetError: [Errno 104] ...", unwrapping urllib's URLError."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if not isinstance(reason, BaseException):
        return str(reason)
    return f"{type(reason).__name__}: {reason}".rstrip(": ")


def _download(url: str, part: Path, attempts: int, backoff: float, timeout: float,
              sleep: Callable[[float], None]) -> None:
    for attempt in range(1, attempts + 1):
        try:
            _download_attempt(url, part, timeout)
            return
        except _TransientError as exc:
            if attempt == attempts:
                raise UserError(f"{url}: download failed {attempts} times in a row (last: {exc}); "
                                f"check the network and data.source, then rerun: any partial "
                                f"download is kept and resumes") from None
            delay = backoff * 2 ** (attempt - 1)
            tqdm.write(f"{url}: {exc}; retrying in {delay:g}s ({attempt}/{attempts - 1})")
            sleep(delay)


def _download_attempt(url: str, part: Path, timeout: float) -> None:
    """Fetch what `part` lacks of `url`; raise _TransientError for anything worth retrying."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416:  # the partial file is not a strict prefix of the resource
            part.unlink()
            raise _TransientError(f"the server cannot resume at byte {offset} (HTTP 416); "
                                  f"starting over") from None
        if exc.code >= 500 or exc.code in (408, 429):
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from None
        raise UserError(f"{url}: HTTP {exc.code} {exc.reason}; check data.source (empty means the "
                        f"official archive)") from None
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
        raise _TransientError(_describe(exc)) from None

    with response:
        if response.status == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                part.unlink()
                raise _TransientError("the server resumed at the wrong byte; starting over")
            mode = "ab"
        else:  # the server ignored the Range header and sends the whole file
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length else None
        with open(part, mode) as out:
            received = _stream(_network_reader(response), out,
                               None if expected is None else offset + expected, offset,
                               f"downloading {Path(urlparse(url).path).name}")
    # urllib returns a short body without complaint when the server closes early.
    if expected is not None and received < expected:
        raise _TransientError(f"the connection closed after {offset + received} of "
                              f"{offset + expected} bytes")


def _network_reader(response) -> Callable[[int], bytes]:
    """response.read whose network failures are retryable, unlike failures to write the file."""
    def read(size: int) -> bytes:
        try:
            return response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransientError(f"the connection failed mid-download ({_describe(exc)})") from None
    return read
