"""Login and network exposure of the MONAI Label server (issue 21, points 4 and 5).

* **Token check** — MONAI Label 0.8.5's ``monailabel.endpoints.user.auth.from_token`` calls
  ``jwt.decode`` without ``algorithms=``, which PyJWT 2 refuses, so with
  ``MONAI_LABEL_AUTH_ENABLE=true`` every request is answered 401. :func:`install_token_check`
  replaces it (``get_current_user`` looks the function up at call time) with :func:`user_from_token`,
  which accepts only the asymmetric algorithms of ``MEDCLIPSAM_AUTH_ALGORITHMS`` (comma-separated,
  default ``RS256``) that fit the realm's public key, requires an expiry, and answers 503 naming
  ``MONAI_LABEL_AUTH_REALM_URI`` when the realm cannot be reached (MONAI Label gave a bare 500).
* **Exposure warning** — ``monailabel start_server`` binds ``0.0.0.0`` unless ``-i`` says otherwise:
  :func:`exposure_warning` gives one line for the server log when it listens on a non-loopback address
  without login.
* **CORS** — MONAI Label allows every origin unless ``MONAI_LABEL_CORS_ORIGINS`` is set, and in 0.8.5
  that setting cannot be used: ``monailabel start_server`` crashes on it (``json.dumps`` of pydantic's
  ``AnyHttpUrl`` while logging the settings), and run otherwise pydantic 2 gives each origin a trailing
  ``/`` that no browser's ``Origin`` header matches. ``MEDCLIPSAM_CORS_ORIGINS`` (comma-separated
  origins, e.g. ``https://ohif.example.org``) is applied instead to MONAI Label's CORS middleware by
  :func:`apply_cors_origins`; :func:`fix_cors_origins` strips the slash; the allowed origins are logged.

:func:`secure_server_start` does all of it once at app start (from
:func:`medclipsam.serving.app_setup.handle_environment_traps`).
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import logging
import os
import re
import socket
import sys
import threading
import time
from typing import Any, Sequence

from ..errors import ConfigError

logger = logging.getLogger(__name__)

ALGORITHMS_SETTING = "MEDCLIPSAM_AUTH_ALGORITHMS"
CORS_SETTING = "MEDCLIPSAM_CORS_ORIGINS"
DEFAULT_ALGORITHMS = "RS256"
KEY_CACHE_SECONDS = 600.0          # the realm's key is fetched again after this (key rotation)
RETRY_SECONDS = 30.0               # a realm that failed is asked again after this (each try may block)

# Asymmetric JWS algorithms by the kind of public key they verify with. HMAC (HS*) is never
# accepted: the realm publishes its key, and a token "signed" with a public key as HMAC secret is the
# classic algorithm-confusion forgery.
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = ("ES256", "ES384", "ES512")
_OKP = ("EdDSA",)


class RealmUnavailable(Exception):
    """The Keycloak realm's public key cannot be fetched or read (answered as HTTP 503)."""


_key_cache: dict[str, tuple[float, Any]] = {}
_failures: dict[str, tuple[float, RealmUnavailable]] = {}
_key_lock = threading.Lock()


# ---------------------------------------------------------------- token check

def allowed_algorithms(value: str | None = None) -> list[str]:
    """The algorithms of ``MEDCLIPSAM_AUTH_ALGORITHMS`` (or ``value``), checked: asymmetric only."""
    raw = os.environ.get(ALGORITHMS_SETTING, DEFAULT_ALGORITHMS) if value is None else value
    names = [a.strip() for a in raw.split(",") if a.strip()]
    known = {a.upper(): a for a in _RSA + _EC + _OKP}
    bad = [a for a in names if a.upper() not in known]
    if bad or not names:
        raise ConfigError(f"{ALGORITHMS_SETTING}={raw!r}: {', '.join(bad) or 'empty'} not accepted; use asymmetric "
                          f"JWS algorithms the realm signs with, e.g. RS256 (default), one of "
                          f"{', '.join(_RSA + _EC + _OKP)} (HS* and none are refused)")
    return [known[a.upper()] for a in names]


