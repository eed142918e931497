"""Fetch the dataset archive: stream with progress, resume, retry, verify the md5, rename into place.

A download goes to a partial file beside the target (data/raw/.archive.tar.gz.part)
that survives failed attempts, an interruption and the deadline, so a rerun continues
with an HTTP Range request where it stopped. Only a file whose md5 matches ever
replaces the target.

Nothing is fetched unbounded: a source larger than a CIFAR archive can be (or than its
Content-Length) is refused as soon as that is known, the whole fetch has a deadline besides
the timeout of each read, and redirects are followed to http(s) URLs only.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import stat
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import urlparse

from tqdm import tqdm

from cifarbudget.data.cifar import MAX_ARCHIVE_BYTES
from cifarbudget.errors import UserError
from cifarbudget.io import atomic_path
from cifarbudget.paths import ARCHIVE

CHUNK_BYTES = 1 << 20


class _TransientError(Exception):
    """A failure worth retrying: the connection dropped or timed out, or the server erred."""


@dataclass(frozen=True)
class _Bounds:
    max_bytes: int      # the most bytes the file may have
    deadline: float     # seconds for the whole fetch (data.download_deadline)
    give_up_at: float   # time.monotonic() at the deadline

    def check_time(self, source: str) -> None:
        if time.monotonic() > self.give_up_at:
            raise UserError(f"{source}: the download did not finish within {self.deadline:g} s "
                            f"(data.download_deadline); rerun to resume where it stopped, or "
                            f"raise data.download_deadline for a slow link")


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only: data.source accepts no other scheme either."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlparse(newurl).scheme not in ("http", "https"):
            fp.close()
            raise UserError(f"{req.full_url}: redirects to {newurl[:200]!r}, which is not an "
                            f"http(s) URL; point data.source at an http(s) URL or a local path")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


def _open_before_deadline(request: urllib.request.Request, timeout: float, bounds: _Bounds):
    """_OPENER.open(request), given up at the deadline: the timeout bounds each read, so a
    server sending its headers one byte at a time could otherwise hold the open for ever.
    The abandoned opening thread ends with its connection's next timeout."""
    outcome: dict = {}

    def open_() -> None:
        try:
            outcome["response"] = _OPENER.open(request, timeout=timeout)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    opening = threading.Thread(target=open_, daemon=True)
    opening.start()
    opening.join(max(0.0, bounds.give_up_at - time.monotonic()))
    if opening.is_alive():
        bounds.check_time(request.full_url)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["response"]


def partial_path(target: Path) -> Path:
    """Where the download of `target` accumulates until its md5 is verified."""
    return target.with_name(f".{target.name}.part")


def fetch_archive(source: str, md5: str, target: str | Path = ARCHIVE, *, attempts: int = 5,
                  backoff: float = 1.0, timeout: float = 60.0, deadline: float = 3600.0,
                  max_bytes: int = MAX_ARCHIVE_BYTES,
                  sleep: Callable[[float], None] = time.sleep) -> None:
    """Put the file at `source` (http(s) URL or local path) at `target` if its md5 is `md5`.

    Transient network errors are retried `attempts` times in a row, sleeping
    `backoff`, 2 x `backoff`, ... seconds in between; each read may take `timeout`
    seconds, the whole fetch `deadline` seconds, and the file may have `max_bytes` bytes.
    Any failure leaves `target` as it was.
    """
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise UserError(f"data.md5: {md5!r} is not an md5 checksum; give the 32 hex digits "
                        f"printed by `md5sum ARCHIVE`")
    target = Path(target)
    bounds = _Bounds(max_bytes, deadline, time.monotonic() + deadline)
    if urlparse(source).scheme in ("http", "https"):
        part = partial_path(target)
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write {part.parent}: {exc.strerror}; fix its permissions or "
                            f"run from a writable checkout") from None
        _download(source, part, attempts, backoff, timeout, sleep, bounds)
        _verify_md5(part, md5, source)
        # The temporary file exists only for the rename: a killed download leaves just `part`.
        with atomic_path(target) as tmp:
            os.replace(part, tmp)
    elif "://" in source:
        raise UserError(f"data.source: {source!r} has an unsupported scheme; give an http(s) URL "
                        f"or a local path")
    else:
        with atomic_path(target) as tmp:
            _copy_local(Path(source).expanduser(), tmp, bounds)
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


