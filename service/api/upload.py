"""The video of a multipart ``POST /recognize``: found in its field, checked, saved to a temp file."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from starlette.datastructures import FormData, UploadFile

from perception.video import VIDEO_SUFFIXES
from service.core.errors import ServiceError, too_large

VIDEO_FIELD = "file"  # the multipart field the video goes in (docs/api.md)

# content types of videos whose file name has none of VIDEO_SUFFIXES
_VIDEO_TYPES = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-msvideo": ".avi",
    "video/avi": ".avi",
}


def video_upload(form: FormData, limit: int) -> tuple[UploadFile, str]:
    """The uploaded video and the file suffix to save it under; 4xx when it is not one."""
    upload = form.get(VIDEO_FIELD)
    if not isinstance(upload, UploadFile):
        elsewhere = [k for k, v in form.multi_items() if isinstance(v, UploadFile)]
        got = f"a file in the field {elsewhere[0]!r}" if elsewhere else "no file at all"
        raise ServiceError(
            422,
            "missing_file",
            f"no file in the multipart field {VIDEO_FIELD!r} (the request has {got})",
            f"send the video as the multipart field {VIDEO_FIELD!r} (curl -F {VIDEO_FIELD}=@clip.mp4)",
        )
    filename = upload.filename or "upload"
    suffix = Path(filename).suffix.lower()
    ctype = (upload.content_type or "").lower()
    if suffix not in VIDEO_SUFFIXES:
        if ctype not in _VIDEO_TYPES:
            raise ServiceError(
                415,
                "unsupported_media_type",
                f"{filename!r} ({ctype or 'no content type'}) is not a supported video",
                f"send one of {', '.join(s.lstrip('.') for s in VIDEO_SUFFIXES)}; "
                "skeletons go as application/json",
            )
        suffix = _VIDEO_TYPES[ctype]
    size = upload.size if upload.size is not None else 0
    if size > limit:  # the file itself, without the multipart framing the middleware allows
        raise too_large(size, limit, "SKELACT_MAX_UPLOAD_MB")
    if size == 0:
        raise ServiceError(
            422,
            "undecodable_video",
            f"{filename}: upload is empty (0 bytes)",
            "check the file path in your client",
        )
    return upload, suffix


def save_upload(upload: UploadFile, suffix: str) -> Path:
    """Copy the upload to a temp file (blocking: run it on the I/O pool)."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="skelact-upload-")
    with open(fd, "wb") as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return Path(name)
