"""Tests for the command line (``medclipsam segment`` / ``medclipsam evaluate``).

The models are always the tiny random ones (``--clip random:tiny --sam tiny:random``), with the
M2IB layer moved into the tiny tower's 4 blocks, so that every run takes seconds on a CPU.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclipsam import __version__
from medclipsam.cli import main

MODELS = ["--clip", "random:tiny", "--sam", "tiny:random", "--set", "m2ib.layer=2"]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def disk_array(h: int, w: int, cy: float, cx: float, r: float, fg: int = 220, bg: int = 30) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.where((y - cy) ** 2 + (x - cx) ** 2 <= r * r, fg, bg).astype(np.uint8)


def make_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Four generated images of different kinds; returns file name -> (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # 8-bit PNG with a bright disk
    Image.fromarray(disk_array(64, 72, 30, 36, 14)).save(folder / "disk.png")
    # 16-bit TIFF (a CT-like range with a brighter blob)
    ct = (disk_array(56, 56, 28, 25, 10).astype(np.uint16) * 12 + rng.integers(0, 200, (56, 56))).astype(np.uint16)
    Image.fromarray(ct).save(folder / "ct16.tif")
    # RGB JPEG
    rgb = np.stack([disk_array(48, 48, 24, 24, 9, fg=240), disk_array(48, 48, 24, 24, 9, fg=90),
                    np.full((48, 48), 60, np.uint8)], axis=-1)
    Image.fromarray(rgb).save(folder / "colour.jpg", quality=95)
    # a non-square (landscape) one
    Image.fromarray(disk_array(37, 91, 18, 60, 8)).save(folder / "wide.png")
    return {"disk.png": (64, 72), "ct16.tif": (56, 56), "colour.jpg": (48, 48), "wide.png": (37, 91)}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``main`` in-process with stdout/stderr captured (usable from module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def segment_argv(inp: Path, out: Path, *extra: str, prompt: str | None = "bright round disk") -> list[str]:
    argv = ["segment", str(inp), "--out", str(out), *MODELS, "--quiet"]
    if prompt is not None:
        argv += ["--prompt", prompt]
    return argv + list(extra)


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L", f"{path.name}: mask mode {im.mode}"
        return np.array(im)


def leftovers(folder: Path) -> list[str]:
    """Temporary or hidden files left anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.startswith(".") or p.name.endswith(".partial"))


def assert_usage_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    error_lines = [ln for ln in lines if ln.startswith("error: ")]
    assert len(error_lines) == 1, err
    line = error_lines[0]
    assert line == lines[-1], "the error line should be the last thing printed"
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


# ---------------------------------------------------------------------------------------
# a normal run (once per module)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, int]]]:
    folder = tmp_path_factory.mktemp("inputs")
    return folder, make_inputs(folder)


@pytest.fixture(scope="module")
def normal_run(inputs, tmp_path_factory):
    folder, sizes = inputs
    out = tmp_path_factory.mktemp("run") / "masks"
    code, stdout, stderr = run_cli(segment_argv(folder, out, "--overlays", "--seed", "3"))
    return {"code": code, "stdout": stdout, "stderr": stderr, "out": out, "sizes": sizes, "input": folder}


def test_segment_exit_code_and_messages(normal_run):
    assert normal_run["code"] == 0, normal_run["stderr"]
    assert "RANDOM WEIGHTS" in normal_run["stderr"]
    assert "Traceback" not in normal_run["stderr"]
    stdout = normal_run["stdout"]
    assert "4 written" in stdout and "0 failed" in stdout
    assert str(normal_run["out"] / "summary.json") in stdout


def test_segment_one_mask_per_input(normal_run):
    out, sizes = normal_run["out"], normal_run["sizes"]
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == sorted(Path(n).stem + ".png" for n in sizes)
    for name, (h, w) in sizes.items():
        mask = read_mask(out / f"{Path(name).stem}.png")
        assert mask.shape == (h, w), name
        assert set(np.unique(mask).tolist()) <= {0, 255}, name
    assert leftovers(out) == []


