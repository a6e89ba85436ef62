"""Errors that say what is wrong and what to do about it.

Every error the engine raises for bad input or a bad set-up is a :class:`MedClipSamError`;
the CLI prints its message (no traceback) and exits non-zero.
"""

from __future__ import annotations


class MedClipSamError(Exception):
    """Base class: the message names the problem and the fix."""


class CheckpointError(MedClipSamError):
    """A model checkpoint is missing, truncated, corrupt or of the wrong architecture."""


class ModelSpecError(MedClipSamError):
    """A model specification string (``--clip`` / ``--sam``) cannot be understood."""


class InputError(MedClipSamError):
    """An input image, prompt or folder cannot be used."""


class ConfigError(MedClipSamError):
    """A configuration value or override is invalid."""


class UnknownMethodError(ConfigError):
    """A registry was asked for a method it does not have."""


class NotFoundError(InputError):
    """A request names an image, label, model or session the server does not have (HTTP 404)."""


class RefusedError(InputError):
    """A request the server's settings do not allow (HTTP 403), e.g. deleting a source study."""


class ConflictError(InputError):
    """A request would overwrite something that must be kept (HTTP 409)."""


class TooLargeError(InputError):
    """An upload over the server's size limit (HTTP 413)."""


class UpstreamError(MedClipSamError):
    """A service the server relies on (the PACS) failed or refused; not the client's fault (HTTP 502)."""


class LabelShapeError(InputError, ValueError):
    """A label array does not match the grid it is written on (also a ValueError: a caller bug)."""
