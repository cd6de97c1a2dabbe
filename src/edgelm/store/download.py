"""A resumable HTTP download into a `.part` file: ranged requests, sha256 and size checks.

The bytes go to `part` only; the caller moves the file into place once it is verified, so a final
name never holds half a file. A transfer that is cut keeps what arrived, and the next call asks
for the rest with a `Range` header (a server that ignores it sends the whole file again).
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from edgelm.store.errors import DownloadError
from edgelm.store.files import CHUNK_BYTES, Progress, storage_error

__all__ = ["fetch"]

TIMEOUT_S = 30.0  # per socket operation: a stalled server ends the attempt, not the process
RETRIES = 3  # attempts after the first, each resuming where the last stopped
RETRY_WAIT_S = 0.5


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never send the Authorization header to another host (a CDN)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if (
            new is not None
            and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        ):
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_NoAuthAcrossHosts())


def fetch(
    url: str,
    part: Path,
    *,
    headers: Mapping[str, str] | None = None,
    size: int | None = None,
    on_progress: Progress | None = None,
    retries: int = RETRIES,
) -> None:
    """Bring `url` into `part`, resuming from what `part` holds; raise DownloadError when it cannot."""
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, headers or {}, size, on_progress)
            return
        except _Retryable as e:
            if attempt == retries:
                raise DownloadError(
                    f"{_where(url)}: {e} (after {retries + 1} attempts; pull again to resume)"
                ) from None
            time.sleep(RETRY_WAIT_S * (attempt + 1))


class _Retryable(Exception):
    pass


def _where(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _fetch_once(
    url: str, part: Path, headers: Mapping[str, str], size: int | None, on_progress: Progress | None
) -> None:
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        have = 0  # not a prefix of this file: start over
    if size is not None and have == size:
        return
    request = urllib.request.Request(url, headers=dict(headers))
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = _OPENER.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and size is None and have:
            return  # the range starts at the end: nothing left to send
        if e.code in (429, 500, 502, 503, 504):
            raise _Retryable(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{_where(url)}: HTTP {e.code} {_http_reason(e.code, e.reason)}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{_where(url)}: cannot connect ({_reason(e.reason)})") from None
    except (TimeoutError, ConnectionError) as e:
        raise _Retryable(_reason(e)) from None
    with response:
        if have and response.status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != have:  # an answer for another range: start over
                part.unlink(missing_ok=True)
                raise _Retryable("the server answered a range that was not asked for")
        else:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else size
        _receive(response, part, have, total, on_progress)
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Retryable(f"connection closed at {got} of {total} bytes")
    if size is not None and got != size:
        raise DownloadError(f"{_where(url)}: got {got} bytes, expected {size}")


def _receive(
    response: http.client.HTTPResponse, part: Path, have: int, total: int | None, on_progress: Progress | None
) -> None:
    try:
        with open(part, "ab" if have else "wb") as f:
            done = have
            if on_progress is not None:
                on_progress(done, total)
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (TimeoutError, ConnectionError, http.client.IncompleteRead) as e:
                    raise _Retryable(_reason(e)) from None
                if not block:
                    break
                f.write(block)
                done += len(block)
                if on_progress is not None:
                    on_progress(done, total)
    except OSError as e:
        if isinstance(e, (TimeoutError, ConnectionError)):
            raise _Retryable(_reason(e)) from None
        raise storage_error(e, part) from None


def _range_start(content_range: str) -> int | None:
    # "bytes START-END/TOTAL"
    try:
        unit, rest = content_range.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _http_reason(code: int, reason: str) -> str:
    if code == 401:
        return f"{reason} (a private or gated model: set HF_TOKEN)"
    if code == 403:
        return f"{reason} (access denied: a gated model needs its terms accepted and HF_TOKEN set)"
    if code == 404:
        return f"{reason} (no such file)"
    return reason


def _reason(e: object) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e)
    return text or type(e).__name__
