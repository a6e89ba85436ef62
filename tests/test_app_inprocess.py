"""Fast in-process checks of the app with FastAPI's TestClient (issue 5): MONAI Label's own app
object and settings, as its endpoint tests build them (``docs/monailabel.md`` §In-process)."""

from __future__ import annotations

import json
import os

import pytest

from servers import APP


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import write_image

    studies = tmp_path_factory.mktemp("inprocess_studies")
    from servers import ROOT

    with read_series(ROOT / "sample-data" / "phantoms" / "ct_chest") as s:
        write_image(studies / "ct_chest.nii.gz", s)
    from fastapi.testclient import TestClient
    from monailabel.config import settings

    saved = {k: getattr(settings, k) for k in ("MONAI_LABEL_APP_DIR", "MONAI_LABEL_STUDIES", "MONAI_LABEL_APP_CONF",
                                               "MONAI_LABEL_DATASTORE_AUTO_RELOAD", "MONAI_LABEL_AUTO_UPDATE_SCORING")}
    settings.MONAI_LABEL_APP_DIR = str(APP)
    settings.MONAI_LABEL_STUDIES = str(studies)
    settings.MONAI_LABEL_APP_CONF = {"model_dir": str(studies / "model")}
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    settings.MONAI_LABEL_AUTO_UPDATE_SCORING = False
    from monailabel.app import app
    from monailabel.interfaces.utils.app import clear_cache

    clear_cache()
    yield TestClient(app)
    clear_cache()
    for k, v in saved.items():
        setattr(settings, k, v)


def test_info_and_traps_handled_in_process(client):
    info = client.get("/info/").json()
    assert info["models"]["medclipsam"]["type"] == "segmentation"
    assert os.environ.get("PYTHONPATH") and os.environ["MONAI_LABEL_TRACKING_ENABLED"] == "false"


def test_infer_route_is_ours_and_answers_errors_before_loading_models(client):
    from monailabel.app import app
    from monailabel.interfaces.utils.app import app_instance

    client.get("/info/")                                   # builds the app, which installs the route
    first = next(r for r in app.router.routes if getattr(r, "path", "") == "/infer/{model}")
    assert getattr(first.endpoint, "medclipsam_guarded_route", False)
    r = client.post("/infer/medclipsam?image=ct_chest", data={"params": json.dumps({"prompt": ""})})
    assert r.status_code == 400 and "no text prompt" in r.json()["detail"]
    r = client.post("/infer/medclipsam?image=ct_chest", data={"params": json.dumps({"prompt": "lungs",
                                                                                    "preset": "v7"})})
    assert r.status_code == 400 and "preset" in r.json()["detail"]
    seg = app_instance()._infers["medclipsam"].segmenter
    assert seg.models.loads == 0                           # bad requests never loaded CLIP or SAM
