"""``edgevm update-client``: the TUF conformance suite's client-under-test protocol (init, refresh,
download; exit 0 on success, 1 on any failure), run as a separate process against a channel served
on loopback, with real TUF metadata. It is the updater's own client: it resumes a download cut
short as the updater does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from tuf.api.metadata import Metadata, Timestamp
from update_fixtures import channel, features, http_channel  # noqa: F401 - fixtures

from vm.tools import publish

NAME = "feat/1.0.0.evb"


def client(metadata_dir: Path, *args: str, url: str | None = None, target_dir: Path | None = None,
           name: str = NAME) -> subprocess.CompletedProcess:
    """Run ``edgevm update-client`` as the conformance suite does (options before the step)."""
    cmd = [sys.executable, "-m", "vm.host.cli", "update-client", "--metadata-dir", str(metadata_dir)]
    if url is not None:
        cmd += ["--metadata-url", f"{url}/metadata"]
    if target_dir is not None:
        cmd += ["--target-name", name, "--target-base-url", f"{url}/targets", "--target-dir", str(target_dir)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def published(make_bundle, channel) -> bytes:
    return channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0")).path.read_bytes()


@pytest.fixture
def trusting(tmp_path: Path, channel) -> Path:
    """A metadata directory initialised with the channel's root."""
    md = tmp_path / "client-metadata"
    md.mkdir()
    done = client(md, "init", str(channel.root))
    assert done.returncode == 0, done.stderr
    return md


def target_requests(http_channel) -> list[str]:
    return [p for p in http_channel.server.requests if p.startswith("/targets/")]


def test_init_refresh_download_and_no_second_fetch(published, trusting, http_channel, tmp_path) -> None:
    assert http_channel.server.requests == []  # init asks nothing of the repository
    done = client(trusting, "refresh", url=http_channel.url)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in trusting.iterdir() if p.is_file()) == \
        ["root.json", "snapshot.json", "targets.json", "timestamp.json"]  # non-versioned names
    out = tmp_path / "targets"
    done = client(trusting, "download", url=http_channel.url, target_dir=out)
    assert done.returncode == 0, done.stderr
    assert (out / quote(NAME, safe="")).read_bytes() == published
    assert len(target_requests(http_channel)) == 1
    assert client(trusting, "download", url=http_channel.url, target_dir=out).returncode == 0
    assert len(target_requests(http_channel)) == 1  # already there with matching hashes: not fetched
    (out / quote(NAME, safe="")).write_bytes(b"changed")
    assert client(trusting, "download", url=http_channel.url, target_dir=out).returncode == 0
    assert len(target_requests(http_channel)) == 2
    assert (out / quote(NAME, safe="")).read_bytes() == published


def test_a_download_cut_short_resumes_on_the_next_call(published, trusting, http_channel, tmp_path) -> None:
    out = tmp_path / "targets"
    http_channel.faults["/targets/"] = "truncate"
    done = client(trusting, "download", url=http_channel.url, target_dir=out)
    assert done.returncode == 1 and "not_found" in done.stderr, done.stderr
    assert not (out / quote(NAME, safe="")).exists()
    http_channel.faults.clear()
    assert client(trusting, "download", url=http_channel.url, target_dir=out).returncode == 0
    assert (out / quote(NAME, safe="")).read_bytes() == published
    ranges = [r for p, r in http_channel.server.ranges if p.startswith("/targets/")]
    assert ranges == [None, f"bytes={len(published) // 2}-"]


def test_init_fails_on_what_is_not_a_root(tmp_path: Path) -> None:
    bad = tmp_path / "root.json"
    for content in (b"", b"{}", b'{"signed": {"_type": "targets"}, "signatures": []}'):
        bad.write_bytes(content)
        done = client(tmp_path / "md", "init", str(bad))
        assert done.returncode == 1 and "bad_input" in done.stderr, done.stderr
    done = client(tmp_path / "md", "init", str(tmp_path / "missing.json"))
    assert done.returncode == 1, done.stderr


def test_refresh_fails_without_trust_or_a_reachable_repository(published, trusting, tmp_path) -> None:
    assert client(tmp_path / "empty", "refresh", url="http://127.0.0.1:9").returncode == 1  # never init
    done = client(trusting, "refresh", url="http://127.0.0.1:9")
    assert done.returncode == 1 and "not_found" in done.stderr, done.stderr
    assert client(trusting, "refresh").returncode == 1  # no --metadata-url


def test_refresh_fails_on_a_replayed_timestamp_and_keeps_the_trusted_one(
        make_bundle, channel, trusting, http_channel) -> None:
    channel.publish(make_bundle(features("1.0.0"), name="feat", version="1.0.0"))
    old = (channel.dir / "metadata" / "timestamp.json").read_bytes()
    channel.publish(make_bundle(features("2.0.0"), name="feat", version="2.0.0"))
    assert client(trusting, "refresh", url=http_channel.url).returncode == 0
    (channel.dir / "metadata" / "timestamp.json").write_bytes(old)
    done = client(trusting, "refresh", url=http_channel.url)
    assert done.returncode == 1 and "downgrade" in done.stderr, done.stderr
    assert Metadata.from_bytes((trusting / "timestamp.json").read_bytes()).signed.version == 3


def test_refresh_fails_on_metadata_signed_by_an_untrusted_key(published, channel, trusting, http_channel,
                                                              tmp_path) -> None:
    other = tmp_path / "other-keys"
    publish.init_keys(other)
    path = channel.dir / "metadata" / "timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.version += 1
    md.signatures.clear()
    md.sign(publish._signer(other, Timestamp.type))
    path.write_bytes(md.to_bytes())
    done = client(trusting, "refresh", url=http_channel.url)
    assert done.returncode == 1 and "signature" in done.stderr, done.stderr


def test_download_fails_on_an_unknown_or_tampered_target(published, channel, trusting, http_channel,
                                                         tmp_path) -> None:
    out = tmp_path / "targets"
    done = client(trusting, "download", url=http_channel.url, target_dir=out, name="feat/9.9.9.evb")
    assert done.returncode == 1 and "not_found" in done.stderr, done.stderr
    (stored,) = (channel.dir / "targets" / "feat").glob("*.evb")
    stored.write_bytes(published[:-1] + bytes([published[-1] ^ 1]))
    done = client(trusting, "download", url=http_channel.url, target_dir=out)
    assert done.returncode == 1 and "bad_input" in done.stderr, done.stderr
    assert list(out.iterdir()) == []  # nothing that does not match becomes a target
    assert client(trusting, "download", target_dir=out, url=http_channel.url, name="").returncode == 1