def algorithms_for_key(key: Any, algorithms: Sequence[str]) -> list[str]:
    """Those of ``algorithms`` that verify with ``key`` (a ``cryptography`` public key); raises
    :class:`RealmUnavailable` naming the setting when none does."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        family = _RSA
    elif isinstance(key, ec.EllipticCurvePublicKey):
        family = _EC
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        family = _OKP
    else:
        family = ()
    usable = [a for a in algorithms if a in family]
    if not usable:
        raise RealmUnavailable(f"the realm's {type(key).__name__} cannot verify {', '.join(algorithms)}; "
                               f"set {ALGORITHMS_SETTING} to one of {', '.join(family) or 'nothing known'}")
    return usable


def _fetch_public_key(realm_uri: str, timeout: float) -> Any:
    import requests
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        r = requests.get(realm_uri, timeout=timeout)
        r.raise_for_status()
        body = r.json()["public_key"]
        return load_der_public_key(base64.b64decode("".join(str(body).split())))
    except requests.RequestException as e:
        raise RealmUnavailable(f"the login realm MONAI_LABEL_AUTH_REALM_URI={realm_uri} cannot be reached "
                               f"({type(e).__name__}); check the setting and that Keycloak is up") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RealmUnavailable(f"MONAI_LABEL_AUTH_REALM_URI={realm_uri} did not answer a Keycloak realm with a "
                               f"'public_key' ({type(e).__name__}); it must be the realm's URL, e.g. "
                               f"https://keycloak.example.org/realms/monailabel") from None


def realm_public_key(realm_uri: str, timeout: float = 10.0) -> Any:
    """The realm's public key, fetched from ``realm_uri`` (JSON ``public_key``: base64 DER) and kept
    for :data:`KEY_CACHE_SECONDS`. While the realm is down a key fetched before is used, and the realm
    is asked again only every :data:`RETRY_SECONDS` (a failed fetch is raised again meanwhile)."""
    now = time.monotonic()
    with _key_lock:
        cached = _key_cache.get(realm_uri)
        if cached and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        failed = _failures.get(realm_uri)
        if failed and now - failed[0] < RETRY_SECONDS:
            if cached:
                return cached[1]
            raise failed[1]
        try:
            key = _fetch_public_key(realm_uri, timeout)
        except RealmUnavailable as e:
            _failures[realm_uri] = (now, e)
            if cached is None:
                raise
            logger.warning("medclipsam: %s; using the key fetched %.0f s ago", e, now - cached[0])
            return cached[1]
        _failures.pop(realm_uri, None)
        _key_cache[realm_uri] = (now, key)
        return key


def claim(payload: dict[str, Any], path: str) -> Any:
    """The claim at ``path`` (``#`` separates nested names, e.g. ``realm_access#roles``), else None."""
    value: Any = payload
    for name in path.split("#"):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def decode_token(token: str, key: Any, algorithms: Sequence[str]) -> dict[str, Any]:
    """The verified claims of ``token``: signature by ``key`` with one of ``algorithms``, an ``exp``
    claim in the future (audience not checked: Keycloak's is the client's, e.g. ``account``).
    Raises ``jwt.InvalidTokenError`` (MONAI Label answers it with 401)."""
    import jwt

    return jwt.decode(token, key, algorithms=list(algorithms_for_key(key, algorithms)),
                      options={"verify_signature": True, "verify_exp": True, "verify_aud": False,
                               "require": ["exp"]})


def user_from_token(token: str):
    """MONAI Label's ``from_token`` done right: the ``User`` a bearer token stands for.

    Bad, expired or foreign tokens raise ``jwt.InvalidTokenError`` (401); a realm that cannot be
    reached or a key that fits no allowed algorithm raises ``HTTPException(503)`` naming the setting.
    """
    import jwt
    from fastapi import HTTPException
    from monailabel.config import settings
    from monailabel.endpoints.user.auth import DEFAULT_USER, User

    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return DEFAULT_USER
    try:
        key = realm_public_key(settings.MONAI_LABEL_AUTH_REALM_URI, float(settings.MONAI_LABEL_AUTH_TIMEOUT))
        payload = decode_token(token, key, allowed_algorithms())
    except (RealmUnavailable, ConfigError) as e:
        logger.error("medclipsam: login: %s", e)
        raise HTTPException(status_code=503, detail=f"login is unavailable: {e}") from None
    username = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_USERNAME)
    if not isinstance(username, str) or not username:
        raise jwt.InvalidTokenError(f"the token has no {settings.MONAI_LABEL_AUTH_TOKEN_USERNAME!r} claim "
                                    f"(MONAI_LABEL_AUTH_TOKEN_USERNAME)")
    roles = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_ROLES)
    roles = [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []
    email = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_EMAIL)
    name = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_NAME)
    return User(username=username, email=email if isinstance(email, str) else None,
                name=name if isinstance(name, str) else None, roles=roles)


def install_token_check() -> bool:
    """Put :func:`user_from_token` in place of MONAI Label's ``from_token``; True when it is (again)
    in place, False when MONAI Label is not importable."""
    try:
        import monailabel.endpoints.user.auth as ml_auth
    except ImportError:
        return False
    ml_auth.from_token = user_from_token
    return True


# ---------------------------------------------------------------- exposure and CORS

