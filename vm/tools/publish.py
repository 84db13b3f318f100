"""The update channel on the build server: role keys, ``edgevm publish`` and ``edgevm channel``.

Metadata follows The Update Framework (``tuf.api.metadata``): root, targets, snapshot and
timestamp roles, each with its own Ed25519 key (``init_keys``; kept apart from the bundle signing
key and never inside the channel, which is served to the world). Publishing adds the bundle as a
target (its length and SHA-256, and ``vm.bundle.channel.Offer``'s custom fields), then writes a
new targets, snapshot and timestamp version, in that order and each atomically: a crash or a
device reading mid-publish sees the previous channel or the new one, never a mix (consistent
snapshots: only timestamp.json is replaced in place). A channel only moves forward: publishing a
version not above every published version of that name is refused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from vm.bundle import files, loader
from vm.bundle.channel import (
    HASH_ALGORITHM,
    METADATA_DIR,
    TARGETS_DIR,
    Offer,
    SnapshotOffer,
    is_snapshot,
    snapshot_target_path,
    target_path,
)
from vm.bundle.versions import parse_version
from vm.errors import BadInput, NotFound, SignatureError
from vm.tools import packer

ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
# How long each role's signature vouches for it; the timestamp must be re-signed
# (``edgevm channel refresh``) before it expires, or devices stop updating (freeze protection).
EXPIRY = {Root.type: timedelta(days=365), Targets.type: timedelta(days=90), Snapshot.type: timedelta(days=7),
          Timestamp.type: timedelta(days=1)}
MAX_BUNDLE_BYTES = 1 << 34
_SERIALIZER = JSONSerializer(compact=False)


def key_file(keys_dir: Path, role: str) -> Path:
    return keys_dir / f"tuf-{role}.pem"


def init_keys(keys_dir: str | Path, roles: tuple[str, ...] | list[str] = ROLES) -> dict[str, str]:
    """Write a new Ed25519 key per role in ``roles`` into ``keys_dir`` (PKCS#8 PEM, 0600,
    atomically); refuses to replace existing ones (devices trusting the old root would refuse the
    new channel: ``rotate`` moves a channel to new keys)."""
    out = Path(keys_dir)
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise BadInput(f"unknown channel role(s) {', '.join(unknown) or '(none given)'} (roles: {', '.join(ROLES)})")
    existing = [key_file(out, r).name for r in roles if key_file(out, r).exists()]
    if existing:
        raise BadInput(f"{out} already holds channel keys ({', '.join(existing)}); rotate keys through a new root")
    ids = {}
    for role in roles:
        signer = CryptoSigner.generate_ed25519()
        files.write_atomic(key_file(out, role), signer.private_bytes, secret=True)
        ids[role] = signer.public_key.keyid
    return ids


def _signer(keys_dir: Path, role: str) -> Signer:
    path = key_file(keys_dir, role)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"channel key {path} not found (edgevm channel init writes it)") from None
    try:
        return CryptoSigner(load_pem_private_key(pem, None))
    except ValueError as exc:
        raise BadInput(f"channel key {path} is not an Ed25519 PEM key ({exc})") from None


def _expiry(role: str, now: datetime, expires: dict[str, timedelta] | None) -> datetime:
    return (now + (expires or {}).get(role, EXPIRY[role])).replace(microsecond=0)


class Channel:
    """A channel directory's current metadata, and how to move it forward."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.meta_dir = self.dir / METADATA_DIR
        self.root = self._read(Root.type)
        self.timestamp = self._read(Timestamp.type)
        snap_version = self.timestamp.signed.snapshot_meta.version
        self.snapshot = self._read(Snapshot.type, snap_version)
        self.targets = self._read(Targets.type, self.snapshot.signed.meta[f"{Targets.type}.json"].version)

    def _read(self, role: str, version: int | None = None) -> Metadata:
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        path = self.meta_dir / name
        try:
            return Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"{path} not found: not a channel (edgevm channel init creates one)") from None
        except Exception as exc:  # tuf raises DeserializationError and friends
            raise BadInput(f"{path} is not valid TUF metadata ({exc})") from None

    def offers(self) -> list[tuple[Offer, TargetFile]]:
        """Every published bundle version, oldest first per name."""
        out = [(Offer.from_custom(path, t.custom), t) for path, t in self.targets.signed.targets.items()
               if not is_snapshot(t.custom)]
        return sorted(out, key=lambda o: (o[0].name, parse_version(o[0].version)))

    def snapshot_offers(self) -> list[tuple[SnapshotOffer, TargetFile]]:
        """Every published feature snapshot version, oldest first per name."""
        out = [(SnapshotOffer.from_custom(path, t.custom), t) for path, t in self.targets.signed.targets.items()
               if is_snapshot(t.custom)]
        return sorted(out, key=lambda o: (o[0].name, parse_version(o[0].version)))

    def commit(self, keys_dir: str | Path, *, now: datetime | None = None,
               expires: dict[str, timedelta] | None = None, targets_changed: bool = True,
               first: bool = False) -> None:
        """Sign and write the next targets (if changed), snapshot and timestamp versions (``first``:
        write the versions as they are, for a new channel)."""
        step = 0 if first else 1
        keys = Path(keys_dir)
        now = now or datetime.now(UTC)
        if targets_changed:
            t = self.targets.signed
            t.version += step
            t.expires = _expiry(Targets.type, now, expires)
            self._sign(self.targets, keys, Targets.type)
            data = self.targets.to_bytes(_SERIALIZER)
            files.write_atomic(self.meta_dir / f"{t.version}.{Targets.type}.json", data)
            self.snapshot.signed.meta[f"{Targets.type}.json"] = MetaFile(t.version, len(data), _hashes(data))
        s = self.snapshot.signed
        s.version += step
        s.expires = _expiry(Snapshot.type, now, expires)
        self._sign(self.snapshot, keys, Snapshot.type)
        data = self.snapshot.to_bytes(_SERIALIZER)
        files.write_atomic(self.meta_dir / f"{s.version}.{Snapshot.type}.json", data)
        ts = self.timestamp.signed
        ts.version += step
        ts.expires = _expiry(Timestamp.type, now, expires)
        ts.snapshot_meta = MetaFile(s.version, len(data), _hashes(data))
        self._sign(self.timestamp, keys, Timestamp.type)
        files.write_atomic(self.meta_dir / f"{Timestamp.type}.json", self.timestamp.to_bytes(_SERIALIZER))

    def _sign(self, md: Metadata, keys: Path, role: str) -> None:
        md.signatures.clear()
        md.sign(_signer(keys, role))
        try:
            self.root.signed.verify_delegate(role, md.signed_bytes, md.signatures)
        except UnsignedMetadataError:
            raise SignatureError(f"{key_file(keys, role)} is not the {role} key this channel's root trusts") from None


