"""What may reach a datastore from the network: image ids, label tags, session ids and new names.

The server sits on a hospital network, so everything that arrives over HTTP is hostile until it is
checked. MONAI Label 0.8.5 joins ids and tags straight into file paths (``PUT
/datastore/label?tag=../../x`` writes outside the store). The rules here, used by the guarded
datastores (:mod:`.store_guard`) and the HTTP routes (:mod:`.routes`):

* an **existing image** is named by one of the store's own ids, compared as a string — never
  resolved as a path; anything else is :class:`~medclipsam.errors.NotFoundError`;
* a **new name** (an uploaded image's id) and a **label tag** must match a strict pattern (letters,
  digits, ``_``, ``-``, inner dots; no separators, no ``..``, no percent-escapes, bounded length);
* every path the store writes is resolved and must stay inside the store's root (:func:`confine`).

Messages quote what was sent (shortened) and never list files outside the store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from ..errors import InputError, NotFoundError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,127}$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SESSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{7,63}$")
LIST_IMAGES_HINT = "list the images with GET /datastore/?output=all"


def shown(value: object, limit: int = 80) -> str:
    """``value`` quoted for a message, shortened: hostile input must not flood a log or a reply."""
    text = repr(str(value))
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def check_name(name: str, what: str = "image id") -> str:
    """A new name the store will use in a file name (an uploaded image's id)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InputError(f"{what} {shown(name)} is not allowed: use 1-128 letters, digits, '_', '-' or "
                         "inner dots (no '/', '\\', '..', '%' or spaces)")
    return name


def check_tag(tag: str) -> str:
    """A label tag (``final``, ``original`` or another plain word)."""
    if not isinstance(tag, str) or not TAG_PATTERN.match(tag):
        raise InputError(f"label tag {shown(tag)} is not allowed: use 1-64 letters, digits, '_' or '-' "
                         "(e.g. final)")
    return tag


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_PATTERN.match(session_id):
        raise NotFoundError(f"session {shown(session_id)} not found; create one with PUT /session/")
    return session_id


def check_known_image(image_id: str, known: Iterable[str]) -> str:
    """``image_id`` if it is one of the store's ids (string comparison), else NotFoundError."""
    if isinstance(image_id, str) and image_id and image_id in set(known):
        return image_id
    if not image_id:
        raise InputError(f"no image given; name one of the datastore's images ({LIST_IMAGES_HINT})")
    raise NotFoundError(f"image {shown(image_id)} is not in the datastore; {LIST_IMAGES_HINT}")


def confine(root: str | Path, path: str | Path) -> Path:
    """``path`` resolved, if it lies inside ``root`` (resolved); else InputError. Symbolic links are
    followed, so a link inside the store that points out of it is refused too."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target != base and base not in target.parents:
        raise InputError("refused: the request would touch a file outside the datastore")
    return target
