"""``segment-series --list-series`` stays light (no models, torch, highdicom or SimpleITK: issue 23,
item 6), a lone localizer is called what it is (item 5), and the "nothing was segmented" message
gives advice that fits the presence settings used (item 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest

from medclipsam.cli import main
from medclipsam.phantoms.synthetic_ct import write_synthetic_ct

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "dicom"
TINY = ["--clip", "random:tiny", "--sam", "tiny:random", "--set", "m2ib.layer=2", "--set", "m2ib.steps=3",
        "--set", "m2ib.samples=2", "--quiet"]
# what listing must not import: the models' libraries, the SEG writer's and the NIfTI writer's
HEAVY = ("torch", "torchvision", "open_clip", "segment_anything", "timm", "transformers", "SimpleITK", "highdicom",
         "monailabel", "medclipsam.models", "medclipsam.pipeline", "medclipsam.dicom.seg", "medclipsam.volume.engine")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["segment-series", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    return write_synthetic_ct(tmp_path_factory.mktemp("ct") / "series", slices=3, size=32)


def make_localizer(folder: Path, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), seed: int = 11) -> Path:
    """A one-file CT series that is a localizer: a coronal projection of the scan range."""
    path = write_synthetic_ct(folder, slices=1, size=64, seed=seed).files[0]
    ds = pydicom.dcmread(path)
    ds.ImageType = list(image_type)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.SeriesDescription = ""
    ds.save_as(path)
    return path


# ------------------------------------------------------------------------------ item 6: a light listing

def test_list_series_imports_no_model_or_writer_library(small_series):
    """In a fresh interpreter, as the console script runs: listing imports pydicom and numpy only."""
    script = ("import json, sys\n"
              "from medclipsam.cli import main\n"
              "rc = main(['segment-series', sys.argv[1], '--list-series'])\n"
              "print('MODULES=' + json.dumps(sorted(sys.modules)))\n"
              "sys.exit(rc)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "lib"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", script, str(small_series.folder)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(small_series.series_uid) and "3 images" in lines[0]
    modules = set(json.loads(lines[-1].removeprefix("MODULES=")))
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not loaded, f"--list-series imported {loaded}"
    assert "pydicom" in modules and "medclipsam.dicom.scan" in modules


def test_dicom_package_names_still_import():
    """The lazy ``medclipsam.dicom`` package gives every name it lists, and nothing else."""
    import medclipsam.dicom as dicom

    for name in dicom.__all__:
        assert getattr(dicom, name) is not None
    from medclipsam.dicom import SegmentSpec, read_series  # noqa: F401
    with pytest.raises(AttributeError):
        dicom.no_such_name  # noqa: B018


# ------------------------------------------------------------------------------ item 5: a lone localizer

@pytest.mark.parametrize("image_type", [("ORIGINAL", "PRIMARY", "LOCALIZER"), ("ORIGINAL", "PRIMARY", "SCOUT")])
def test_lone_localizer_is_listed_and_read_with_a_note(tmp_path, capsys, image_type):
    from medclipsam.dicom import read_series, scan_series

    make_localizer(tmp_path / "loc", image_type)
    (summary,) = scan_series(tmp_path / "loc")
    assert summary.localizer and summary.num_images == 1
    code, stdout, _ = run(capsys, str(tmp_path / "loc"), "--list-series")
    assert code == 0 and "localizer (a scout / projection image, not slices)" in stdout
    with read_series(tmp_path / "loc") as series:
        assert len(series) == 1
        note = next(n for n in series.notes if "localizer" in n)
    assert "not a cross-sectional slice" in note and "\\".join(image_type) in note and "series" in note


def test_series_is_not_called_a_localizer(small_series, capsys):
    from medclipsam.dicom import read_series, scan_series

    assert not scan_series(small_series.folder)[0].localizer
    with read_series(small_series.folder) as series:
        assert not any("localizer" in n for n in series.notes)
    code, stdout, _ = run(capsys, str(small_series.folder), "--list-series")
    assert code == 0 and "localizer" not in stdout


def test_localizer_beside_a_series_is_marked_in_the_choice(small_series, tmp_path):
    """A localizer in its own series next to the slices: the --series choice says which is which."""
    from medclipsam.dicom import DicomInputError, read_series

    shutil.copytree(small_series.folder, tmp_path / "study" / "ct")
    make_localizer(tmp_path / "study" / "loc")
    with pytest.raises(DicomInputError, match="--series") as info:
        read_series(tmp_path / "study")
    lines = str(info.value).splitlines()
    assert any(small_series.series_uid in line and "localizer" not in line for line in lines)
    assert sum("(localizer: a scout / projection image, not slices)" in line for line in lines) == 1
    with read_series(tmp_path / "study", series_uid=small_series.series_uid) as series:
        assert len(series) == 3 and not any("the input is a localizer" in n for n in series.notes)


def test_lone_localizer_segment_series_says_so(tmp_path, capsys):
    make_localizer(tmp_path / "loc")
    out = tmp_path / "labels.nii.gz"
    code, stdout, err = run(capsys, str(tmp_path / "loc"), "--prompt", "lungs", "--no-gate", "--out", str(out), *TINY)
    assert code == 0, err
    assert "note: the input is a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)" in err and out.exists()


def test_real_localizer_is_noted():
    path = CORPUS / "ct_localizer_philips_surview"
    if not path.exists():
        pytest.skip(f"real DICOM corpus not present at {path}")
    from medclipsam.dicom import read_series, scan_series

    assert scan_series(path)[0].localizer
    with read_series(path) as series:
        assert any(n.startswith("the input is a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)")
                   for n in series.notes)


# ------------------------------------------------------------------------------ item 5: "nothing was segmented"

def fake_result(mode: str, records: list[tuple[bool, bool]], threshold: float | None = None, processed: int = 0,
                roi=None, total: int | None = None):
    """A VolumeResult-shaped object: one prompt, records (passed_similarity, present) per slice."""
    recs = [SimpleNamespace(passed_similarity=s, present=p, found=False) for s, p in records]
    prompt = SimpleNamespace(gate=SimpleNamespace(mode=mode, threshold=threshold), records=recs, label=1,
                             name="lesion")
    n = len(records)
    return SimpleNamespace(prompts=[prompt], slices=n, processed=processed, gated=sum(not p for _, p in records),
                           roi=roi, slice_range=(0, n), geometry=SimpleNamespace(shape=(total or n, 8, 8)))


def test_nothing_segmented_advice_fits_the_gate():
    from medclipsam.volume.messages import nothing_segmented_message

    off = nothing_segmented_message(fake_result("disabled", [(True, True)] * 4, processed=4))
    assert "presence-threshold" not in off and "saliency_ratio" not in off
    assert "gate was off (--no-gate): all 4 slices were processed" in off and "prompt" in off and "--window" in off
    assert "no SEG written" in off and ".nii.gz" in off

    user = nothing_segmented_message(fake_result("user", [(False, False)] * 4, threshold=0.9))
    assert "4 slice(s) had a similarity below --presence-threshold 0.9" in user
    assert "lower --presence-threshold" in user
    assert "--no-gate" in user and "prompt" not in user

    weak = nothing_segmented_message(fake_result("series-relative split", [(True, False), (True, False),
                                                                             (False, False), (True, True)],
                                                 threshold=0.25, processed=1))
    assert "1 slice(s) had a similarity below the series-relative split 0.25" in weak
    assert "presence.saliency_ratio=0" in weak and "no mask on the 1 processed slice(s)" in weak

    # a gate that let every slice through: lowering a threshold would change nothing
    flat = nothing_segmented_message(fake_result("all slices", [(True, True)] * 3, processed=3))
    assert "presence-threshold" not in flat and "prompt" in flat

    narrowed = nothing_segmented_message(fake_result("disabled", [(True, True)] * 2, processed=2, roi=(0, 0, 4, 4),
                                                     total=10))
    assert "--roi" in narrowed and "--slices" in narrowed


def test_no_gate_empty_seg_message(small_series, tmp_path, capsys):
    """End to end: gate off, no coarse mask anywhere (min_size too big), SEG asked: no threshold advice."""
    seg = tmp_path / "seg.dcm"
    code, stdout, err = run(capsys, str(small_series.folder), "--prompt", "lesion", "--no-gate", "--out", str(seg),
                            "--set", "postprocess.min_size=100000", *TINY)
    assert code == 2 and not seg.exists()
    assert "nothing was segmented (0 of 3 slices judged target-absent" in err and "no SEG written" in err
    assert "gate was off (--no-gate)" in err and "presence-threshold" not in err.split("nothing was segmented")[1]
    assert stdout.strip().splitlines()[-1].startswith("slices=3 processed=3 gated=0 ")


def test_nothing_segmented_advice_names_request_options_on_the_server():
    """The server's message names the request options, never a command-line flag."""
    from medclipsam.volume.messages import REQUEST_NAMES, nothing_segmented_message

    off = nothing_segmented_message(fake_result("disabled", [(True, True)] * 4, processed=4), REQUEST_NAMES)
    assert "gate was off (the option gate=false)" in off and "presence_threshold" not in off
    assert "--" not in off and "NIfTI/NRRD" in off
    user = nothing_segmented_message(fake_result("user", [(False, False)] * 4, threshold=0.9), REQUEST_NAMES)
    assert "below the presence_threshold option 0.9" in user and "lower the presence_threshold option" in user
    assert "--" not in user
    weak = nothing_segmented_message(fake_result("series-relative split", [(True, False), (True, True)],
                                                 threshold=0.25, processed=1, roi=(0, 0, 4, 4), total=5),
                                     REQUEST_NAMES)
    assert "set=presence.saliency_ratio=0" in weak and "--" not in weak and "roi" not in weak
    assert "widen the slices option" in weak
