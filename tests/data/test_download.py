"""The download stage's library: resume, retry, checksum, clear errors, target untouched on failure."""
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cifarbudget.data.download import fetch_archive, partial_path
from cifarbudget.errors import UserError

CONTENT = bytes(range(256)) * 4000  # ~1 MB: several read chunks, cheap to serve
MD5 = hashlib.md5(CONTENT).hexdigest()


@dataclass
class Behaviour:
    """How the test server misbehaves; it records every request's Range header."""
    content: bytes = CONTENT
    drop_after: int | None = None  # first request: close the connection after this many bytes
    stall: float = 0.0             # first request: wait this long before sending the body
    ignore_range: bool = False     # answer 200 with the whole file even when asked for a range
    errors: list[int] = field(default_factory=list)  # statuses to answer before serving normally
    endless: bool = False          # send zeros without a Content-Length until the client leaves
    trickle: float = 0.0           # send one byte per this many seconds
    trickle_headers: float = 0.0   # send the response's headers one byte per this many seconds
    declared_length: int | None = None  # the Content-Length to claim instead of the true one
    redirect_to: str | None = None      # answer 302 with this Location
    ranges: list[str | None] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        behaviour: Behaviour = self.server.behaviour
        requested = self.headers.get("Range")
        behaviour.ranges.append(requested)
        first = len(behaviour.ranges) == 1
        if self.path != "/archive.tar.gz":
            return self.send_error(404)
        if behaviour.errors:
            return self.send_error(behaviour.errors.pop(0))
        if behaviour.redirect_to:
            self.send_response(302)
            self.send_header("Location", behaviour.redirect_to)
            return self.end_headers()
        if behaviour.trickle_headers:
            for byte in b"HTTP/1.0 200 OK\r\nX-Padding: " + b"x" * 10_000:
                self.wfile.write(bytes([byte]))  # until the client hangs up (the write fails)
                self.wfile.flush()
                time.sleep(behaviour.trickle_headers)
        if behaviour.endless:
            self.send_response(200)
            self.end_headers()
            while True:  # until the client hangs up (the write then fails)
                self.wfile.write(bytes(1 << 16))
        body, start = behaviour.content, 0
        if requested and not behaviour.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                return self.send_error(416)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(behaviour.declared_length or len(body) - start))
        self.end_headers()
        payload = body[start:]
        if behaviour.trickle:
            for byte in payload:  # until the client hangs up (the write then fails)
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(behaviour.trickle)
        if first and behaviour.drop_after is not None:
            payload = payload[:behaviour.drop_after]
        if first and behaviour.stall:
            time.sleep(behaviour.stall)
        self.wfile.write(payload)  # HTTP/1.0: the connection closes after the handler returns

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the client hanging up on a stalled response is part of the test


@pytest.fixture
def server():
    """(behaviour, url) of an HTTP server on 127.0.0.1 serving CONTENT at /archive.tar.gz."""
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.behaviour = Behaviour()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd.behaviour, f"http://127.0.0.1:{httpd.server_address[1]}/archive.tar.gz"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def target(tmp_path):
    return tmp_path / "data" / "raw" / "archive.tar.gz"


def fetch(url, target, md5=MD5, **kwargs):
    """fetch_archive with instant sleeps; returns the delays it asked for."""
    delays = []
    fetch_archive(url, md5, target, sleep=delays.append, backoff=0.5, **kwargs)
    return delays


def test_downloads_and_verifies(server, target):
    behaviour, url = server
    assert fetch(url, target) == []
    assert target.read_bytes() == CONTENT
    assert behaviour.ranges == [None]
    assert sorted(p.name for p in target.parent.iterdir()) == ["archive.tar.gz"]


def test_a_dropped_connection_resumes_with_a_range_request(server, target):
    behaviour, url = server
    behaviour.drop_after = half = len(CONTENT) // 2
    delays = fetch(url, target)
    assert behaviour.ranges == [None, f"bytes={half}-"]
    assert delays == [0.5]
    assert target.read_bytes() == CONTENT
    assert not partial_path(target).exists()


def test_a_server_ignoring_range_restarts_from_zero(server, target):
    behaviour, url = server
    behaviour.drop_after, behaviour.ignore_range = 1000, True
    fetch(url, target)
    assert behaviour.ranges == [None, "bytes=1000-"]
    assert target.read_bytes() == CONTENT  # not the first 1000 bytes twice


def test_a_partial_file_from_an_earlier_run_is_resumed(server, target):
    behaviour, url = server
    target.parent.mkdir(parents=True)
    partial_path(target).write_bytes(CONTENT[:12345])
    fetch(url, target)
    assert behaviour.ranges == ["bytes=12345-"]
    assert target.read_bytes() == CONTENT


