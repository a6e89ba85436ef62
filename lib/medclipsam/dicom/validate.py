"""Checking written DICOM objects with David Clunie's ``dciodvfy`` (dicom3tools), when installed.

``dciodvfy -new FILE`` validates an object against its IOD and writes one message per line to
standard error, each starting with ``Error -`` or ``Warning -`` (the ``-new`` format adds the full
path of the offending attribute); other lines name the IOD. :func:`validate_with_dciodvfy` runs it
and sorts the lines into a :class:`ValidationReport`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, InputError

DCIODVFY = "dciodvfy"


@dataclass
class ValidationReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def dciodvfy_available() -> bool:
    """True when ``dciodvfy`` is on PATH."""
    return shutil.which(DCIODVFY) is not None


def parse_dciodvfy(output: str) -> ValidationReport:
    """Sort dciodvfy's output lines into errors and warnings (other lines are kept in ``raw``)."""
    report = ValidationReport(raw=output)
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("Error"):
            report.errors.append(text)
        elif text.startswith("Warning"):
            report.warnings.append(text)
    return report


def validate_with_dciodvfy(path: str | Path, *, timeout: float = 120.0) -> ValidationReport:
    """Run ``dciodvfy -new path`` and return its errors and warnings.

    Raises :class:`ConfigError` when dciodvfy is not installed (Debian/Ubuntu: ``apt install
    dicom3tools``) or does not finish within ``timeout`` seconds, and :class:`InputError` when the
    file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"cannot validate {p}: file not found")
    exe = shutil.which(DCIODVFY)
    if exe is None:
        raise ConfigError("dciodvfy is not installed; install dicom3tools (e.g. apt install dicom3tools) "
                          "to validate DICOM files")
    try:
        done = subprocess.run([exe, "-new", str(p)], capture_output=True, text=True, errors="replace",
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"dciodvfy did not finish validating {p.name} within {timeout:g} s") from None
    return parse_dciodvfy((done.stdout or "") + (done.stderr or ""))