def _hashes(data: bytes) -> dict[str, str]:
    return {HASH_ALGORITHM: hashlib.sha256(data).hexdigest()}


def init_channel(directory: str | Path, keys_dir: str | Path, *, now: datetime | None = None,
                 expires: dict[str, timedelta] | None = None) -> Path:
    """Create an empty channel signed with the role keys in ``keys_dir`` (made if missing); returns
    the root.json that devices ship as their trust anchor."""
    out, keys = Path(directory), Path(keys_dir)
    meta = out / METADATA_DIR
    if (meta / f"{Timestamp.type}.json").exists():
        raise BadInput(f"{out} already holds a channel")
    if not all(key_file(keys, r).exists() for r in ROLES):
        init_keys(keys)
    now = now or datetime.now(UTC)
    root = Root(expires=_expiry(Root.type, now, expires), consistent_snapshot=True)
    signers = {role: _signer(keys, role) for role in ROLES}
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    root_md = Metadata(root)
    root_md.sign(signers[Root.type])
    data = root_md.to_bytes(_SERIALIZER)
    files.write_atomic(meta / f"1.{Root.type}.json", data)
    files.write_atomic(meta / f"{Root.type}.json", data)
    targets = Metadata(Targets(expires=_expiry(Targets.type, now, expires)))
    snapshot = Metadata(Snapshot(expires=_expiry(Snapshot.type, now, expires)))
    timestamp = Metadata(Timestamp(expires=_expiry(Timestamp.type, now, expires)))
    channel = Channel.__new__(Channel)
    channel.dir, channel.meta_dir, channel.root = out, meta, root_md
    channel.targets, channel.snapshot, channel.timestamp = targets, snapshot, timestamp
    channel.commit(keys, now=now, expires=expires, first=True)
    return meta / f"{Root.type}.json"


