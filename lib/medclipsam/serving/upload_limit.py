"""Upload size limits enforced before a request body is read.

FastAPI parses a multipart body (spooling files to disk) before an endpoint runs, so a limit
checked in the endpoint comes after a 1 GB upload has been received. :class:`UploadLimit` is an
ASGI middleware that answers from the headers alone: a ``PUT``/``POST`` whose ``Content-Length``
is over the limit for its path gets 413, and one without a length (chunked) gets 411. Every client
of the server (3D Slicer, OHIF, ``requests``, ``curl -F``) sends the length of a multipart body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

MIB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    default_bytes: int = 2048 * MIB                                # images, sessions, infer uploads
    by_path: dict[str, int] = field(default_factory=dict)          # path suffix → bytes (e.g. /datastore/label)

    def for_path(self, path: str) -> int:
        for suffix, limit in self.by_path.items():
            if path.rstrip("/").endswith(suffix.rstrip("/")):
                return limit
        return self.default_bytes


async def _answer(send: Callable[[dict], Awaitable[None]], status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class UploadLimit:
    """ASGI middleware (module docstring)."""

    def __init__(self, app: Any, limits: UploadLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") == "http" and scope.get("method") in ("PUT", "POST"):
            headers = {k.lower(): v for k, v in scope.get("headers", [])}
            limit = self.limits.for_path(scope.get("path", ""))
            length = headers.get(b"content-length")
            if length is None:
                if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                    return await _answer(send, 411, "send the upload with a Content-Length header (chunked "
                                                    "uploads are not accepted)")
            else:
                try:
                    n = int(length)
                except ValueError:
                    return await _answer(send, 400, "the Content-Length header is not a number")
                if n > limit:
                    return await _answer(send, 413, f"the upload is {n / MIB:.1f} MiB; this server accepts at most "
                                                    f"{limit / MIB:.0f} MiB here (the operator sets the limit: "
                                                    "--conf max_upload_mb / max_label_mb)")
        await self.app(scope, receive, send)


def install_upload_limit(app: Any, limits: UploadLimits) -> bool:
    """Put :class:`UploadLimit` on the FastAPI ``app`` (once), inside MONAI Label's CORS middleware so
    that a browser can read the refusal. The app may already be
    serving (MONAI Label builds our app during its start-up): the middleware stack is rebuilt on the
    next request."""
    from starlette.middleware import Middleware

    if any(getattr(m, "cls", None) is UploadLimit for m in app.user_middleware):
        return False
    app.user_middleware.append(Middleware(UploadLimit, limits=limits))
    app.middleware_stack = None
    return True