def test_a_complete_stale_partial_file_starts_over(server, target):
    behaviour, url = server
    target.parent.mkdir(parents=True)
    partial_path(target).write_bytes(CONTENT)  # e.g. killed between downloading and verifying
    fetch(url, target)
    assert behaviour.ranges == [f"bytes={len(CONTENT)}-", None]
    assert target.read_bytes() == CONTENT


def test_wrong_bytes_fail_naming_both_md5s_and_leave_the_earlier_archive(server, target):
    behaviour, url = server
    behaviour.content = CONTENT[:-1] + b"X"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the earlier archive")
    actual = hashlib.md5(behaviour.content).hexdigest()
    with pytest.raises(UserError, match=f"md5 mismatch: expected {MD5} \\(data.md5\\), got {actual}"):
        fetch(url, target)
    assert target.read_bytes() == b"the earlier archive"
    assert [p.name for p in target.parent.iterdir()] == ["archive.tar.gz"]  # no part, no temp


def test_404_is_a_clear_error_without_retries(server, target):
    behaviour, url = server
    with pytest.raises(UserError, match=r"HTTP 404 Not Found; check data\.source"):
        fetch(url.replace("archive", "missing"), target)
    assert len(behaviour.ranges) == 1
    assert not target.exists()


def test_server_errors_are_retried_with_exponential_backoff(server, target):
    behaviour, url = server
    behaviour.errors = [503, 500, 502]
    assert fetch(url, target) == [0.5, 1.0, 2.0]
    assert target.read_bytes() == CONTENT


def test_gives_up_after_the_attempts_keeping_the_partial_file(server, target):
    behaviour, url = server
    behaviour.errors = [503] * 10
    target.parent.mkdir(parents=True)
    partial_path(target).write_bytes(CONTENT[:5000])
    with pytest.raises(UserError, match=r"download failed 3 times in a row \(last: HTTP 503 .*"
                                        r"any partial download is kept and resumes"):
        fetch(url, target, attempts=3)
    assert behaviour.ranges == ["bytes=5000-"] * 3
    assert partial_path(target).read_bytes() == CONTENT[:5000]
    assert not target.exists()


def test_a_timeout_is_retried(server, target):
    behaviour, url = server
    behaviour.stall = 2.0
    fetch(url, target, timeout=0.3)
    assert len(behaviour.ranges) == 2
    assert target.read_bytes() == CONTENT


def test_a_local_path_is_copied_and_verified(tmp_path, target):
    source = tmp_path / "mine.tar.gz"
    source.write_bytes(CONTENT)
    fetch(str(source), target)
    assert target.read_bytes() == CONTENT
    with pytest.raises(UserError, match="md5 mismatch"):
        fetch(str(source), target, md5="0" * 32)
    assert target.read_bytes() == CONTENT
    assert [p.name for p in target.parent.iterdir()] == ["archive.tar.gz"]


def test_a_missing_local_source_is_a_clear_error(tmp_path, target):
    with pytest.raises(UserError, match=r"data\.source: cannot read .*nowhere\.tar\.gz \(No such file "
                                        r"or directory\); give the path of an existing archive"):
        fetch(str(tmp_path / "nowhere.tar.gz"), target)
    assert not target.exists()


@pytest.mark.parametrize("source, md5, message", [
    ("ftp://example.org/a.tar.gz", MD5, r"unsupported scheme; give an http\(s\) URL or a local path"),
    ("/any/path", "not-an-md5", r"data\.md5: 'not-an-md5' is not an md5 checksum; give the 32 hex"),
])
def test_bad_source_or_md5_fail_before_any_work(source, md5, message, target):
    with pytest.raises(UserError, match=message):
        fetch(source, target, md5=md5)


# --- bounded: size, time and redirects ------------------------------------------------------------
def test_an_endless_body_stops_at_the_size_limit_and_deletes_the_partial_file(server, target):
    behaviour, url = server
    behaviour.endless = True
    with pytest.raises(UserError, match=r"more than 3,000,000 bytes, larger than a CIFAR archive"):
        fetch(url, target, max_bytes=3_000_000)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_a_content_length_beyond_the_limit_is_refused_before_reading(server, target):
    behaviour, url = server
    behaviour.declared_length = 10**12
    with pytest.raises(UserError, match=r"more than 3,000,000 bytes, larger than a CIFAR archive"):
        fetch(url, target, max_bytes=3_000_000)
    assert not target.exists()


def test_the_default_size_limit_is_a_cifar_archive_with_a_margin():
    from cifarbudget.data.cifar import MAX_ARCHIVE_BYTES

    official = {"cifar10": 170_498_071, "cifar100": 169_001_437}  # bytes of the .tar.gz files
    assert max(official.values()) < MAX_ARCHIVE_BYTES < 3 * min(official.values())


