"""Routes put in front of MONAI Label's own: checked input, non-blocking inference, clear errors.

MONAI Label 0.8.5 trusts what arrives over HTTP: ids and tags become file paths, ``params`` may
replace the image being segmented, an unknown id segments the working directory, bad input ends
in a bare 500. :func:`install_routes` adds, ahead of MONAI Label's (routes match in order; newer
FastAPI keeps included routers as lazily expanded entries, so an original cannot be replaced in
place), routes with the same paths, methods and roles that

* check every image id against the datastore's own ids, every tag and new name against a strict
  pattern (:mod:`.guard`), every ``params``/``info`` form field as a JSON object, model, trainer,
  strategy and scoring names against the app's, session ids against the sessions — and answer
  400/403/404/409 with the problem and the fix (:mod:`.http_errors`) before anything is read or
  written;
* hand the checked request to MONAI Label's own handling (uploads, sessions, option defaults, the
  multipart answer) or to the guarded datastore (:mod:`.store_guard`), which checks again;
* run inference in a worker thread: MONAI Label declares ``POST /infer/{model}`` ``async def`` and
  runs the whole inference on the event loop, so ``/info/`` and every other request would wait
  (``docs/monailabel.md`` §Blocking; measured there: ``/info/`` 7.6 s during a 6 s
  inference). Our infer task serialises inferences itself, so concurrent requests queue;
* answer ``?output=dicom_seg`` for our tasks with our highdicom writer (DICOM-folder and DICOMweb
  stores alike);
* refuse what a network client must not do: uploading or deleting model weights, unpacking
  archives into the session store, deleting source studies unless the operator allows it.

Upload sizes are limited before the body is read (:mod:`.upload_limit`).
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations as objects.
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, List, Optional

from ..errors import InputError, NotFoundError, RefusedError
from .guard import check_known_image, check_name, check_session_id, check_tag, shown
from .http_errors import as_http, json_object

logger = logging.getLogger(__name__)

DICOM_SEG_OUTPUT = "dicom_seg"
MARKER = "medclipsam_guarded_route"
# params keys MONAI Label would let a client use to replace what the URL names
RESERVED_PARAMS = ("image", "model", "session", "label", "file", "result_file", "dicom_seg")


def _instance():
    from monailabel.interfaces.utils.app import app_instance

    return app_instance()


def _names(kind: str) -> list[str]:
    """The app's models / trainers / strategies / scoring methods by name (as /info/ lists them)."""
    inst = _instance()
    return sorted({"infer": inst._infers, "train": inst._trainers, "strategy": inst._strategies,
                   "scoring": inst._scoring_methods}[kind])


def check_task(kind: str, name: str) -> str:
    known = _names(kind)
    if name not in known:
        what = {"infer": "model", "train": "trainer", "strategy": "active-learning strategy",
                "scoring": "scoring method"}[kind]
        raise NotFoundError(f"{what} {shown(name)} not found; this server has: {', '.join(known) or 'none'} "
                            "(see GET /info/)")
    return name


def _image(image_id: str) -> str:
    return check_known_image(image_id, _instance().datastore().list_images())


def _suffix(filename: Optional[str], default: str = ".nii.gz") -> str:
    """The upload's suffix from a client's file name, if it is one we read (:func:`.label_check.upload_suffix`);
    the name itself is never used as a path."""
    from .label_check import upload_suffix

    name = os.path.basename((filename or "").replace("\\", "/"))
    return upload_suffix(name) if name else default


def _receive(upload: Any, suffix: str) -> str:
    """An upload copied into a private temporary folder (removed by the caller's background task,
    :func:`_remove`), under the client's file name made safe (so messages name the client's file)."""
    stem = os.path.basename((upload.filename or "").replace("\\", "/"))[:-len(suffix) or None]
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem).strip("._")[:100] or "upload"
    folder = tempfile.mkdtemp(prefix="medclipsam_upload_")
    path = os.path.join(folder, stem + suffix)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    return path


def _remove(path: str) -> None:
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _guarded(work: Callable, *args: Any) -> Any:
    """Run ``work(*args)``; our client errors become HTTP errors."""
    try:
        return work(*args)
    except Exception as e:                          # noqa: BLE001 - only client errors are converted
        converted = as_http(e)
        if converted is e:
            raise
        raise converted from None


