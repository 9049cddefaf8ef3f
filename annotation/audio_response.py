"""One HTTP answer for a clip's audio, shared by the app's player and Label Studio's.

Single-range requests (``Range: bytes=a-b``, ``bytes=a-``, ``bytes=-n``) get a 206 with
``Content-Range``, so players can seek without downloading the file; an unsatisfiable range gets a
416; a malformed or multi-range header is ignored and the whole file sent (RFC 9110 allows it).
Every answer carries the served copy's headers (type, neutral name, nosniff) and ``Accept-Ranges``.

Behind nginx, ``REFRAIN_AUDIO_ACCEL_PREFIX`` hands files under ``MEDIA_ROOT`` (the tag-free served
copies, uploads) to the proxy instead: the answer is empty with ``X-Accel-Redirect: <prefix><path
under MEDIA_ROOT>``, and nginx sends the file from its ``internal`` location, ranges included, so no
gunicorn thread streams audio (``deploy/nginx.conf``). The permission check stays here.

With a bucket media storage the answer is a redirect to a presigned URL of the tag-free copy (named
by its content hash, with a neutral download name): S3 answers ranges itself, and the link is
private to the redirect (``no-store``), valid for ``REFRAIN_PRESIGNED_URL_SECONDS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)

from annotation.models import Clip
from annotation.services.audio_source import ServedAudio
from annotation.services.clip_files import served_audio_headers

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


def _file_slice(path: Path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            block = fh.read(min(_CHUNK, remaining))
            if not block:
                return
            remaining -= len(block)
            yield block


def _accel_location(path: Path) -> str | None:
    """The proxy's internal URI of ``path``, when the proxy serves it (a file under MEDIA_ROOT)."""
    prefix = settings.REFRAIN_AUDIO_ACCEL_PREFIX
    if not prefix:
        return None
    try:
        relative = path.resolve().relative_to(Path(settings.MEDIA_ROOT).resolve())
    except ValueError:
        return None  # an original in an import root: streamed here
    return f"{prefix.rstrip('/')}/{quote(relative.as_posix())}"


def audio_response(request: HttpRequest, *, clip: Clip, served: ServedAudio) -> HttpResponse:
    """``served`` (the clip's served copy, or its original for an admin) as an answer to
    ``request``: a redirect to its presigned URL, or the whole local file, or the one byte range
    it asks for."""
    if served.url is not None:
        response: HttpResponse = HttpResponseRedirect(served.url)
        response["Cache-Control"] = "private, no-store"  # the link expires; never cache it
        response["X-Content-Type-Options"] = "nosniff"
        return response
    assert served.path is not None
    path = served.path
    headers = served_audio_headers(clip=clip, path=path)
    content_type = headers.pop("Content-Type")
    location = _accel_location(path)
    if location is not None:
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = location
        for name, value in headers.items():
            response[name] = value
        return response
    size = path.stat().st_size
    header = request.headers.get("Range", "").strip()
    match = _RANGE.match(header) if header else None
    if match and match.groups() != ("", ""):
        first, last = match.groups()
        if first == "":
            start, end = max(size - int(last), 0), size - 1  # suffix: the last N bytes
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        length = end - start + 1
        response = StreamingHttpResponse(
            _file_slice(path, start, length), status=206, content_type=content_type
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(length)
    else:
        response = FileResponse(path.open("rb"), content_type=content_type)
    response["Accept-Ranges"] = "bytes"
    for name, value in headers.items():
        response[name] = value
    return response