def listen_host(argv: Sequence[str] | None = None) -> str | None:
    """The address ``monailabel start_server`` binds, parsed from ``argv`` (default ``sys.argv``) as its
    CLI does (``-i/--host``, default ``0.0.0.0``); None when ``argv`` does not start a server (a
    training subprocess, a test)."""
    argv = list(sys.argv if argv is None else argv)
    if "start_server" not in argv:
        return None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-i", "--host", default="0.0.0.0")
    parser.add_argument("-c", "--conf", nargs=2, action="append")     # so that a --conf value is never read as -i
    try:
        args, _ = parser.parse_known_args(argv[argv.index("start_server") + 1:])
    except SystemExit:                      # argparse's way of saying "cannot parse": assume the default
        return "0.0.0.0"
    return args.host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches only this machine; ``0.0.0.0`` and ``::``
    (every interface) are not loopback, nor is a name that does not resolve."""
    h = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        pass
    if h.lower() == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(h, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def exposure_warning(host: str, auth_enabled: bool) -> str | None:
    """One line for the server log when the server listens on a non-loopback address without login."""
    if auth_enabled or is_loopback(host):
        return None
    where = "every network interface" if host.strip("[]") in ("0.0.0.0", "::", "") else host
    return (f"medclipsam: WARNING: the server listens on {host} ({where}) WITHOUT LOGIN: anyone who can reach "
            f"this port can read, change and delete studies and labels. Bind to loopback with -i 127.0.0.1, or "
            f"set MONAI_LABEL_AUTH_ENABLE=true with a Keycloak realm (README, 'Running on a network').")


def fix_cors_origins(origins: list[str]) -> list[str]:
    """Strip the trailing ``/`` pydantic adds to each ``MONAI_LABEL_CORS_ORIGINS`` URL, in place (the
    list is the one the CORS middleware matches ``Origin`` headers against); returns it."""
    origins[:] = [o if o == "*" else o.rstrip("/") for o in origins]
    return origins


def cors_origins_setting(value: str | None = None) -> list[str] | None:
    """The origins of ``MEDCLIPSAM_CORS_ORIGINS`` (or ``value``; commas or spaces between them), each
    ``scheme://host[:port]`` or ``*``; None when unset."""
    raw = os.environ.get(CORS_SETTING, "") if value is None else value
    names = [o.strip().rstrip("/") for o in re.split(r"[,\s]+", raw) if o.strip()]
    if not names:
        return None
    bad = [o for o in names if o != "*" and not re.fullmatch(r"https?://[^/\s?#]+", o)]
    if bad:
        raise ConfigError(f"{CORS_SETTING}={raw!r}: {', '.join(bad)} is not an origin; write "
                          f"scheme://host[:port] without a path, e.g. https://ohif.example.org,http://localhost:3000")
    return names


def apply_cors_origins(origins: list[str]) -> bool:
    """Make MONAI Label's CORS middleware allow exactly ``origins``: the list its app module holds is
    changed in place and the middleware stack is rebuilt on the next request (as
    :func:`.upload_limit.install_upload_limit` does). False when
    ``monailabel.app`` is not loaded."""
    from starlette.middleware.cors import CORSMiddleware

    app_module = sys.modules.get("monailabel.app")
    held = _middleware_origins()
    app = getattr(app_module, "app", None)
    if app is None or held is None:
        return False
    held[:] = origins
    for m in getattr(app, "user_middleware", []):
        if m.cls is CORSMiddleware:
            m.kwargs["allow_origins"] = held
    app.middleware_stack = None                       # rebuilt from user_middleware on the next request
    return True


def cors_line(origins: Sequence[str]) -> str:
    """The info line naming the origins whose web pages may call the server."""
    if not origins or "*" in origins:
        return ("medclipsam: CORS allows every origin (*): any web page a user opens may call this server; "
                f"restrict it with {CORS_SETTING}=https://ohif.example.org")
    return f"medclipsam: CORS allows the origins {', '.join(origins)} ({CORS_SETTING})"


def secure_server_start(argv: Sequence[str] | None = None) -> list[str]:
    """At app start: install the token check (checking ``MEDCLIPSAM_AUTH_ALGORITHMS`` when login is
    on), apply ``MEDCLIPSAM_CORS_ORIGINS`` and, in a ``start_server`` process, log the exposure warning
    and the CORS origins; returns the lines logged."""
    try:
        from monailabel.config import settings
    except ImportError:
        return []
    install_token_check()
    if settings.MONAI_LABEL_AUTH_ENABLE:
        allowed_algorithms()                    # a bad setting stops the start with its name
    wanted = cors_origins_setting()             # likewise
    if wanted is not None:
        apply_cors_origins(wanted)
    host = listen_host(argv)
    if host is None:
        return []
    lines = []
    warning = exposure_warning(host, bool(settings.MONAI_LABEL_AUTH_ENABLE))
    if warning:
        logger.warning(warning)
        lines.append(warning)
    origins = _middleware_origins()
    line = cors_line(fix_cors_origins(origins) if origins is not None else
                     [str(o) for o in settings.MONAI_LABEL_CORS_ORIGINS])
    logger.info(line)
    lines.append(line)
    return lines


def _middleware_origins() -> list[str] | None:
    """The origins list MONAI Label's app module gave its CORS middleware (None when not loaded)."""
    app_module = sys.modules.get("monailabel.app")
    origins = getattr(app_module, "origins", None)
    return origins if isinstance(origins, list) else None
