"""MONAI Label's ``POST /infer/{model}``, made non-blocking for our tasks.

MONAI Label 0.8.5 declares the infer endpoint ``async def`` and runs the whole inference inside
it, on the server's event loop: while one runs, ``/info/``, status polls and every other request
wait (``../shared/docs/monailabel.md`` §5.3, §8.5; measured there: ``/info/`` 7.6 s during a 6 s
inference). :func:`install_infer_route` puts a route in front of it that runs the same request
handling (MONAI Label's own ``run_inference``: uploads, sessions, option defaults, the multipart
response) in a worker thread, so the event loop keeps answering; our infer task serialises the
inferences themselves (:class:`~medclipsam.serving.infer.ZeroShotSegmenter`), so concurrent
requests queue instead of failing.

It also answers ``?output=dicom_seg`` for our tasks with our highdicom writer — for DICOM-folder
and DICOMweb datastores alike (MONAI Label's path needs a DICOMweb datastore and dcmqi) — and
turns our errors (:class:`~medclipsam.errors.MedClipSamError`: an empty prompt, a bad option) into
HTTP 400 with the message, not a 500 with a traceback.
"""

# No "from __future__ import annotations": FastAPI reads the endpoint's annotations as objects.
import json
import logging
from typing import Any, Callable, Iterable, Optional

from ..errors import InputError, MedClipSamError

logger = logging.getLogger(__name__)

DICOM_SEG_OUTPUT = "dicom_seg"
MARKER = "medclipsam_nonblocking_infer"


def install_infer_route(app: Any, our_models: Callable[[], Iterable[str]]) -> bool:
    """Replace ``POST {api}/infer/{model}`` of the FastAPI ``app``; ``our_models()`` names the infer
    tasks whose ``output=dicom_seg`` and errors we answer. Returns False when already installed."""
    from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.routing import APIRoute
    from monailabel.config import settings
    from monailabel.endpoints import infer as ml_infer
    from monailabel.endpoints.user.auth import RBAC, User

    path = f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}"
    routes = app.router.routes
    if any(isinstance(r, APIRoute) and getattr(r.endpoint, MARKER, False) for r in routes):
        return False

    def handle(background_tasks, model, image, session_id, params, file, label, output):
        ours = model in set(our_models())
        if ours:
            try:
                if not isinstance(json.loads(params or "{}"), dict):
                    raise ValueError("not an object")
            except ValueError as e:
                raise InputError(f"the form field 'params' is not a JSON object ({e}); send e.g. "
                                 '{"prompt": "left lung"}') from None
        out = output.value if hasattr(output, "value") else output
        if ours and out == DICOM_SEG_OUTPUT:
            p = json.loads(params) if params else {}
            p["medclipsam_output"] = DICOM_SEG_OUTPUT
            response = ml_infer.run_inference(background_tasks, model, image, session_id, json.dumps(p), file,
                                              label, ml_infer.ResultType.image)
            response.media_type = "application/dicom"
            response.headers["content-type"] = "application/dicom"
            return response
        return ml_infer.run_inference(background_tasks, model, image, session_id, params, file, label, output)

    async def api_run_inference(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile = File(None),
        label: UploadFile = File(None),
        output: Optional[ml_infer.ResultType] = None,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ):
        try:
            return await run_in_threadpool(handle, background_tasks, model, image, session_id, params, file,
                                           label, output)
        except MedClipSamError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None

    setattr(api_run_inference, MARKER, True)
    # Routes match in order: ours goes first and shadows MONAI Label's (newer FastAPI keeps included
    # routers as lazily expanded entries, so the original cannot be replaced in place).
    app.router.add_api_route(path, api_run_inference, methods=["POST"], tags=["Infer"],
                             summary="Run Inference for supported model (medclipsam: in a worker thread)")
    routes.insert(0, routes.pop())
    logger.info("medclipsam: %s now runs inferences in a worker thread", path)
    return True
