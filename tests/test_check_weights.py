"""``medclipsam check-weights`` (issue 5: where to put real weights and how to check them)."""

from __future__ import annotations

import shutil

from medclipsam.cli import main
from medclipsam.demo import DEMO_CLIP, DEMO_SAM, DEMO_SAM_PATH


def test_demo_models_pass(capsys):
    assert main(["check-weights", "--clip", DEMO_CLIP, "--sam", DEMO_SAM]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "clip=ok sam=ok"
    assert "DEMO MODEL" in out and "sha256" in out and "forward: text (2, 64)" in out


def test_missing_sam_checkpoint_names_file_and_source(tmp_path, capsys):
    assert main(["check-weights", "--clip", DEMO_CLIP, "--sam", f"vit_h:{tmp_path}/sam_vit_h_4b8939.pth"]) == 2
    err = capsys.readouterr().err
    assert "sam_vit_h_4b8939.pth" in err and "Download it from" in err


def test_truncated_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "demo-sam.pth"
    shutil.copy(DEMO_SAM_PATH, bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert main(["check-weights", "--clip", DEMO_CLIP, "--sam", f"demo:{bad}"]) == 2
    assert str(bad) in capsys.readouterr().err