def test_segment_summary_json(normal_run):
    out, sizes = normal_run["out"], normal_run["sizes"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["command"] == "segment"
    assert summary["version"] == __version__
    assert summary["prompts"] == ["bright round disk"]
    assert summary["preset"] == "v2"
    cfg = summary["config"]
    assert cfg["preset"] == "v2" and cfg["saliency"] == "m2ib"
    assert cfg["m2ib"]["layer"] == 2  # the --set override is recorded
    assert cfg["m2ib"]["seed"] == 3 and cfg["prompts"]["seed"] == 3
    assert cfg["postprocess"]["method"] == "otsu"
    models = summary["models"]
    assert models["clip"]["random_weights"] is True
    assert models["sam"]["random_weights"] is True
    assert isinstance(summary["warnings"], list) and summary["warnings"]
    assert any("RANDOM WEIGHTS" in w for w in summary["warnings"])
    assert summary["failed"] == []
    records = summary["images"]
    assert sorted(r["file"] for r in records) == sorted(sizes)
    for r in records:
        for key in ("found", "similarity", "visual_prompts", "seconds"):
            assert key in r, (r["file"], key)
        assert isinstance(r["found"], bool)
        assert isinstance(r["similarity"], float) and -1.0 <= r["similarity"] <= 1.0
        assert isinstance(r["visual_prompts"], dict)
        assert isinstance(r["seconds"], dict) and r["seconds"]["total"] >= 0
        assert r["mask"] == Path(r["file"]).stem + ".png"
        assert (r["height"], r["width"]) == sizes[r["file"]]
        mask = read_mask(out / r["mask"])
        assert int((mask > 0).sum()) == r["mask_pixels"]


def test_segment_overlays(normal_run):
    out, sizes = normal_run["out"], normal_run["sizes"]
    assert "overlays" in normal_run["stdout"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    by_file = {r["file"]: r for r in summary["images"]}
    for name, (h, w) in sizes.items():
        p = out / "overlays" / f"{Path(name).stem}.png"
        assert p.is_file(), name
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            ow, oh = im.size
        assert ow >= 3 * w, f"{name}: overlay {ow} px wide for a {w} px image (three panels expected)"
        assert oh >= h
        assert by_file[name]["overlay"] == f"overlays/{Path(name).stem}.png"


def test_segment_is_deterministic_with_seed(normal_run, tmp_path):
    out2 = tmp_path / "again"
    code, _, err = run_cli(segment_argv(normal_run["input"], out2, "--seed", "3"))
    assert code == 0, err
    for name in normal_run["sizes"]:
        stem = Path(name).stem
        np.testing.assert_array_equal(read_mask(out2 / f"{stem}.png"), read_mask(normal_run["out"] / f"{stem}.png"),
                                      err_msg=name)
    # without --overlays no overlay folder is written
    assert not (out2 / "overlays").exists()


def test_segment_outputs_follow_umask(normal_run, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "perm"
        code, _, err = run_cli(segment_argv(normal_run["input"], out))
    finally:
        os.umask(old)
    assert code == 0, err
    for p in [out / "summary.json", out / "disk.png"]:
        mode = p.stat().st_mode & 0o777
        assert mode & 0o044 == 0o044, f"{p.name} has mode {oct(mode)}; a umask of 022 gives 0644"


def test_segment_never_overwrites_its_inputs(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(disk_array(40, 48, 20, 24, 8)).save(folder / "scan.png")
    original = (folder / "scan.png").read_bytes()
    code, _, err = run_cli(segment_argv(folder, folder))
    assert "Traceback" not in err
    # Either refused up front (exit 2) or written elsewhere: the input image itself must survive.
    assert (folder / "scan.png").read_bytes() == original, f"exit {code}: the input image was replaced by its mask"


# ---------------------------------------------------------------------------------------
# other runs
# ---------------------------------------------------------------------------------------


def test_segment_preset_v1(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(disk_array(40, 52, 20, 26, 9)).save(inp / "one.png")
    out = tmp_path / "out"
    code, _, err = run_cli(segment_argv(inp, out, "--preset", "v1"))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["preset"] == "v1"
    assert summary["config"]["saliency"] == "gscorecam"
    assert summary["config"]["postprocess"]["method"] == "crf"
    mask = read_mask(out / "one.png")
    assert mask.shape == (40, 52) and set(np.unique(mask).tolist()) <= {0, 255}


def test_segment_single_file_input(tmp_path):
    p = tmp_path / "solo.png"
    Image.fromarray(disk_array(33, 47, 16, 20, 7)).save(p)
    out = tmp_path / "out"
    code, _, err = run_cli(segment_argv(p, out))
    assert code == 0, err
    assert read_mask(out / "solo.png").shape == (33, 47)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [r["file"] for r in summary["images"]] == ["solo.png"]


def test_segment_with_a_corrupt_file(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(disk_array(40, 50, 20, 25, 8)).save(inp / "good_a.png")
    Image.fromarray(disk_array(30, 60, 15, 30, 6)).save(inp / "good_b.png")
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    out = tmp_path / "out"
    code, stdout, err = run_cli(segment_argv(inp, out))
    assert code == 1, err
    assert "Traceback" not in err
    assert "broken.png" in err
    assert read_mask(out / "good_a.png").shape == (40, 50)
    assert read_mask(out / "good_b.png").shape == (30, 60)
    assert not (out / "broken.png").exists()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert sorted(r["file"] for r in summary["images"]) == ["good_a.png", "good_b.png"]
    assert len(summary["failed"]) == 1
    failed = summary["failed"][0]
    assert failed["file"] == "broken.png"
    assert isinstance(failed["error"], str) and "broken.png" in failed["error"]
    assert "1 failed" in stdout
    assert leftovers(out) == []


def test_segment_prompt_file(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(disk_array(40, 40, 20, 20, 8)).save(inp / "lesion1.png")
    pf = tmp_path / "prompts.json"
    pf.write_text(json.dumps({"lesion": ["bright round lesion", "a round mass"], "other": "lungs"}), encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(segment_argv(inp, out, "--prompt-file", str(pf), "--task", "lesion", prompt=None))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["prompts"] == ["bright round lesion", "a round mass"]
    assert summary["task"] == "lesion"
    assert (out / "lesion1.png").is_file()


# ---------------------------------------------------------------------------------------
# bad input: exit code 2, one error line, no summary.json
# ---------------------------------------------------------------------------------------


@pytest.fixture
def one_image(tmp_path) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(disk_array(32, 40, 16, 20, 6)).save(inp / "img.png")
    return inp


def _expect_usage_error(argv: list[str], out: Path, *needles: str) -> str:
    code, _, err = run_cli(argv)
    line = assert_usage_error(code, err, *needles)
    assert not (out / "summary.json").exists()
    if out.is_dir():
        assert not any(out.glob("*.png"))
    return line


def test_error_empty_prompt(one_image, tmp_path):
    out = tmp_path / "out"
    line = _expect_usage_error(segment_argv(one_image, out, prompt="  "), out)
    assert "prompt" in line and "empty" in line


def test_error_no_prompt_at_all(one_image, tmp_path):
    out = tmp_path / "out"
    line = _expect_usage_error(segment_argv(one_image, out, prompt=None), out)
    assert "prompt" in line


def test_error_missing_input(tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "no_such_folder_xyz"
    _expect_usage_error(segment_argv(missing, out), out, "no_such_folder_xyz", "not found")


def test_error_empty_folder(tmp_path):
    empty = tmp_path / "empty_inputs"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    _expect_usage_error(segment_argv(empty, out), out, "no images", "empty_inputs")


def test_error_prompt_file_without_task(one_image, tmp_path):
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"lesion": ["bright round lesion"]}))
    out = tmp_path / "out"
    _expect_usage_error(segment_argv(one_image, out, "--prompt-file", str(pf), prompt=None), out, "--task")


def test_error_prompt_file_unknown_task(one_image, tmp_path):
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"lesion": ["bright round lesion"], "kidney": "left kidney"}))
    out = tmp_path / "out"
    line = _expect_usage_error(segment_argv(one_image, out, "--prompt-file", str(pf), "--task", "tumour",
                                            prompt=None), out, "tumour")
    assert "lesion" in line and "kidney" in line  # lists the tasks it has


def test_error_missing_sam_checkpoint(one_image, tmp_path):
    out = tmp_path / "out"
    argv = ["segment", str(one_image), "--out", str(out), "--prompt", "disk", "--quiet",
            "--clip", "random:tiny", "--sam", "vit_b:/nonexistent/sam_vit_b_01ec64.pth", "--set", "m2ib.layer=2"]
    _expect_usage_error(argv, out, "sam_vit_b_01ec64.pth", "dl.fbaipublicfiles.com")


@pytest.fixture(scope="module")
def truncated_sam(tmp_path_factory) -> Path:
    import torch

    from medclipsam.models import load_sam

    folder = tmp_path_factory.mktemp("sam")
    whole = folder / "sam_tiny.pth"
    torch.save(load_sam("tiny:random").model.state_dict(), whole)
    data = whole.read_bytes()
    cut = folder / "sam_tiny_truncated.pth"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_error_truncated_sam_checkpoint(one_image, tmp_path, truncated_sam):
    out = tmp_path / "out"
    argv = ["segment", str(one_image), "--out", str(out), "--prompt", "disk", "--quiet",
            "--clip", "random:tiny", "--sam", f"tiny:{truncated_sam}", "--set", "m2ib.layer=2"]
    _expect_usage_error(argv, out, "truncated", truncated_sam.name)


def test_complete_tiny_sam_checkpoint_loads(one_image, tmp_path, truncated_sam):
    """Control for the truncation test: the same checkpoint, whole, runs and is not 'random'."""
    whole = truncated_sam.with_name("sam_tiny.pth")
    out = tmp_path / "out"
    argv = ["segment", str(one_image), "--out", str(out), "--prompt", "disk", "--quiet",
            "--clip", "random:tiny", "--sam", f"tiny:{whole}", "--set", "m2ib.layer=2"]
    code, _, err = run_cli(argv)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["models"]["sam"]["random_weights"] is False
    assert summary["models"]["clip"]["random_weights"] is True


def test_error_clip_local_dir_without_weights(one_image, tmp_path):
    empty = tmp_path / "clip_folder_empty"
    empty.mkdir()
    out = tmp_path / "out"
    argv = ["segment", str(one_image), "--out", str(out), "--prompt", "disk", "--quiet",
            "--clip", f"local-dir:{empty}", "--sam", "tiny:random"]
    _expect_usage_error(argv, out, "clip_folder_empty")


def test_error_unknown_setting(one_image, tmp_path):
    out = tmp_path / "out"
    line = _expect_usage_error(segment_argv(one_image, out, "--set", "m2ib.nonsense=1"), out, "m2ib.nonsense")
    for field in ("beta", "layer", "steps", "seed"):
        assert field in line


def test_error_output_is_a_file(one_image, tmp_path):
    blocker = tmp_path / "i_am_a_file"
    blocker.write_text("do not overwrite me")
    _expect_usage_error(segment_argv(one_image, blocker), blocker, "i_am_a_file")
    assert blocker.read_text() == "do not overwrite me"
    under = blocker / "sub"
    _expect_usage_error(segment_argv(one_image, under), under, "i_am_a_file")
    assert blocker.read_text() == "do not overwrite me"


def test_usage_errors_via_capsys(one_image, tmp_path, capsys):
    """The same contract seen through pytest's own capture (no redirect helpers)."""
    code = main(segment_argv(one_image, tmp_path / "out", prompt=""))
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip().startswith("error: ")
    assert captured.err.strip().count("\n") == 0
    assert captured.out == ""


# ---------------------------------------------------------------------------------------
# the installed console script
# ---------------------------------------------------------------------------------------


def _console_script() -> Path:
    candidate = Path(sys.executable).parent / "medclipsam"
    if candidate.is_file():
        return candidate
    found = shutil.which("medclipsam")
    if not found:
        pytest.fail("the medclipsam console script is not installed next to the interpreter nor on PATH")
    return Path(found)


def test_console_script_entry_point(tmp_path):
    exe = _console_script()
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"medclipsam {__version__}"
    r = subprocess.run([str(exe), "segment", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--prompt" in r.stdout and "--out" in r.stdout
    # the exit code of main() becomes the process exit code
    r = subprocess.run([str(exe), "evaluate", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")


# ---------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------


def _save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


@pytest.fixture
def mask_folders(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    h, w = 40, 50
    same = np.zeros((h, w), bool)
    same[5:20, 10:30] = True
    left = np.zeros((h, w), bool)
    left[5:30, 2:15] = True
    right = np.zeros((h, w), bool)
    right[10:35, 30:45] = True
    empty = np.zeros((h, w), bool)
    # partial overlap: pred 10×10 block, gt shifted by 5 columns -> |G∩S| = 50, |G|+|S| = 200 -> DSC 0.5
    part_p = np.zeros((h, w), bool)
    part_p[10:20, 10:20] = True
    part_g = np.zeros((h, w), bool)
    part_g[10:20, 15:25] = True
    # written in a different order in each folder, with different extensions
    _save_mask(pred / "case_c.png", empty)
    _save_mask(pred / "case_a.png", same)
    _save_mask(pred / "case_b.png", left)
    _save_mask(gt / "case_b.tif", right)
    _save_mask(gt / "case_c.tif", empty)
    _save_mask(gt / "case_a.tif", same)
    expected = {"case_a": 1.0, "case_b": 0.0, "case_c": 1.0}
    return pred, gt, expected, (part_p, part_g)


LAST_LINE = re.compile(r"^dsc=(\d\.\d{4}) iou=(\d\.\d{4}) nsd=(\d\.\d{4}) n=(\d+)$")


def test_evaluate_folders(mask_folders, capsys):
    pred, gt, expected, _ = mask_folders
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    last = captured.out.strip().splitlines()[-1]
    assert re.match(r"^dsc=\d\.\d{4} iou=\d\.\d{4} nsd=\d\.\d{4} n=3$", last), last
    m = LAST_LINE.match(last)
    mean_dsc = sum(expected.values()) / len(expected)  # (1 + 0 + 1) / 3
    assert float(m.group(1)) == pytest.approx(round(mean_dsc, 4), abs=1e-9)
    assert float(m.group(2)) == pytest.approx(round(mean_dsc, 4), abs=1e-9)  # IoU: same 1, 0, 1
    csv_path = pred / "evaluation.csv"
    assert csv_path.is_file()
    assert str(csv_path) in captured.out
    rows = csv_path.read_text(encoding="utf-8").strip().splitlines()
    assert rows[0].split(",")[:2] == ["name", "dsc"]
    body = [r.split(",") for r in rows[1:]]
    assert len(body) == 3
    assert {r[0]: float(r[1]) for r in body} == expected
    assert {r[0]: r[-1] for r in body}["case_c"] == "both_empty"


def test_evaluate_partial_overlap_and_csv_option(mask_folders, tmp_path, capsys):
    pred, gt, expected, (part_p, part_g) = mask_folders
    _save_mask(pred / "case_d.bmp", part_p)
    _save_mask(gt / "case_d.png", part_g)
    _save_mask(pred / "only_pred.png", part_p)  # unmatched: not scored
    csv_path = tmp_path / "reports" / "scores.csv"
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--csv", str(csv_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    m = LAST_LINE.match(captured.out.strip().splitlines()[-1])
    assert m and m.group(4) == "4"
    assert float(m.group(1)) == pytest.approx(round((1 + 0 + 1 + 0.5) / 4, 4), abs=1e-9)
    assert "only_pred.png" in captured.out
    assert len(csv_path.read_text().strip().splitlines()) == 1 + 4
    assert not (pred / "evaluation.csv").exists()


def test_evaluate_missing_gt_folder(mask_folders, tmp_path, capsys):
    pred, _, _, _ = mask_folders
    missing = tmp_path / "gt_that_is_not_there"
    code = main(["evaluate", "--pred", str(pred), "--gt", str(missing)])
    captured = capsys.readouterr()
    assert_usage_error(code, captured.err, "gt_that_is_not_there")
    assert not (pred / "evaluation.csv").exists()


def test_missing_prompt_is_named_as_missing(tmp_path, capsys):
    from medclipsam.cli import main

    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(disk_array(40, 48, 20, 24, 8)).save(inp / "scan.png")
    code = main(["segment", str(inp), "--out", str(tmp_path / "out"), "--clip", "random:tiny", "--sam", "tiny:random"])
    assert code == 2 and "no text prompt given" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_failed_model_load_leaves_no_empty_output_folder(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(disk_array(40, 48, 20, 24, 8)).save(inp / "scan.png")
    out = tmp_path / "new-out"
    from medclipsam.cli import main
    code = main(["segment", str(inp), "--prompt", "x", "--out", str(out), "--clip", "random:tiny",
                 "--sam", f"vit_b:{tmp_path / 'missing.pth'}"])
    assert code == 2 and not out.exists()


def test_dicom_without_preamble_is_read(tmp_path):
    """DICOM written without the 128-byte preamble and file meta (old or exported files) still reads."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.dataset import FileMetaDataset

    from medclipsam.image import read_image

    ct = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(ct)
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare, write_like_original=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_image(bare), read_image(ct))


def test_model_card_recommended_settings_apply_unless_the_user_sets_them(tmp_path, tiny_clip, tiny_sam, capsys):
    """A small model's card recommends its M2IB layer; without it the default block 9 does not exist."""
    import json

    from medclipsam.cli import main
    from medclipsam.models.cards import MODEL_CARD
    from medclipsam.models.clip import write_clip_folder

    folder = write_clip_folder(tmp_path / "clip", "tiny", tiny_clip.model.state_dict())
    image = Path(__file__).resolve().parents[1] / "sample-data" / "images" / "us_breast_lesion.png"
    args = ["segment", str(image), "--prompt", "lesion", "--clip", f"local-dir:{folder}", "--sam", "tiny:random"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    assert "layer" in capsys.readouterr().err
    (folder / MODEL_CARD).write_text(json.dumps({"name": "t", "pipeline_overrides": {"m2ib.layer": 2}}))
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "recommended by the model card of local-dir:" in err and ": m2ib.layer=2" in err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["config"]["m2ib"]["layer"] == 2
    assert main(args + ["--out", str(tmp_path / "c"), "--set", "m2ib.layer=1"]) == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["config"]["m2ib"]["layer"] == 1