async def _threaded(work: Callable, *args: Any) -> Any:
    from fastapi.concurrency import run_in_threadpool

    return await run_in_threadpool(_guarded, work, *args)


def _front(app: Any, path: str, endpoint: Callable, methods: List[str], **kw: Any) -> None:
    from fastapi.routing import APIRoute

    setattr(endpoint, MARKER, True)
    app.router.add_api_route(path, endpoint, methods=methods, **kw)
    routes = app.router.routes
    routes.insert(0, routes.pop())
    assert isinstance(routes[0], APIRoute)


def install_routes(app: Any, our_models: Callable[[], Iterable[str]]) -> bool:
    """Install the guarded routes on MONAI Label's FastAPI ``app`` (once); ``our_models()`` names the
    infer tasks whose ``output=dicom_seg`` we answer. Returns False when already installed."""
    from fastapi.routing import APIRoute

    if any(isinstance(r, APIRoute) and getattr(r.endpoint, MARKER, False) for r in app.router.routes):
        return False
    _install_infer(app, our_models)
    _install_datastore(app)
    _install_tasks(app)
    _install_sessions_and_models(app)
    logger.info("medclipsam: guarded routes installed (ids, tags and uploads checked; inference in a worker thread)")
    return True


# --------------------------------------------------------------------------------------------- infer
def _install_infer(app: Any, our_models: Callable[[], Iterable[str]]) -> None:
    from fastapi import BackgroundTasks, Depends, File, Form, UploadFile
    from monailabel.config import settings
    from monailabel.endpoints import infer as ml_infer
    from monailabel.endpoints.user.auth import RBAC, User

    def handle(background_tasks, model, image, session_id, params, file, label, output):
        check_task("infer", model)
        p = json_object(params, "params", '{"prompt": "left lung"}')
        reserved = sorted(k for k in p if k in RESERVED_PARAMS)
        if reserved:
            raise InputError(f"params may not set {', '.join(reserved)}: name the image with ?image=ID (or "
                             "?session_id=) in the URL")
        if "label_tag" in p:
            check_tag(str(p["label_tag"]))
        if session_id:
            check_session_id(session_id)
            sessions = _instance().sessions()
            if sessions is None or sessions.get_session(session_id) is None:
                raise NotFoundError(f"session {shown(session_id)} not found (expired?); create one with PUT /session/")
        elif file is not None:
            if image:
                raise InputError("send either ?image=ID or an uploaded file, not both")
            _suffix(file.filename)
        else:
            _image(image)
        if label is not None:
            raise InputError("this server does not take a label upload with an inference request")
        out = output.value if hasattr(output, "value") else output
        if model in set(our_models()) and out == DICOM_SEG_OUTPUT:
            p["medclipsam_output"] = DICOM_SEG_OUTPUT
            response = ml_infer.run_inference(background_tasks, model, image, session_id, json.dumps(p), file,
                                              None, ml_infer.ResultType.image)
            response.media_type = "application/dicom"
            response.headers["content-type"] = "application/dicom"
            return response
        return ml_infer.run_inference(background_tasks, model, image, session_id, params, file, None, output)

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
        return await _threaded(handle, background_tasks, model, image, session_id, params, file, label, output)

    _front(app, f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}", api_run_inference, ["POST"], tags=["Infer"],
           summary="Run Inference (medclipsam: checked input, in a worker thread)")