@dataclass(frozen=True)
class Published:
    offer: Offer | SnapshotOffer
    path: Path
    length: int
    sha256: str


def publish(bundle: str | Path | bytes, directory: str | Path, keys_dir: str | Path, *, rollout: float = 100.0,
            device_classes: tuple[str, ...] | list[str] = (), min_runtime: str | None = None,
            reissue_of: str | None = None, ab: dict[str, float] | None = None, now: datetime | None = None,
            expires: dict[str, timedelta] | None = None) -> Published:
    """Add ``bundle`` (a file, or its bytes) to the channel in ``directory`` and re-sign its
    metadata; ``ab`` maps A/B group names to percentages of the devices that take it (summing to 100)."""
    data = bundle if isinstance(bundle, bytes) else Path(bundle).read_bytes()
    header = loader.read_header(data, None, max_size=MAX_BUNDLE_BYTES).get("header_unverified")
    if not isinstance(header, dict) or not isinstance(header.get("name"), str) \
            or not isinstance(header.get("version"), str):
        raise BadInput(f"{'the bundle' if isinstance(bundle, bytes) else bundle} has no readable bundle header")
    name, version = header["name"], header["version"]
    offer = Offer(name=name, version=version, rollout=rollout, device_classes=tuple(device_classes),
                  min_runtime=min_runtime if min_runtime is not None else header.get("min_runtime"),
                  reissue_of=reissue_of, ab=tuple((g, round(p * 100)) for g, p in (ab or {}).items()))
    offer = Offer.from_custom(target_path(name, version), offer.to_custom())  # the device's own checks
    channel = Channel(directory)
    newest = max((parse_version(o.version) for o, _ in channel.offers() if o.name == name), default=None)
    if newest is not None and parse_version(version) <= newest:
        raise BadInput(f"{name} {version} is not above the published {'.'.join(map(str, newest))}: devices "
                       "never accept a lower version; pack a higher one")
    path = target_path(name, version)
    target = TargetFile.from_data(path, data, [HASH_ALGORITHM])
    target.unrecognized_fields["custom"] = offer.to_custom()
    stored = _stored(channel, target, version)
    files.write_atomic(stored, data)
    channel.targets.signed.targets[path] = target
    channel.commit(keys_dir, now=now, expires=expires)
    return Published(offer=offer, path=stored, length=target.length, sha256=target.hashes[HASH_ALGORITHM])


