"""Downloads for the TUF client: HTTP(S) with a connect/between-bytes timeout and a total deadline
per file, or a channel that is a plain directory. ngclient caps every download at the length the
metadata allows (``FetcherInterface.download_file``), so an endless body stops at the cap."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

CHUNK = 64 << 10


class ChannelFetcher(FetcherInterface):
    """Fetch ``http://``, ``https://`` and ``file://`` URLs within time limits."""

    def __init__(self, timeout_s: float = 30.0, download_timeout_s: float = 300.0) -> None:
        self.timeout_s = timeout_s
        self.download_timeout_s = download_timeout_s
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))

    def _fetch(self, url: str) -> Iterator[bytes]:
        deadline = time.monotonic() + self.download_timeout_s
        if url.startswith("file://"):
            return self._file(Path(unquote(urlparse(url).path)), deadline)
        try:
            response = self._http.request("GET", url, preload_content=False)
        except urllib3.exceptions.NewConnectionError as exc:  # (a TimeoutError subclass in urllib3 2)
            raise exceptions.DownloadError(f"{url}: cannot connect") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: no answer within {self.timeout_s} s") from exc
        if response.status >= 400:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {response.status}", response.status)
        return self._chunks(url, response, deadline)

    def _chunks(self, url: str, response: urllib3.BaseHTTPResponse, deadline: float) -> Iterator[bytes]:
        try:
            for chunk in response.stream(CHUNK):
                if time.monotonic() > deadline:
                    raise exceptions.SlowRetrievalError(f"{url}: not downloaded within {self.download_timeout_s} s")
                yield chunk
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: stalled for {self.timeout_s} s") from exc
        except urllib3.exceptions.ProtocolError as exc:  # the connection ended mid-body
            raise exceptions.DownloadError(f"{url}: connection broken ({exc})") from exc
        finally:
            response.release_conn()

    def _file(self, path: Path, deadline: float) -> Iterator[bytes]:
        try:
            f = path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise exceptions.DownloadHTTPError(f"{path}: not found", 404) from None
        return self._read(f, path, deadline)

    def _read(self, f, path: Path, deadline: float) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
        with f:
            while chunk := f.read(CHUNK):
                if time.monotonic() > deadline:
                    raise exceptions.SlowRetrievalError(f"{path}: not read within {self.download_timeout_s} s")
                yield chunk