# ----------------------------------------------------------------------------------------- datastore
def _install_datastore(app: Any) -> None:
    from fastapi import BackgroundTasks, Depends, File, Form, UploadFile
    from monailabel.config import settings
    from monailabel.endpoints import datastore as ml_ds
    from monailabel.endpoints.user.auth import RBAC, User

    api = f"{settings.MONAI_LABEL_API_STR}/datastore"
    admin, annotator, viewer = (RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN),
                                RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR),
                                RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))

    def store():
        return _instance().datastore()

    def add_image(background_tasks, image, params, file, user):
        info = json_object(params, "params", '{"comment": "uploaded"}')
        suffix = _suffix(file.filename)
        if suffix in (".dcm", ".seg.nrrd"):
            raise InputError("an uploaded image must be a NIfTI (.nii.gz, .nii) or NRRD (.nrrd) volume")
        image_id = image or os.path.basename(file.filename or "")[:-len(suffix)]
        check_name(image_id)
        if user:
            info["user"] = user
        path = _receive(file, suffix)
        background_tasks.add_task(_remove, path)
        return {"image": store().add_image(image_id, path, info)}

    async def api_add_image(background_tasks: BackgroundTasks, image: Optional[str] = None,
                            params: str = Form("{}"), file: UploadFile = File(...),
                            user: User = Depends(annotator)):
        return await _threaded(add_image, background_tasks, image, params, file, user.username)

    def remove_image(image_id):
        s = store()
        check_known_image(image_id, s.list_images())
        if not hasattr(s, "policy"):
            raise RefusedError("deleting images through the API is turned off on this server")
        s.remove_image(image_id)
        return {}

    async def api_remove_image(id: str, user: User = Depends(admin)):
        return await _threaded(remove_image, id)

    def download_image(image, check_only=False, check_sum=None):
        _image(image)
        return ml_ds.download_image(image, check_only=check_only, check_sum=check_sum)

    async def api_check_image(image: str, check_sum: Optional[str] = None, user: User = Depends(viewer)):
        return await _threaded(download_image, image, True, check_sum)

    async def api_download_image(image: str, user: User = Depends(viewer)):
        return await _threaded(download_image, image)

    def image_info(image):
        _image(image)
        return store().get_image_info(image)

    async def api_get_image_info(image: str, user: User = Depends(viewer)):
        return await _threaded(image_info, image)

    def put_image_info(image, info, user):
        _image(image)
        i = json_object(info, "info", '{"comment": "checked"}')
        if user:
            i["user"] = user
        s = store()
        return (s.update_client_image_info(image, i) if hasattr(s, "update_client_image_info")
                else s.update_image_info(image, i))

    async def api_put_image_info(image: str, info: str = Form("{}"), user: User = Depends(annotator)):
        return await _threaded(put_image_info, image, info, user.username)

    def save_label(background_tasks, image, params, tag, label, user):
        _image(image)
        tag = check_tag(tag or "final")
        info = json_object(params, "params")
        if user:
            info["user"] = user
        path = _receive(label, _suffix(label.filename))
        background_tasks.add_task(_remove, path)
        inst = _instance()
        label_id = inst.datastore().save_label(image, path, tag, info)
        res = inst.on_save_label(image, label_id) or {}
        res.update({"image": image, "label": label_id})
        return res

    async def api_save_label(background_tasks: BackgroundTasks, image: str, params: str = Form("{}"),
                             tag: str = "final", label: UploadFile = File(...), user: User = Depends(annotator)):
        return await _threaded(save_label, background_tasks, image, params, tag, label, user.username)

    def remove_label(image, tag):
        _image(image)
        store().remove_label(image, check_tag(tag))
        return {}

    async def api_remove_label(id: str, tag: str, user: User = Depends(admin)):
        return await _threaded(remove_label, id, tag)

    def download_label(label, tag, check_only=False):
        _image(label)
        check_tag(tag)
        return ml_ds.download_label(label, tag, check_only=check_only)

    async def api_check_label(image: str, tag: str, user: User = Depends(viewer)):
        return await _threaded(download_label, image, tag, True)

    async def api_download_label(label: str, tag: str, user: User = Depends(viewer)):
        return await _threaded(download_label, label, tag)

    def label_info(label, tag):
        _image(label)
        return store().get_label_info(label, check_tag(tag))

    async def api_get_label_info(label: str, tag: str, user: User = Depends(viewer)):
        return await _threaded(label_info, label, tag)

    def put_label_info(label, tag, info, user):
        _image(label)
        check_tag(tag)
        i = json_object(info, "info", '{"comment": "checked"}')
        if user:
            i["user"] = user
        s = store()
        return (s.update_client_label_info(label, tag, i) if hasattr(s, "update_client_label_info")
                else s.update_label_info(label, tag, i))

    async def api_put_label_info(label: str, tag: str, info: str = Form("{}"), user: User = Depends(annotator)):
        return await _threaded(put_label_info, label, tag, info, user.username)

    async def api_update_label_info(label: str, tag: str, params: str = Form("{}"), user: User = Depends(annotator)):
        return await _threaded(put_label_info, label, tag, params, user.username)

    for path in ("/image", "/"):
        _front(app, api + path, api_add_image, ["PUT"], tags=["Datastore"], summary="Upload a new image (checked)")
        _front(app, api + path, api_remove_image, ["DELETE"], tags=["Datastore"],
               summary="Remove an image (needs --conf allow_delete true)")
    _front(app, api + "/image", api_check_image, ["HEAD"], tags=["Datastore"], summary="Check if an image exists")
    _front(app, api + "/image", api_download_image, ["GET"], tags=["Datastore"], summary="Download an image")
    _front(app, api + "/image/info", api_get_image_info, ["GET"], tags=["Datastore"], summary="Get image info")
    _front(app, api + "/image/info", api_put_image_info, ["PUT"], tags=["Datastore"], summary="Update image info")
    _front(app, api + "/label", api_save_label, ["PUT"], tags=["Datastore"], summary="Save a label (validated)")
    _front(app, api + "/label", api_remove_label, ["DELETE"], tags=["Datastore"], summary="Remove a label")
    _front(app, api + "/label", api_check_label, ["HEAD"], tags=["Datastore"], summary="Check if a label exists")
    _front(app, api + "/label", api_download_label, ["GET"], tags=["Datastore"], summary="Download a label")
    _front(app, api + "/label/info", api_get_label_info, ["GET"], tags=["Datastore"], summary="Get label info")
    _front(app, api + "/label/info", api_put_label_info, ["PUT"], tags=["Datastore"], summary="Update label info")
    _front(app, api + "/updatelabelinfo", api_update_label_info, ["PUT"], tags=["Datastore"],
           summary="Update label info (deprecated)", include_in_schema=False)


