"""The DICOM-folder datastore's index (medclipsam.serving.dicom_datastore.index_dicom_folder):
which series become studies (issue 21: a CT localizer is not one)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = ROOT / "sample-data" / "phantoms" / "ct_chest"
CORPUS = ROOT.parent / "shared" / "corpora" / "dicom"
PHILIPS_LOCALIZER = CORPUS / "ct_localizer_philips_surview"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _phantom_uid() -> str:
    first = next(p for p in sorted(PHANTOM.iterdir()) if p.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)


def _synthetic_localizer(folder: Path, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")) -> str:
    """A one-image scout series made from a phantom slice: its own series, ImageType LOCALIZER."""
    ds = pydicom.dcmread(next(p for p in sorted(PHANTOM.iterdir()) if p.is_file()))
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = list(image_type)
    ds.SeriesDescription = "Scout"
    ds.SeriesNumber = 1
    folder.mkdir(parents=True)
    ds.save_as(folder / "scout.dcm")
    return str(ds.SeriesInstanceUID)


@pytest.fixture
def studies(tmp_path) -> Path:
    root = tmp_path / "studies"
    shutil.copytree(PHANTOM, root / "patient1" / "ct")
    return root


def _store(studies: Path):
    from medclipsam.serving.dicom_datastore import DicomFolderDatastore

    return DicomFolderDatastore(studies)


def test_a_localizer_series_is_not_a_study(studies, caplog):
    scout = _synthetic_localizer(studies / "patient1" / "scout")
    with caplog.at_level(logging.INFO, logger="medclipsam.serving.dicom_datastore"):
        store = _store(studies)
    assert store.list_images() == [_phantom_uid()]
    assert scout not in store.series
    assert not (store.store / "images" / f"{scout}.nii.gz").exists()
    assert any(scout in r.getMessage() and "localizer" in r.getMessage() for r in caplog.records)


def test_a_series_that_is_not_a_localizer_stays_a_study(studies):
    """The same one-image series with ImageType AXIAL is a (one-slice) study: the test above fails
    for the right reason, not because one-image series are dropped."""
    other = _synthetic_localizer(studies / "patient1" / "single", image_type=("ORIGINAL", "PRIMARY", "AXIAL"))
    assert sorted(_store(studies).list_images()) == sorted([_phantom_uid(), other])


def test_a_localizer_an_earlier_index_stored_is_removed(studies):
    scout = _synthetic_localizer(studies / "patient1" / "scout")
    store = _store(studies)
    images = store.store / "images"
    # what an index without the localizer rule made of it: a NIfTI, its links and a manifest entry
    shutil.copy(images / f"{_phantom_uid()}.nii.gz", images / f"{scout}.nii.gz")
    (images / scout).mkdir()
    (images / scout / "00000.dcm").symlink_to(studies / "patient1" / "scout" / "scout.dcm")
    manifest = store.store / "series.json"
    entries = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**entries, scout: {"fingerprint": "old"}}))
    again = _store(studies)
    assert again.list_images() == [_phantom_uid()]
    assert not (images / f"{scout}.nii.gz").exists() and not (images / scout).exists()
    assert (studies / "patient1" / "scout" / "scout.dcm").is_file()          # the DICOM itself is only read


@pytest.mark.skipif(not PHILIPS_LOCALIZER.is_dir(), reason="shared DICOM corpus not present (../shared/corpora/dicom)")
def test_a_real_philips_surview_is_not_a_study(studies):
    shutil.copytree(PHILIPS_LOCALIZER, studies / "patient2" / "surview")
    assert _store(studies).list_images() == [_phantom_uid()]