def publish_snapshot(snapshot: str | Path, directory: str | Path, keys_dir: str | Path, *,
                     now: datetime | None = None, expires: dict[str, timedelta] | None = None) -> Published:
    """Add the feature snapshot file ``snapshot`` (``edgevm snapshot build``) to the channel in
    ``directory`` and re-sign its metadata; only forward, as for bundles."""
    from vm.tools.snapshot import read_header

    data = Path(snapshot).read_bytes()
    header = read_header(data)
    name, version = header["name"], header["version"]
    if not isinstance(name, str) or not isinstance(version, str):
        raise BadInput(f"{snapshot} has no readable snapshot name and version")
    path = snapshot_target_path(name, version)
    offer = SnapshotOffer.from_custom(path, SnapshotOffer(name=name, version=version).to_custom())
    channel = Channel(directory)
    newest = max((parse_version(o.version) for o, _ in channel.snapshot_offers() if o.name == name), default=None)
    if newest is not None and parse_version(version) <= newest:
        raise BadInput(f"snapshot {name} {version} is not above the published {'.'.join(map(str, newest))}: "
                       "devices never accept a lower version; build a higher one")
    target = TargetFile.from_data(path, data, [HASH_ALGORITHM])
    target.unrecognized_fields["custom"] = offer.to_custom()
    stored = channel.dir / TARGETS_DIR / "snapshots" / name / f"{target.hashes[HASH_ALGORITHM]}.{version}.evs"
    files.write_atomic(stored, data)
    channel.targets.signed.targets[path] = target
    channel.commit(keys_dir, now=now, expires=expires)
    return Published(offer=offer, path=stored, length=target.length, sha256=target.hashes[HASH_ALGORITHM])
def _stored(channel: Channel, target: TargetFile, version: str) -> Path:
    """Where the channel keeps ``target``'s file (named by its content hash: consistent snapshots)."""
    name = target.path.rpartition("/")[0]
    return channel.dir / TARGETS_DIR / name / f"{target.hashes[HASH_ALGORITHM]}.{version}.evb"


def rollback(directory: str | Path, keys_dir: str | Path, bundle_keys: str | Path, name: str, *,
             version: str | None = None, now: datetime | None = None,
             expires: dict[str, timedelta] | None = None) -> Published:
    """Publish the contents of ``name``'s previous version again, as a new version above the newest
    (``version``, default: the newest with its last number + 1), re-sealed and re-signed with the
    bundle keys in ``bundle_keys`` (a keygen directory), for the devices the newest is for.

    Devices never go down a version, so a rollback moves them forward to the old contents. The
    previous version is the newest one published before the contents now newest: after rolling 2.0.0
    back to 1.0.0's contents as 2.0.1, a second rollback goes to what came before 1.0.0, not to 2.0.0.
    """
    channel = Channel(directory)
    mine = [(o, t) for o, t in channel.offers() if o.name == name]
    if not mine:
        raise NotFound(f"the channel publishes no bundle {name!r}")
    newest = mine[-1][0]
    origin = parse_version(newest.reissue_of or newest.version)
    older = [(o, t) for o, t in mine if parse_version(o.version) < origin]
    if not older:
        raise BadInput(f"{name} has no version published before {newest.reissue_of or newest.version} "
                       "to roll back to")
    previous, target = older[-1]
    path = _stored(channel, target, previous.version)
    try:
        data = path.read_bytes()
        target.verify_length_and_hashes(data)
    except FileNotFoundError:
        raise NotFound(f"{path} is missing from the channel") from None
    except LengthOrHashMismatchError:
        raise BadInput(f"{path} does not match its signed length and hash: restore it first") from None
    if version is None:
        numbers = parse_version(newest.version)
        version = ".".join(map(str, (*numbers[:-1], numbers[-1] + 1)))
    reissued = packer.reissue(data, bundle_keys, version, max_size=MAX_BUNDLE_BYTES)
    return publish(reissued, directory, keys_dir, rollout=newest.rollout, device_classes=newest.device_classes,
                   ab={g: bp / 100 for g, bp in newest.ab} or None,
                   reissue_of=previous.reissue_of or previous.version, now=now, expires=expires)


