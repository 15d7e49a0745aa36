"""The offline ``pose_landmarker_full`` bundle: built from the model files inside the installed
mediapipe wheel (nothing is downloaded), cached per mediapipe version, verified before use."""

from __future__ import annotations

import os
import threading
import zipfile
from importlib import metadata as importlib_metadata
from pathlib import Path

__all__ = [
    "DETECTOR_FILE",
    "LANDMARKS_FILE",
    "build_pose_bundle",
    "cache_dir",
    "ensure_pose_bundle",
    "mediapipe_version",
    "pose_bundle_path",
]

DETECTOR_FILE = "pose_detector.tflite"
LANDMARKS_FILE = "pose_landmarks_detector.tflite"
# Input normalisation of the two BlazePose models, as in MediaPipe's own legacy graphs:
# pose_detection_cpu.pbtxt feeds the detector [-1, 1] (mean 127.5, std 127.5);
# pose_landmark_by_roi_cpu.pbtxt feeds the landmark model [0, 1] (mean 0, std 255).
DETECTOR_NORM = (127.5, 127.5)
LANDMARKS_NORM = (0.0, 255.0)
_BUNDLE_FORMAT = 1  # bump when the bundle recipe changes, so caches rebuild
_BUNDLE_LOCK = threading.Lock()


def _mediapipe_dir() -> Path:
    import mediapipe

    return Path(mediapipe.__file__).resolve().parent


def mediapipe_version() -> str:
    try:
        return importlib_metadata.version("mediapipe")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - odd installs
        import mediapipe

        return str(getattr(mediapipe, "__version__", "unknown"))


def cache_dir() -> Path:
    """Writable cache root: env ``SKELACT_CACHE_DIR``, default ``~/.cache/skelact``."""
    return Path(os.environ.get("SKELACT_CACHE_DIR") or Path.home() / ".cache" / "skelact")


def pose_bundle_path() -> Path:
    """Where the offline ``pose_landmarker_full`` bundle for this mediapipe version lives."""
    return cache_dir() / f"mediapipe-{mediapipe_version()}" / f"pose_landmarker_full.v{_BUNDLE_FORMAT}.task"


def _with_image_metadata(model: bytes, name: str, norm: tuple[float, float]) -> bytes:
    """TFLite model + metadata declaring an RGB image input and its normalisation.

    The Tasks graphs read the input normalisation from this metadata; the bare models in the
    wheel (made for the legacy graphs, which hard-code it) have none.
    """
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, "BlazePose model from the mediapipe wheel, metadata added offline")
    writer.add_image_input(norm_mean=[norm[0]], norm_std=[norm[1]])
    populated, _ = writer.populate()
    return bytes(populated)


def build_pose_bundle(out: Path) -> Path:
    """Write the ``.task`` bundle to ``out`` (atomic rename; byte-identical on every build).

    The bundle is an uncompressed zip of ``pose_detector.tflite`` and
    ``pose_landmarks_detector.tflite`` with fixed timestamps, entries 4-byte aligned (as
    MediaPipe's own bundler does, so the models can be memory-mapped).
    """
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    root = _mediapipe_dir() / "modules"
    detector = (root / "pose_detection" / "pose_detection.tflite").read_bytes()
    landmarks = (root / "pose_landmark" / "pose_landmark_full.tflite").read_bytes()
    members = {
        DETECTOR_FILE: _with_image_metadata(detector, "pose_detector", DETECTOR_NORM),
        LANDMARKS_FILE: _with_image_metadata(landmarks, "pose_landmarks_detector", LANDMARKS_NORM),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with model_asset_bundle_utils.AlignZipFile(str(tmp), mode="w", alignment=4) as zf:
            for name, content in members.items():
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, content)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


_VERIFIED_BUNDLES: dict[Path, tuple[int, int]] = {}  # path -> (mtime_ns, size) when last verified


def ensure_pose_bundle() -> Path:
    """Path of the bundle, building it on first use (checked by zip integrity, not trusted blindly).

    The CRC check reads the whole 9 MB bundle; it runs again only when the file changed, so that
    opening a stream's estimator does not pay for it each time.
    """
    path = pose_bundle_path()
    with _BUNDLE_LOCK:
        if path.exists():
            stat = path.stat()
            if _VERIFIED_BUNDLES.get(path) == (stat.st_mtime_ns, stat.st_size):
                return path
            try:
                with zipfile.ZipFile(path) as zf:
                    names = set(zf.namelist())
                    if zf.testzip() is None and names == {DETECTOR_FILE, LANDMARKS_FILE}:
                        _VERIFIED_BUNDLES[path] = (stat.st_mtime_ns, stat.st_size)
                        return path
            except zipfile.BadZipFile:
                pass
        _VERIFIED_BUNDLES.pop(path, None)
        return build_pose_bundle(path)