def test_a_trickling_body_stops_at_the_deadline_keeping_the_partial_file(server, target):
    behaviour, url = server
    behaviour.trickle = 0.05
    started = time.monotonic()
    with pytest.raises(UserError, match=r"did not finish within 1 s \(data\.download_deadline\); "
                                        r"rerun to resume"):
        fetch(url, target, deadline=1.0, timeout=5.0)
    # The whole body would take len(CONTENT) x 0.05 s; a generous bound, robust to a busy machine.
    assert time.monotonic() - started < 60
    assert 0 < partial_path(target).stat().st_size < len(CONTENT)  # kept: a rerun resumes
    assert not target.exists()


def test_headers_sent_one_byte_at_a_time_stop_at_the_deadline(server, target):
    behaviour, url = server
    behaviour.trickle_headers = 0.05
    started = time.monotonic()
    with pytest.raises(UserError, match=r"did not finish within 1 s \(data\.download_deadline\)"):
        fetch(url, target, deadline=1.0, timeout=5.0)
    assert time.monotonic() - started < 60  # the headers alone would take 500 s
    assert not target.exists()


def test_a_redirect_to_another_scheme_is_refused(server, target):
    behaviour, url = server
    behaviour.redirect_to = "ftp://127.0.0.1/archive.tar.gz"
    with pytest.raises(UserError, match=r"redirects to 'ftp://127\.0\.0\.1/archive\.tar\.gz', "
                                        r"which is not an http\(s\) URL"):
        fetch(url, target)
    assert behaviour.ranges == [None]  # asked once, not retried
    assert not target.exists()


def test_a_redirect_loop_is_refused_on_one_line(server, target):
    behaviour, url = server
    behaviour.redirect_to = url  # to itself, for ever
    with pytest.raises(UserError, match=r"HTTP 302 The HTTP server returned a redirect error that "
                                        r"would lead to an infinite loop\. The last 30x error "
                                        r"message was: Found; check data\.source"):
        fetch(url, target)
    assert not target.exists()


def test_a_redirect_to_http_is_followed(server, target):
    behaviour, url = server
    behaviour.redirect_to = url.replace("archive", "elsewhere")
    with pytest.raises(UserError, match=r"HTTP 404"):  # followed: the server knows no such file
        fetch(url, target)
    assert behaviour.ranges == [None, None]


def test_while_downloading_only_the_partial_file_exists(server, target):
    behaviour, url = server
    behaviour.trickle = 0.05
    errors = []

    def download():
        try:
            fetch(url, target, deadline=5.0)
        except UserError as exc:
            errors.append(exc)

    thread = threading.Thread(target=download)
    thread.start()
    part, waited = partial_path(target), time.monotonic() + 60
    while not part.exists() and time.monotonic() < waited:
        time.sleep(0.01)  # until the download has begun
    assert thread.is_alive(), "the download ended before it could be looked at"
    # What a kill now would leave: the partial file (it resumes), no empty temporary file.
    assert [p.name for p in target.parent.iterdir()] == [part.name]
    thread.join()
    assert "did not finish" in str(errors[0])


def test_a_local_source_beyond_the_size_limit_stops_there(tmp_path, target):
    source = tmp_path / "big.tar.gz"
    source.write_bytes(bytes(3_000_001))
    with pytest.raises(UserError, match=r"big\.tar\.gz: more than 3,000,000 bytes"):
        fetch(str(source), target, max_bytes=3_000_000)
    assert [p.name for p in target.parent.iterdir()] == []  # no archive, no temporary file


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_a_pipe_or_device_as_source_is_refused_before_it_is_opened(kind, tmp_path, target):
    """Opening a pipe with no writer, or reading /dev/zero, would block or run for ever."""
    source = tmp_path / "archive.pipe" if kind == "pipe" else Path("/dev/zero")
    if kind == "pipe":
        os.mkfifo(source)
    errors = []

    def fetch_and_keep_the_error():
        try:
            fetch(str(source), target, deadline=3600)
        except UserError as exc:
            errors.append(exc)

    attempt = threading.Thread(target=fetch_and_keep_the_error, daemon=True)
    attempt.start()
    attempt.join(timeout=60)  # an unguarded open of the pipe would never return
    assert not attempt.is_alive(), "the fetch blocked on the pipe"
    assert re.fullmatch(r"data\.source: \S+ is not a regular file \(a pipe, socket or device\); "
                        r"give the path of an archive file or an http\(s\) URL", str(errors[0]))
    assert [p.name for p in target.parent.iterdir()] == []
