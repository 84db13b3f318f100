"""The updater's persisted state: one small JSON file, replaced atomically (``vm.bundle.files``).

Per bundle name: the active version, the last version that passed probation (``last_good``), the
versions known bad (never retried), the highest version ever activated (the persisted downgrade
floor), the A/B group this device is in for each kept version (``groups``), and how many runs in a
row ended without a clean shutdown while a version on probation was active (``crashes``: the crash
loop rule). ``running`` says a runtime is serving from this state now: a start that finds it set
knows the last run did not shut down cleanly. Bundle files live beside it in ``bundles/NAME/VERSION.evb``, each written whole
before the state names it, so a ``kill -9`` at any moment leaves a state whose files exist.
"""
from __future__ import annotations

import json
import logging
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vm.bundle import files
from vm.bundle.versions import parse_version

log = logging.getLogger("edgevm.update")
STATE_FILE = "state.json"
BUNDLES_DIR = "bundles"
FORMAT = 1


@dataclass
class BundleState:
    """What the updater knows of one bundle name."""

    active: str | None = None
    last_good: str | None = None
    highest: str | None = None
    bad: list[str] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)
    crashes: int = 0

    def floor_allows(self, version: str) -> bool:
        """Whether ``version`` is above every version ever activated (a new one may be)."""
        return self.highest is None or parse_version(version) > parse_version(self.highest)


@dataclass
class State:
    """The whole state file."""

    device_id: str = field(default_factory=lambda: secrets.token_hex(16))
    bundles: dict[str, BundleState] = field(default_factory=dict)
    running: bool = False

    def of(self, name: str) -> BundleState:
        return self.bundles.setdefault(name, BundleState())

    @staticmethod
    def bundle_file(state_dir: Path, name: str, version: str) -> Path:
        return state_dir / BUNDLES_DIR / name / f"{version}.evb"

    @classmethod
    def load(cls, state_dir: Path) -> State:
        """The state in ``state_dir``; a fresh one if there is none. A damaged file (which atomic
        writes never leave; a disk fault or tampering can) is set aside and also starts afresh:
        the device then serves its fallback bundles."""
        path = state_dir / STATE_FILE
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"state format {doc.get('format')!r}")
            bundles = {}
            for name, b in doc["bundles"].items():
                groups, crashes = b.get("groups", {}), b.get("crashes", 0)
                if not isinstance(groups, dict) or not all(isinstance(g, str) for g in groups.values()) \
                        or isinstance(crashes, bool) or not isinstance(crashes, int) or crashes < 0:
                    raise ValueError(f"bundle {name}: bad groups or crashes")
                bs = BundleState(active=b["active"], last_good=b["last_good"], highest=b["highest"],
                                 bad=list(b["bad"]), groups=dict(groups), crashes=crashes)
                for v in (bs.active, bs.last_good, bs.highest, *bs.bad, *bs.groups):
                    if v is not None:
                        parse_version(v)
                bundles[str(name)] = bs
            return cls(device_id=str(doc["device_id"]), bundles=bundles, running=doc.get("running") is True)
        except FileNotFoundError:
            return cls()
        except Exception as exc:
            log.error("update state %s is damaged (%s); set aside, starting from the fallback bundles", path, exc)
            path.replace(path.with_suffix(f".damaged-{secrets.token_hex(4)}"))
            return cls()

    def save(self, state_dir: Path) -> None:
        doc: dict[str, Any] = {"format": FORMAT, "device_id": self.device_id, "running": self.running,
                               "bundles": {n: asdict(b) for n, b in sorted(self.bundles.items())}}
        files.write_atomic(state_dir / STATE_FILE, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

    def prune(self, state_dir: Path, name: str, keep: set[str]) -> None:
        """Remove bundle files of ``name`` but the versions in ``keep`` (active and last good), and
        their A/B groups (dropped from the file at the next save)."""
        bs = self.bundles.get(name)
        if bs is not None:
            bs.groups = {v: g for v, g in bs.groups.items() if v in keep}
        d = state_dir / BUNDLES_DIR / name
        if not d.is_dir():
            return
        removed = False
        for p in d.iterdir():
            if p.suffix == ".evb" and p.stem not in keep or p.name.startswith("."):
                p.unlink(missing_ok=True)
                removed = True
        if removed:
            files.fsync_dir(d)
