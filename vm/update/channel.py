"""The device's TUF client over a channel (``tuf.ngclient``), and the one place TUF's exceptions
become edgevm's typed errors.

Each check runs the TUF client workflow from the trusted metadata kept in ``metadata_dir``: root
(rotations through a new root), timestamp, snapshot, targets, with versions (no rollback),
expiry (no freeze), signatures of the roles' keys, and hashes and lengths (no mix-and-match,
no endless data). Three gaps of ngclient are closed here: trusted metadata is written durably
(fsynced, through ``vm.bundle.files``) rather than only renamed; a target is downloaded beside its
destination and renamed into place only once its length and hashes verified; and a download cut
short (a broken or stalled connection) resumes where it stopped on the next try (HTTP Range).

``edgevm update-client`` (TUF's conformance client protocol) runs this same client.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import Updater, UpdaterConfig

from vm.bundle import files
from vm.bundle.channel import METADATA_DIR, TARGETS_DIR, Offer, SnapshotOffer, is_snapshot
from vm.errors import (
    BadInput,
    Downgrade,
    EdgeError,
    Internal,
    NotFound,
    ResourceExhausted,
    SignatureError,
    Timeout,
)
from vm.update.fetcher import ChannelFetcher

log = logging.getLogger("edgevm.update")


class _DurableUpdater(Updater):
    """ngclient's ``Updater`` whose trusted metadata survives a power cut."""

    def _persist_file(self, filename: str, data: bytes) -> None:
        files.write_atomic(filename, data)


def channel_url(channel: str) -> str:
    """A channel given as a URL or a path, as a base URL ending in ``/``."""
    if channel.startswith(("http://", "https://", "file://")):
        return channel.rstrip("/") + "/"
    return "file://" + quote(str(Path(channel).resolve())) + "/"


def typed(exc: Exception, what: str) -> EdgeError:
    """A TUF (or local I/O) failure as a typed edgevm error."""
    if isinstance(exc, EdgeError):
        return exc
    text = f"{what}: {exc}" if str(exc) else f"{what}: {type(exc).__name__}"
    if isinstance(exc, exceptions.ExpiredMetadataError):
        return SignatureError(f"{text} (expired metadata: a frozen or stale channel)")
    if isinstance(exc, exceptions.BadVersionNumberError):
        return Downgrade(f"{text} (older metadata than already trusted: a rollback attack)")
    if isinstance(exc, exceptions.UnsignedMetadataError):
        return SignatureError(f"{text} (not signed by the keys the trusted root names)")
    if isinstance(exc, exceptions.DownloadLengthMismatchError):
        return ResourceExhausted(f"{text} (longer than the metadata allows)")
    if isinstance(exc, exceptions.SlowRetrievalError):
        return Timeout(text)
    if isinstance(exc, exceptions.DownloadHTTPError):
        return NotFound(text) if exc.status_code == 404 else BadInput(text)
    if isinstance(exc, exceptions.LengthOrHashMismatchError):
        return BadInput(f"{text} (does not match its signed length and hash)")
    if isinstance(exc, exceptions.DownloadError):
        cause = exc.__cause__
        return NotFound(f"{text}{f' ({cause})' if cause else ''} (channel unreachable)")
    if isinstance(exc, (exceptions.RepositoryError, ValueError)):
        return BadInput(f"{text} (invalid metadata)")
    if isinstance(exc, OSError):
        return BadInput(f"{text} (local storage: {exc.strerror or exc})")
    return Internal(f"{text} (unexpected {type(exc).__name__})")


PARTIAL = ".partial"  # beside a download's destination: the bytes received so far


def trust_root(metadata_dir: Path, root: Path) -> None:
    """Make ``root`` (a root.json) the trusted root in ``metadata_dir``, durably; it must parse as
    TUF root metadata (its signatures are checked by the first refresh, against itself)."""
    try:
        data = root.read_bytes()
        Metadata[Root].from_bytes(data)
        files.write_atomic(metadata_dir / f"{Root.type}.json", data)
    except Exception as exc:
        raise typed(exc, f"trusted root {root}") from None