class _TooLarge(Exception):
    """The file is larger than the size limit (bounds.max_bytes)."""


def _stream(read: Callable[[int], bytes], out: BinaryIO, total: int | None, initial: int,
            desc: str, source: str, bounds: _Bounds) -> int:
    """Copy chunks from `read` to `out` under a progress bar; return the bytes copied.

    Raises _TooLarge past bounds.max_bytes, UserError past the deadline (checked after each
    read, so it is late by at most one read's timeout)."""
    copied = 0
    with tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
              unit_divisor=1024) as bar:
        while chunk := read(CHUNK_BYTES):
            if initial + copied + len(chunk) > bounds.max_bytes:
                raise _TooLarge
            out.write(chunk)
            copied += len(chunk)
            bar.update(len(chunk))
            bounds.check_time(source)
    return copied


def _too_large(source: str, bounds: _Bounds) -> UserError:
    return UserError(f"{source}: more than {bounds.max_bytes:,} bytes, larger than a CIFAR "
                     f"archive can be; point data.source at a CIFAR archive")


def _copy_local(source: Path, dest: Path, bounds: _Bounds) -> None:
    try:
        # A pipe or device would block the open or the reads for ever, deadline or not.
        if not stat.S_ISREG(source.stat().st_mode) and not source.is_dir():
            raise UserError(f"data.source: {source} is not a regular file (a pipe, socket or "
                            f"device); give the path of an archive file or an http(s) URL")
        src = open(source, "rb")
    except OSError as exc:
        raise UserError(f"data.source: cannot read {source} ({exc.strerror}); give the path of an "
                        f"existing archive or an http(s) URL") from None
    with src, open(dest, "wb") as out:
        try:
            _stream(src.read, out, os.fstat(src.fileno()).st_size, 0, f"copying {source.name}",
                    str(source), bounds)
        except _TooLarge:
            raise _too_large(str(source), bounds) from None


def _describe(exc: BaseException) -> str:
    """E.g. "ConnectionResetError: [Errno 104] ...", unwrapping urllib's URLError."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if not isinstance(reason, BaseException):
        return str(reason)
    return f"{type(reason).__name__}: {reason}".rstrip(": ")


def _download(url: str, part: Path, attempts: int, backoff: float, timeout: float,
              sleep: Callable[[float], None], bounds: _Bounds) -> None:
    for attempt in range(1, attempts + 1):
        try:
            _download_attempt(url, part, timeout, bounds)
            return
        except _TooLarge:
            part.unlink(missing_ok=True)  # not a prefix of any CIFAR archive: nothing to resume
            raise _too_large(url, bounds) from None
        except _TransientError as exc:
            if attempt == attempts:
                raise UserError(f"{url}: download failed {attempts} times in a row (last: {exc}); "
                                f"check the network and data.source, then rerun: any partial "
                                f"download is kept and resumes") from None
            delay = backoff * 2 ** (attempt - 1)
            tqdm.write(f"{url}: {exc}; retrying in {delay:g}s ({attempt}/{attempts - 1})")
            sleep(delay)
            bounds.check_time(url)


def _download_attempt(url: str, part: Path, timeout: float, bounds: _Bounds) -> None:
    """Fetch what `part` lacks of `url`; raise _TransientError for anything worth retrying."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = _open_before_deadline(request, timeout, bounds)
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
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        if expected is not None and offset + expected > bounds.max_bytes:
            raise _TooLarge
        with open(part, mode) as out:
            received = _stream(_network_reader(response), out,
                               None if expected is None else offset + expected, offset,
                               f"downloading {Path(urlparse(url).path).name}", url, bounds)
    # urllib returns a short body without complaint when the server closes early.
    if expected is not None and received < expected:
        raise _TransientError(f"the connection closed after {offset + received} of "
                              f"{offset + expected} bytes")


def _network_reader(response) -> Callable[[int], bytes]:
    """response.read1 (what has arrived, up to `size`: a trickling server cannot hold one read
    past the deadline check) whose network failures are retryable, unlike failures to write."""
    def read(size: int) -> bytes:
        try:
            return response.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransientError(f"the connection failed mid-download ({_describe(exc)})") from None
    return read