# ------------------------------------------------------------- train, active learning, scoring, batch
def _install_tasks(app: Any) -> None:
    from fastapi import Body, Depends
    from monailabel.config import settings
    from monailabel.endpoints import activelearning as ml_al
    from monailabel.endpoints import batch_infer as ml_batch
    from monailabel.endpoints import scoring as ml_scoring
    from monailabel.endpoints import train as ml_train
    from monailabel.endpoints.batch_infer import BatchInferImageType
    from monailabel.endpoints.user.auth import RBAC, User

    api = settings.MONAI_LABEL_API_STR
    admin, annotator, viewer = (RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN),
                                RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR),
                                RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))

    def params_object(params: Any) -> dict:
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise InputError("the request body must be a JSON object of options, e.g. {\"epochs\": 12}")
        return params

    def check_train(model: str, params: dict) -> None:
        task = _instance()._trainers[model]
        check = getattr(task, "check_request", None)
        if check is not None:
            check(params)                            # ConfigError → 400 with the option and the fix

    def train_model(model, params, run_sync, enqueue):
        check_task("train", model)
        params = params_object(params)
        check_train(model, params)
        return ml_train.run_model(model, params, run_sync, enqueue)

    async def api_train_model(model: str, params: Optional[Any] = Body(None), run_sync: Optional[bool] = False,
                              enqueue: Optional[bool] = False, user: User = Depends(admin)):
        return await _threaded(train_model, model, params, run_sync, enqueue)

    def train_all(params, run_sync):
        params = params_object(params)
        for model in _names("train"):
            check_train(model, params_object(params.get(model)))
        unknown = sorted(k for k in params if k not in _names("train"))
        if unknown:
            raise NotFoundError(f"trainer(s) {', '.join(shown(k) for k in unknown)} not found; this server has: "
                                f"{', '.join(_names('train'))}")
        return ml_train.run(params, run_sync)

    async def api_train_all(params: Optional[Any] = Body(None), run_sync: Optional[bool] = False,
                            user: User = Depends(admin)):
        return await _threaded(train_all, params, run_sync)

    def sample(strategy, params, user):
        check_task("strategy", strategy)
        return ml_al.sample(strategy, params_object(params), user)

    async def api_sample(strategy: str, params: Optional[Any] = Body(None), user: User = Depends(viewer)):
        return await _threaded(sample, strategy, params, user.username)

    def score(method, params, run_sync):
        check_task("scoring", method)
        return ml_scoring.run_method(method, params_object(params), run_sync)

    async def api_score(method: str, params: Optional[Any] = Body(None), run_sync: Optional[bool] = False,
                        user: User = Depends(annotator)):
        return await _threaded(score, method, params, run_sync)

    def batch(model, images, params, run_sync):
        check_task("infer", model)
        p = params_object(params)
        if "label_tag" in p:
            check_tag(str(p["label_tag"]))
        reserved = sorted(k for k in p if k in RESERVED_PARAMS)
        if reserved:
            raise InputError(f"params may not set {', '.join(reserved)}")
        return ml_batch.run(model, images, p, run_sync)

    async def api_batch(model: str,
                        images: Optional[BatchInferImageType] = BatchInferImageType.IMAGES_ALL,
                        params: Optional[Any] = Body(None), run_sync: Optional[bool] = False,
                        user: User = Depends(admin)):
        return await _threaded(batch, model, images, params, run_sync)

    _front(app, f"{api}/train/{{model}}", api_train_model, ["POST"], tags=["Train"],
           summary="Run a training task (options checked first)")
    _front(app, f"{api}/train/", api_train_all, ["POST"], tags=["Train"], summary="Run all training tasks",
           include_in_schema=False)
    _front(app, f"{api}/activelearning/{{strategy}}", api_sample, ["POST"], tags=["ActiveLearning"],
           summary="Next sample by an active-learning strategy")
    _front(app, f"{api}/scoring/{{method}}", api_score, ["POST"], tags=["Scoring"], summary="Run a scoring method")
    _front(app, f"{api}/batch/infer/{{model}}", api_batch, ["POST"], tags=["Infer"], summary="Run batch inference")