class ChannelClient:
    """A TUF client of one channel, keeping its trusted metadata in ``metadata_dir``.

    ``channel`` is the channel's URL or path (metadata and targets in its ``metadata/`` and
    ``targets/``); ``metadata_url`` and ``target_base_url`` name them apart instead, for any TUF
    repository."""

    def __init__(self, channel: str | None, metadata_dir: Path, root: Path, fetcher: ChannelFetcher, *,
                 metadata_url: str | None = None, target_base_url: str | None = None) -> None:
        base = channel_url(channel) if channel is not None else None
        if base is None and metadata_url is None:
            raise BadInput("a channel client needs a channel or a metadata URL")
        self.metadata_url = _slash(metadata_url) if metadata_url else f"{base}{METADATA_DIR}/"
        self.target_base_url = _slash(target_base_url) if target_base_url else \
            (f"{base}{TARGETS_DIR}/" if base is not None else None)
        self.metadata_dir = metadata_dir
        self.root = root
        self.fetcher = fetcher
        self._updater: Updater | None = None
        self.snapshot_offers: list[tuple[SnapshotOffer, TargetFile]] = []  # the feature snapshots, at refresh

    def _bootstrap(self) -> bytes | None:
        """The trust anchor: the root trusted last time if it still parses, else the shipped one."""
        cached = self.metadata_dir / f"{Root.type}.json"
        try:
            Metadata[Root].from_bytes(cached.read_bytes())
            return None
        except Exception:  # missing, or damaged: start again from the shipped root
            try:
                return self.root.read_bytes()
            except OSError as exc:
                raise NotFound(f"the channel's trusted root {self.root} cannot be read ({exc.strerror})") from None

    def refresh_metadata(self) -> None:
        """Run the TUF workflow for the top-level roles; trusted metadata is then up to date."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._updater = _DurableUpdater(str(self.metadata_dir), self.metadata_url, fetcher=self.fetcher,
                                            config=UpdaterConfig(), bootstrap=self._bootstrap())
            self._updater.refresh()
        except Exception as exc:
            raise typed(exc, "channel metadata") from None

    def refresh(self) -> list[tuple[Offer, TargetFile]]:
        """Run the TUF workflow; every target the channel now offers (malformed ones are skipped)."""
        self.refresh_metadata()
        assert self._updater is not None
        targets = self._updater._trusted_set.targets.targets  # verified just now; no delegations
        offers = []
        self.snapshot_offers = []
        for path, target in targets.items():
            try:
                if is_snapshot(target.custom):
                    self.snapshot_offers.append((SnapshotOffer.from_custom(path, target.custom), target))
                else:
                    offers.append((Offer.from_custom(path, target.custom), target))
            except BadInput as exc:
                log.warning("channel offers a malformed target, skipped: %s", exc)
        return offers

    def target(self, path: str) -> TargetFile:
        """The verified target ``path`` (delegated roles walked, as TUF's workflow says); ``refresh()`` first."""
        assert self._updater is not None, "refresh() first"
        try:
            target = self._updater.get_targetinfo(path)
        except Exception as exc:
            raise typed(exc, f"target {path}") from None
        if target is None:
            raise NotFound(f"the channel's metadata names no target {path}")
        return target

    def download(self, target: TargetFile, dest: Path) -> bytes:
        """Download ``target`` to ``dest`` and return its bytes: never more than its signed length,
        renamed to ``dest`` only once its length and hashes match. The bytes go to
        ``dest`` + ``.partial`` first; a transfer cut short keeps them there and the next call resumes
        from them (HTTP Range). A partial file that turns out not to match is dropped, and the whole
        file fetched again, once."""
        assert self._updater is not None, "refresh() first"
        if self.target_base_url is None:
            raise BadInput(f"no target base URL to download {target.path} from")
        partial, url = dest.with_name(dest.name + PARTIAL), self._target_url(target)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            resumed = self._fetch_into(url, partial, target.length)
            error = _mismatch(target, partial)
            if error is not None and resumed and partial.stat().st_size >= target.length:
                partial.unlink()  # the kept bytes were stale or damaged: the whole file once more
                self._fetch_into(url, partial, target.length)
                error = _mismatch(target, partial)
            if error is not None:
                if partial.stat().st_size >= target.length:
                    partial.unlink()  # whole but wrong: nothing to resume from
                raise error  # shorter: the body ended early, the next try resumes
            os.replace(partial, dest)
            files.fsync_dir(dest.parent)
            return dest.read_bytes()
        except exceptions.DownloadLengthMismatchError as exc:
            partial.unlink(missing_ok=True)
            raise typed(exc, f"bundle {target.path}") from None
        except Exception as exc:
            raise typed(exc, f"bundle {target.path}") from None

    def cached(self, target: TargetFile, path: Path) -> bool:
        """Whether ``path`` already holds ``target`` (length and hashes match): no need to download it."""
        try:
            return _mismatch(target, path) is None
        except OSError:
            return False

    def _target_url(self, target: TargetFile) -> str:
        """Where ``target`` is: with consistent snapshots, its file name is prefixed by its hash."""
        assert self._updater is not None
        path = target.path
        if self._updater._trusted_set.root.consistent_snapshot:
            dirname, sep, basename = path.rpartition("/")
            path = f"{dirname}{sep}{next(iter(target.hashes.values()))}.{basename}"
        return f"{self.target_base_url}{path}"

    def _fetch_into(self, url: str, partial: Path, length: int) -> bool:
        """Append ``url``'s bytes to ``partial`` from its size on (or rewrite it, if the server sends
        the whole file); whether it resumed. More than ``length`` bytes in all is an error."""
        have = partial.stat().st_size if partial.exists() else 0
        if have == length:
            return True  # all there already (the process ended before the rename): verify it
        start, chunks = self.fetcher.fetch_from(url, have if have < length else 0)
        received = start
        with partial.open("ab" if start else "wb") as f:
            for chunk in chunks:
                received += len(chunk)
                if received > length:
                    raise exceptions.DownloadLengthMismatchError(
                        f"{url}: more than the {length} bytes the metadata allows")
                f.write(chunk)
        return start > 0


def _mismatch(target: TargetFile, path: Path) -> exceptions.LengthOrHashMismatchError | None:
    """Why the file at ``path`` is not ``target`` (its signed length and hashes), or None."""
    with path.open("rb") as f:
        try:
            target.verify_length_and_hashes(f)
        except exceptions.LengthOrHashMismatchError as exc:
            return exc
    return None


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"
