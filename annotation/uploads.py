"""An upload handler that stops writing a file to disk once it passes REFRAIN_MAX_UPLOAD_BYTES.

Django spools uploads over FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file before any view runs, so
a view-level size check alone would still let one request fill the disk. This handler keeps counting
the bytes of a too-large file but drops them; the file it hands over reports the true size, which
:func:`annotation.services.clips.clip_upload` then refuses with the reason. (Put a body-size limit in
the reverse proxy too, so the bytes are not even received.)
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler


class BoundedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > int(settings.REFRAIN_MAX_UPLOAD_BYTES):
            return None  # counted, not written
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        uploaded = super().file_complete(file_size)
        if uploaded is not None:
            uploaded.size = max(file_size, self.received)
        return uploaded
