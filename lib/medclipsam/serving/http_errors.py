"""Our errors as HTTP answers: bad input is a 4xx whose ``detail`` names the problem and the fix,
never a bare 500 with a traceback; a failing PACS is a 502.

One table, :data:`STATUS`, from error class to status (most specific class first); MONAI Label's
own not-found exceptions map to 404 as well.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..errors import ConflictError, MedClipSamError, NotFoundError, RefusedError, TooLargeError, UpstreamError

logger = logging.getLogger(__name__)

STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (RefusedError, 403),
    (ConflictError, 409),
    (TooLargeError, 413),
    (UpstreamError, 502),
    (MedClipSamError, 400),
)


def status_of(error: Exception) -> int | None:
    """The HTTP status for ``error``, or None when it is not one of the errors the table knows."""
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    try:
        from monailabel.interfaces.exception import ImageNotFoundException, LabelNotFoundException
    except ImportError:                                     # pragma: no cover - MONAI Label is installed
        return None
    if isinstance(error, (ImageNotFoundException, LabelNotFoundException)):
        return 404
    return None


def as_http(error: Exception) -> Any:
    """``error`` as a FastAPI ``HTTPException`` when :func:`status_of` knows it; else ``error`` unchanged."""
    from fastapi import HTTPException

    status = status_of(error)
    if status is None:
        return error
    detail = getattr(error, "msg", None) or str(error)
    return HTTPException(status_code=status, detail=detail)


def json_object(text: str | None, field: str, example: str = '{"label_info": [{"name": "tumor", "idx": 1}]}') -> dict:
    """A form field that must hold a JSON object (``params``, ``info``); InputError otherwise."""
    from ..errors import InputError

    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InputError(f"the form field {field!r} is not JSON ({e}); send a JSON object, e.g. {example}") from None
    if not isinstance(value, dict):
        raise InputError(f"the form field {field!r} must be a JSON object, e.g. {example}")
    return value
