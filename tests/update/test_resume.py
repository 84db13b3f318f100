"""Resuming a bundle download cut short, over a loopback server that counts the bytes it sends:
the next check asks for the rest (``Range: bytes=N-``) and verifies the whole file's signed length
and hash before anything is activated. A server that ignores the range, answers a wrong one or
serves other bytes, and a partial file that was damaged, all end in a fresh whole download, never
in a target that does not match its metadata; the length cap holds across a resume."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_channel_attacks import refused, serving, still_v1, target_file  # noqa: F401 - fixtures
from update_fixtures import channel, device, events, features, http_channel  # noqa: F401 - fixtures


def partial_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "staging" / "feat-2.0.0.part.partial"


def target_ranges(http_channel) -> list[str | None]:
    """The Range header of each request for the v2 bundle, in order."""
    return [r for path, r in http_channel.server.ranges if path.endswith(".2.0.0.evb")]


def cut_short(serving, http_channel, tmp_path: Path, fault: str = "truncate") -> int:
    """A check whose download of v2 stops halfway; the bytes kept for the next one."""
    http_channel.faults["/targets/"] = fault
    refused(serving.update_now(), "not_found" if fault == "truncate" else "timeout")
    http_channel.faults.clear()
    still_v1(serving)
    return partial_file(tmp_path).stat().st_size


@pytest.mark.parametrize("fault", ["truncate", "stall"])
def test_a_download_cut_short_resumes_where_it_stopped(serving, channel, http_channel, tmp_path, fault) -> None:
    length = target_file(channel, "2.0.0").stat().st_size
    kept = cut_short(serving, http_channel, tmp_path, fault)
    assert kept == length // 2
    report = serving.update_now()
    assert events(report) == ["checked", "downloaded", "activated"], report
    assert serving.infer("s", "b", {"x": 1})["version"] == "2.0.0"
    assert target_ranges(http_channel) == [None, f"bytes={kept}-"]
    assert http_channel.server.served[target_file(channel, "2.0.0").name] == length  # each byte sent once
    assert not partial_file(tmp_path).exists()


@pytest.mark.parametrize("fault, requests", [
    ("ignore-range", 2),  # a 200 with the whole file: written from the start
    ("bad-range", 3),     # a 206 for another range: dropped, the whole file asked for again
])
def test_a_server_that_does_not_honour_the_range_gets_a_fresh_download(
        serving, channel, http_channel, tmp_path, fault: str, requests: int) -> None:
    kept = cut_short(serving, http_channel, tmp_path)
    http_channel.faults["/targets/"] = fault
    report = serving.update_now()
    assert events(report) == ["checked", "downloaded", "activated"], report
    assert serving.infer("s", "b", {"x": 1})["version"] == "2.0.0"
    assert target_ranges(http_channel) == [None, f"bytes={kept}-", None][:requests]


def test_a_damaged_partial_file_is_dropped_and_downloaded_again(serving, http_channel, tmp_path) -> None:
    cut_short(serving, http_channel, tmp_path)
    part = partial_file(tmp_path)
    data = bytearray(part.read_bytes())
    data[0] ^= 0xFF  # a disk fault, or the bytes of an older file under the same name
    part.write_bytes(bytes(data))
    report = serving.update_now()
    assert events(report) == ["checked", "downloaded", "activated"], report
    assert serving.infer("s", "b", {"x": 1})["version"] == "2.0.0"
    assert len(target_ranges(http_channel)) == 3 and target_ranges(http_channel)[2] is None  # resumed, then anew


def test_a_resumed_download_whose_rest_is_tampered_never_becomes_the_target(
        serving, channel, http_channel, tmp_path) -> None:
    cut_short(serving, http_channel, tmp_path)
    path = target_file(channel, "2.0.0")
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # the server's copy changes under the device
    refused(serving.update_now(), "bad_input")
    still_v1(serving)
    assert not partial_file(tmp_path).exists()
    assert target_ranges(http_channel)[1].startswith("bytes=")
    path.write_bytes(good)
    assert events(serving.update_now())[-1] == "activated"


def test_the_length_cap_holds_across_a_resume(serving, channel, http_channel, tmp_path) -> None:
    path = target_file(channel, "2.0.0")
    good = path.read_bytes()
    kept = cut_short(serving, http_channel, tmp_path)
    path.write_bytes(good + b"\0" * 1000)  # the rest the server sends now is longer than signed
    refused(serving.update_now(), "resource")
    assert target_ranges(http_channel)[1] == f"bytes={kept}-"
    assert not partial_file(tmp_path).exists()
    still_v1(serving)
    path.write_bytes(good)
    assert events(serving.update_now())[-1] == "activated"