# ---------------------------------------------------------------------------- sessions and weights
def _install_sessions_and_models(app: Any) -> None:
    from fastapi import BackgroundTasks, Depends, File, UploadFile
    from monailabel.config import settings
    from monailabel.endpoints import session as ml_session
    from monailabel.endpoints.user.auth import RBAC, User

    api = settings.MONAI_LABEL_API_STR
    admin, viewer = RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN), RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)

    def get_session(session_id, update_ts, image):
        check_session_id(session_id)
        return ml_session.get_session(session_id, update_ts, image)

    async def api_get_session(session_id: str, update_ts: bool = False, image: bool = False,
                              user: User = Depends(viewer)):
        return await _threaded(get_session, session_id, update_ts, image)

    def remove_session(session_id):
        check_session_id(session_id)
        return ml_session.remove_session(session_id)

    async def api_remove_session(session_id: str, user: User = Depends(viewer)):
        return await _threaded(remove_session, session_id)

    def create_session(background_tasks, uncompress, expiry, files):
        if uncompress:
            raise RefusedError("this server does not unpack archives into sessions; upload the volume file itself "
                               "(uncompress=false)")
        for f in files:
            _suffix(f.filename)
        return ml_session.create_session(background_tasks, False, expiry, files)

    async def api_create_session(background_tasks: BackgroundTasks, uncompress: bool = False, expiry: int = 0,
                                 files: List[UploadFile] = File(...), user: User = Depends(viewer)):
        return await _threaded(create_session, background_tasks, uncompress, expiry, files)

    def weights_refused(model):
        raise RefusedError("model weights are published by training on this server; uploading or deleting them "
                           "over HTTP is turned off")

    async def api_put_model(model: str, user: User = Depends(admin)):
        return await _threaded(weights_refused, model)

    _front(app, f"{api}/session/{{session_id}}", api_get_session, ["GET"], tags=["Session"], summary="Get a session")
    _front(app, f"{api}/session/{{session_id}}", api_remove_session, ["DELETE"], tags=["Session"],
           summary="Delete a session")
    _front(app, f"{api}/session/", api_create_session, ["PUT"], tags=["Session"],
           summary="Create a session with an image (no archives)")
    _front(app, f"{api}/model/{{model}}", api_put_model, ["PUT", "DELETE"], tags=["Model"],
           summary="Uploading/deleting weights is turned off")