def rotate(directory: str | Path, keys_dir: str | Path, new_keys_dir: str | Path, *, now: datetime | None = None,
           expires: dict[str, timedelta] | None = None) -> list[str]:
    """Move the channel to the role keys in ``new_keys_dir`` (``init_keys``; the roles whose key is
    there are rotated): a new root version names them, signed by the root key the trusted root
    names and by the new root key (the TUF rule: a threshold of the old root's keys and of the new
    one's), then targets, snapshot and timestamp are re-signed with the new keys. The keys of the
    roles not rotated are copied into ``new_keys_dir``, which then holds the channel's whole key
    set; the old keys of rotated roles are revoked (devices refuse metadata signed by them). Run
    again after an interruption, it finishes the same rotation. Returns the rotated roles."""
    old, new = Path(keys_dir), Path(new_keys_dir)
    rotated = [r for r in ROLES if key_file(new, r).exists()]
    if not rotated:
        raise NotFound(f"{new} holds no channel role key (edgevm keygen --tuf --out {new} writes them)")
    channel = Channel(directory)
    now = now or datetime.now(UTC)
    signers = {role: _signer(new, role) for role in rotated}
    trusted = channel.root.signed
    if any(signers[r].public_key.keyid not in trusted.roles[r].keyids for r in rotated):
        for role in ROLES:
            if role not in rotated:
                try:
                    files.write_atomic(key_file(new, role), key_file(old, role).read_bytes(), secret=True)
                except FileNotFoundError:
                    raise NotFound(f"channel key {key_file(old, role)} not found") from None
        root = Metadata[Root].from_bytes(channel.root.to_bytes()).signed
        for role, signer in signers.items():
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(signer.public_key, role)
        root.version += 1
        root.expires = _expiry(Root.type, now, expires)
        md = Metadata(root)
        md.sign(_signer(old, Root.type), append=True)
        if Root.type in signers:
            md.sign(signers[Root.type], append=True)
        try:
            trusted.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except UnsignedMetadataError:
            raise SignatureError(f"{key_file(old, Root.type)} is not the root key this channel's root trusts") from None
        data = md.to_bytes(_SERIALIZER)
        files.write_atomic(channel.meta_dir / f"{root.version}.{Root.type}.json", data)
        files.write_atomic(channel.meta_dir / f"{Root.type}.json", data)
        channel.root = md
    channel.commit(new, now=now, expires=expires)
    return rotated


def refresh(directory: str | Path, keys_dir: str | Path, *, now: datetime | None = None,
            expires: dict[str, timedelta] | None = None) -> None:
    """Re-sign the snapshot and timestamp with fresh expiry dates (run before the timestamp expires)."""
    Channel(directory).commit(keys_dir, now=now, expires=expires, targets_changed=False)


def status(directory: str | Path) -> dict[str, Any]:
    """What the channel publishes, to whom and until when, as plain data."""
    channel = Channel(directory)
    roles = {md.signed.type: {"version": md.signed.version, "expires": md.signed.expires.isoformat()}
             for md in (channel.root, channel.targets, channel.snapshot, channel.timestamp)}
    bundles = [{"name": o.name, "version": o.version, "rollout": o.rollout,
                "device_classes": list(o.device_classes), "min_runtime": o.min_runtime, "ab": dict(o.ab),
                "length": t.length, "sha256": t.hashes.get(HASH_ALGORITHM), "reissue_of": o.reissue_of}
               for o, t in channel.offers()]
    snapshots = [{"name": o.name, "version": o.version, "length": t.length, "sha256": t.hashes.get(HASH_ALGORITHM)}
                 for o, t in channel.snapshot_offers()]
    return {"channel": str(channel.dir), "roles": roles, "bundles": bundles, "snapshots": snapshots}


def format_status(doc: dict[str, Any]) -> str:
    """``status`` as a table for people."""
    lines = [f"channel {doc['channel']}"]
    lines += [f"  {role:<10} v{r['version']:<5} expires {r['expires']}" for role, r in doc["roles"].items()]
    rows = [("bundle", "version", "rollout", "device classes", "min runtime", "bytes", "contents of")]
    rows += [(b["name"], b["version"], f"{b['rollout']:g}%", ",".join(b["device_classes"]) or "all",
              b["min_runtime"] or "-", str(b["length"]), b["reissue_of"] or "-") for b in doc["bundles"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not doc["bundles"]:
        lines.append("  (nothing published)")
    lines += [f"  snapshot {s['name']} {s['version']} ({s['length']} bytes)" for s in doc.get("snapshots", [])]
    return "\n".join(lines)


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)
