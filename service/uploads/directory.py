"""Which running upload an `upload_id` names, and which ones ended lately (for a clear 410)."""

from __future__ import annotations

from collections import OrderedDict

from ..jobs.layout import MANAGER_CHUNK_SIZE
from ..refusals import UnknownUpload, UploadEnded
from .upload import FORM_ALLOWANCE, Upload

ENDED_MEMORY = 1024  # how many ended upload ids are remembered


class UploadDirectory:
    def __init__(self) -> None:
        self._running: dict[str, Upload] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()

    def add(self, upload: Upload) -> None:
        """Route the upload's chunks to it; its id must not be running (`is_running`)."""
        self._running[upload.upload_id] = upload

    def is_running(self, upload_id: str) -> bool:
        return upload_id in self._running

    def remove(self, upload: Upload, why: str) -> None:
        """Forget `upload`, and only it: an entry under its id that is another upload stays."""
        if self._running.get(upload.upload_id) is not upload:
            return
        del self._running[upload.upload_id]
        self._ended[upload.upload_id] = why
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def find(self, upload_id: str) -> Upload:
        """The running upload; raise `UploadEnded` or `UnknownUpload` when there is none."""
        upload = self._running.get(upload_id)
        if upload is not None:
            return upload
        why = self._ended.get(upload_id)
        if why is not None:
            raise UploadEnded(f"upload {upload_id} has ended: {why}")
        raise UnknownUpload(f"upload {upload_id[:64]!r} is not known to this service")

    def body_limit(self) -> int:
        """The most bytes any chunk POST may have before its upload is known."""
        uploads = self._running.values()
        return max((u.body_limit for u in uploads), default=MANAGER_CHUNK_SIZE + FORM_ALLOWANCE)
