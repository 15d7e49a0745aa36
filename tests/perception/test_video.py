"""Video/image decoding on real clips, and clear errors for bad, empty and truncated input."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.video import (
    DecodeError,
    Frame,
    ImageDecodeError,
    VideoDecodeError,
    VideoReader,
    decode_image,
    probe_video,
    resize_max_side,
)
from tests.conftest import require_data
from tests.service_helpers import read_video


def iter_frames(path: Path) -> Iterator[Frame]:
    return iter(VideoReader(path))


def test_probe_real_avi_metadata() -> None:
    info = probe_video(require_data("clips", "felix_exercise.avi"))
    assert (info.width, info.height, info.frame_count) == (384, 288, 393)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(39.3)
    assert info.codec  # e.g. "fmp4"


def test_iterates_real_mp4_with_increasing_timestamps() -> None:
    path = require_data("upfall", "Activity1", "Trial1Cam1.mp4")
    info, frames = read_video(path)
    assert info.fps == pytest.approx(18.0) and (info.width, info.height) == (640, 480)
    assert len(frames) == info.frame_count > 100
    ts = np.array([f.timestamp_s for f in frames])
    assert ts[0] == pytest.approx(0.0) and np.all(np.diff(ts) > 0)
    assert np.diff(ts).mean() == pytest.approx(1 / 18, rel=0.01)
    f = frames[10]
    assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8 and f.rgb.flags.c_contiguous
    assert [fr.index for fr in frames[:3]] == [0, 1, 2]


def test_frames_are_rgb_not_bgr() -> None:
    path = require_data("clips", "felix_exercise.avi")
    first = next(iter_frames(path))
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    assert np.array_equal(first.rgb, bgr[:, :, ::-1])


def test_lazy_iteration_and_downscale() -> None:
    path = require_data("clips", "mmaction2_demo_skeleton.mp4")
    with VideoReader(path, max_side=640) as reader:
        assert (reader.info.width, reader.info.height) == (1920, 1080)
        frames = list(itertools.islice(reader, 3))
    assert [f.rgb.shape for f in frames] == [(360, 640, 3)] * 3
    assert frames[0].scale == pytest.approx(1 / 3)


def test_resize_never_upscales() -> None:
    img = np.zeros((100, 50, 3), np.uint8)
    out, scale = resize_max_side(img, 400)
    assert out is img and scale == 1.0


def test_missing_and_zero_byte_files(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="does not exist"):
        probe_video(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty") as err:
        VideoReader(empty)
    assert err.value.reason and isinstance(err.value, DecodeError)


def test_garbage_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match=r"not a readable video|no decodable frames"):
        list(iter_frames(bad))


def test_truncated_mp4_without_index(tmp_path: Path) -> None:
    data = require_data("clips", "stgcn_ta_chi.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the moov atom is at the end: unreadable
    with pytest.raises(VideoDecodeError):
        read_video(cut)


def test_truncated_avi_raises_after_partial_frames(tmp_path: Path) -> None:
    data = require_data("clips", "felix_exercise.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:400_000])
    reader = VideoReader(cut)
    seen = 0
    with pytest.raises(VideoDecodeError, match="truncated"):
        for _ in reader:
            seen += 1
    assert 0 < seen < 393
    _, frames = read_video(cut, allow_truncated=True)  # opt-in: keep what decodes
    assert len(frames) == seen


def test_decode_image_jpeg_and_png() -> None:
    frame = next(iter_frames(require_data("clips", "felix_exercise.avi"))).rgb
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    png = cv2.imencode(".png", bgr)[1].tobytes()
    assert np.array_equal(decode_image(png), frame)  # lossless, and back in RGB order
    jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    out = decode_image(jpg, max_side=192)
    assert out.shape == (144, 192, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("data", [b"", b"not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 64])
def test_decode_image_errors(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(data)
