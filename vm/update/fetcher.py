"""Downloads for the TUF client: HTTP(S) with a connect/between-bytes timeout and a total deadline
per file, or a channel that is a plain directory. ngclient caps every metadata download at the
length the metadata allows (``FetcherInterface.download_file``), so an endless body stops at the
cap; targets are fetched with ``fetch_from`` (HTTP Range, to resume a partial download), capped by
``vm.update.channel``."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

CHUNK = 64 << 10
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)\Z")


class ChannelFetcher(FetcherInterface):
    """Fetch ``http://``, ``https://`` and ``file://`` URLs within time limits."""

    def __init__(self, timeout_s: float = 30.0, download_timeout_s: float = 300.0) -> None:
        self.timeout_s = timeout_s
        self.download_timeout_s = download_timeout_s
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.fetch_from(url, 0)[1]

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """The body of ``url`` from byte ``offset`` on (HTTP ``Range: bytes=offset-``), and the offset
        it really starts at: ``offset`` if the server sent that range, 0 if it sent the whole file
        (a 200, a 416, or a 206 whose ``Content-Range`` is not the range asked for)."""
        deadline = time.monotonic() + self.download_timeout_s
        if url.startswith("file://"):
            return self._file(Path(unquote(urlparse(url).path)), offset, deadline)
        response = self._request(url, {"Range": f"bytes={offset}-"} if offset else {})
        if offset and response.status == 206 and _range_start(response.headers.get("Content-Range")) == offset:
            return offset, self._chunks(url, response, deadline)
        if offset and response.status in (206, 416):  # not the range asked for: the whole file again
            response.release_conn()
            response = self._request(url, {})
        if response.status >= 400:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {response.status}", response.status)
        return 0, self._chunks(url, response, deadline)

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        try:
            return self._http.request("GET", url, headers=headers, preload_content=False)
        except urllib3.exceptions.NewConnectionError as exc:  # (a TimeoutError subclass in urllib3 2)
            raise exceptions.DownloadError(f"{url}: cannot connect") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: no answer within {self.timeout_s} s") from exc

    def _chunks(self, url: str, response: urllib3.BaseHTTPResponse, deadline: float) -> Iterator[bytes]:
        try:
            # read1: every byte received is handed on before a broken or stalled connection raises
            # (read(n) would drop a part-filled chunk), so a partial download keeps all it got.
            while chunk := response.read1(CHUNK):
                if time.monotonic() > deadline:
                    raise exceptions.SlowRetrievalError(f"{url}: not downloaded within {self.download_timeout_s} s")
                yield chunk
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: stalled for {self.timeout_s} s") from exc
        except urllib3.exceptions.ProtocolError as exc:  # the connection ended mid-body
            raise exceptions.DownloadError(f"{url}: connection broken ({exc})") from exc
        finally:
            response.release_conn()

    def _file(self, path: Path, offset: int, deadline: float) -> tuple[int, Iterator[bytes]]:
        try:
            f = path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise exceptions.DownloadHTTPError(f"{path}: not found", 404) from None
        start = offset if 0 < offset <= f.seek(0, 2) else 0
        f.seek(start)
        return start, self._read(f, path, deadline)

    def _read(self, f, path: Path, deadline: float) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
        with f:
            while chunk := f.read(CHUNK):
                if time.monotonic() > deadline:
                    raise exceptions.SlowRetrievalError(f"{path}: not read within {self.download_timeout_s} s")
                yield chunk


def _range_start(content_range: str | None) -> int | None:
    """The first byte a ``Content-Range: bytes START-END/TOTAL`` header says the body holds."""
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(1)) if match else None
