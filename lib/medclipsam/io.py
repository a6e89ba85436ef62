"""Finding inputs and writing outputs atomically (a temporary file, then a rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError
from .image import is_supported_image


def list_inputs(path: str | Path) -> list[Path]:
    """An image file, or the supported images in a folder (sorted by name, not recursive)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise InputError(f"input not found: {p}")
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and is_supported_image(f))
    if not files:
        raise InputError(f"no images in {p}: expected PNG, JPEG, TIFF, BMP or single-frame DICOM files")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise InputError(f"{stems[f.stem].name} and {f.name} in {p} would write the same mask {f.stem}.png; "
                             "rename one of them")
        stems[f.stem] = f
    return files


def check_outputs_do_not_overwrite_inputs(inputs: list[Path], out: Path, suffix: str = ".png") -> None:
    """Refuse an output folder in which a mask would replace one of the inputs."""
    targets = {(out / f"{f.stem}{suffix}").resolve() for f in inputs}
    clash = [f for f in inputs if f.resolve() in targets]
    if clash:
        raise InputError(f"--out {out} would overwrite the input {clash[0].name} with its mask; "
                         "choose an output folder different from the input folder")


def ensure_writable_dir(path: str | Path) -> Path:
    """Create (if needed) and check an output folder; see :func:`remove_if_empty` for clean-up."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-", delete=True):
            pass
    except OSError as e:
        raise InputError(f"cannot write to output folder {p}: {e.strerror or e}. "
                         "Choose a folder you can write to") from None
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_if_empty(path: Path) -> None:
    """Remove an output folder this run created when it failed before writing anything."""
    try:
        p = Path(path)
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    except OSError:
        pass


def _atomic(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename: never a half-written output.
    The file gets the permissions a plain ``open()`` would give (``mkstemp`` makes it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_png(path: str | Path, array: np.ndarray) -> Path:
    return _atomic(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """A 0/255 8-bit PNG (what the reference's evaluation and most viewers expect)."""
    return write_png(path, np.where(mask, 255, 0).astype(np.uint8))


def write_json(path: str | Path, data: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=_json_default)
            f.write("\n")

    return _atomic(Path(path), write)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
