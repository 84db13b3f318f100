"""The device's TUF client over a channel (``tuf.ngclient``), and the one place TUF's exceptions
become edgevm's typed errors.

Each check runs the TUF client workflow from the trusted metadata kept in ``metadata_dir``: root
(rotations through a new root), timestamp, snapshot, targets, with versions (no rollback),
expiry (no freeze), signatures of the roles' keys, and hashes and lengths (no mix-and-match,
no endless data). Two gaps of ngclient are closed here: trusted metadata is written durably
(fsynced, through ``vm.bundle.files``) rather than only renamed, and a target is downloaded to a
file the caller renames into place only once it verified.
"""
from __future__ import annotations

import logging
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


class ChannelClient:
    """A TUF client of one channel, keeping its trusted metadata in ``metadata_dir``."""

    def __init__(self, channel: str, metadata_dir: Path, root: Path, fetcher: ChannelFetcher) -> None:
        self.base = channel_url(channel)
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

    def refresh(self) -> list[tuple[Offer, TargetFile]]:
        """Run the TUF workflow; every target the channel now offers (malformed ones are skipped)."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._updater = _DurableUpdater(str(self.metadata_dir), self.base + METADATA_DIR + "/",
                                            target_base_url=self.base + TARGETS_DIR + "/", fetcher=self.fetcher,
                                            config=UpdaterConfig(), bootstrap=self._bootstrap())
            self._updater.refresh()
            targets = self._updater._trusted_set.targets.targets  # verified just now; no delegations
        except Exception as exc:
            raise typed(exc, "channel metadata") from None
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

    def download(self, target: TargetFile, dest: Path) -> bytes:
        """Download ``target`` to ``dest`` (length capped, hashes verified) and return its bytes."""
        assert self._updater is not None, "refresh() first"
        try:
            self._updater.download_target(target, str(dest))
            return dest.read_bytes()
        except Exception as exc:
            dest.unlink(missing_ok=True)
            raise typed(exc, f"bundle {target.path}") from None
