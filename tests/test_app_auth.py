"""Login and secure defaults of the app's server (issue 21, points 4 and 5).

A fake Keycloak realm on loopback (its RSA key pair made here) and a real ``monailabel start_server``
with ``MONAI_LABEL_AUTH_ENABLE=true``: tokens signed with PyJWT are tried on ``/info/``, the app's own
infer route, the datastore and training. No token, an expired, tampered or foreign token → 401; a valid
token without the route's role → 403; the right role → the endpoint's own answer. The exposure
warning and CORS settings are checked on the same server and, for other hosts, directly.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from unittest import mock

import jwt
import pytest
import requests

import servers
from servers import ROOT, monailabel_server, multipart

SERIES = ROOT / "sample-data" / "phantoms" / "ct_chest"
TRUTH = ROOT / "sample-data" / "phantoms" / "ct_chest_labels.nii.gz"
ADMIN, REVIEWER, ANNOTATOR, USER = ("monailabel-admin", "monailabel-reviewer", "monailabel-annotator",
                                    "monailabel-user")
ALL_ROLES = [ADMIN, REVIEWER, ANNOTATOR, USER]   # a Keycloak admin's composite role expands to these
ORIGIN = "http://ohif.test:3000"
INFER_PARAMS = {"prompt": "tumor", "slices": "14:15"}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---------------------------------------------------------------- fake realm and tokens

def _rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_key_body(private_key) -> str:
    """What Keycloak's realm endpoint answers as ``public_key``: base64 DER, no PEM armour."""
    from cryptography.hazmat.primitives import serialization

    der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@contextmanager
def fake_realm(private_key) -> Iterator[str]:
    """A Keycloak-like realm on a free loopback port: ``/realms/test`` (JSON with ``public_key``) and
    its ``/.well-known/openid-configuration``; yields the realm URI."""
    state: dict[str, str] = {}

    class Realm(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            base = state["uri"]
            path = self.path.split("?")[0].rstrip("/")
            if path == "/realms/test":
                body = {"realm": "test", "public_key": _public_key_body(private_key),
                        "token-service": f"{base}/protocol/openid-connect"}
            elif path == "/realms/test/.well-known/openid-configuration":
                body = {"issuer": base, "token_endpoint": f"{base}/protocol/openid-connect/token",
                        "id_token_signing_alg_values_supported": ["RS256"]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Realm)
    state["uri"] = f"http://127.0.0.1:{httpd.server_address[1]}/realms/test"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["uri"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def make_token(private_key, roles: list[str], *, expires_in: float = 300, username: str = "alice",
               algorithm: str = "RS256", issuer: str = "fake-realm") -> str:
    now = int(time.time())
    claims = {"sub": f"id-{username}", "preferred_username": username, "iss": issuer, "aud": "account",
              "iat": now - 5, "exp": now + int(expires_in), "realm_access": {"roles": roles}}
    return jwt.encode(claims, private_key, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signature_changed(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(_unb64(sig))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{_b64(bytes(raw))}"


def payload_changed(token: str, roles: list[str]) -> str:
    """The token with its roles rewritten and the original signature (a privilege escalation try)."""
    head, body, sig = token.split(".")
    claims = json.loads(_unb64(body))
    claims["realm_access"]["roles"] = roles
    return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"


def unsigned(token: str) -> str:
    """The same claims with ``alg: none`` and no signature."""
    _, body, _ = token.split(".")
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}."


def hmac_with_public_key(private_key, roles: list[str]) -> str:
    """HS256 "signed" with the realm's public key as the secret (the algorithm-confusion forgery)."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"preferred_username": "mallory", "exp": now + 300,
                            "realm_access": {"roles": roles}}).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


# ---------------------------------------------------------------- the server

def _wait_for_login_server(url, proc, log, timeout):
    """servers._wait for a server with login on: ``/info/`` answers 401 (not 200) once it is up."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode}); its log:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code in (200, 401):
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout} s; log:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def keys():
    return {"realm": _rsa_key(), "other": _rsa_key()}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, keys):
    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import write_image

    root = tmp_path_factory.mktemp("auth_store")
    studies = root / "studies"
    studies.mkdir()
    with read_series(SERIES) as s:
        write_image(studies / "ct_chest.nii.gz", s)
    # not MONAI_LABEL_CORS_ORIGINS: monailabel 0.8.5's start_server crashes on it (see medclipsam.serving.auth)
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MEDCLIPSAM_CORS_ORIGINS": f"{ORIGIN}, http://localhost:3000/"}
    with fake_realm(keys["realm"]) as realm:
        env["MONAI_LABEL_AUTH_REALM_URI"] = realm
        with mock.patch.object(servers, "_wait", _wait_for_login_server):
            with monailabel_server(studies, root / "work", conf={"auto_train_after": "0"}, env=env) as url:
                yield url, root / "work"


def call(url: str, endpoint: str, token: str | None) -> requests.Response:
    """One request of ``endpoint`` (see ENDPOINTS), with ``Authorization: Bearer token`` when given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if endpoint == "info":
        return requests.get(f"{url}/info/", headers=headers, timeout=30)
    if endpoint == "infer":
        return requests.post(f"{url}/infer/medclipsam?image=ct_chest", data={"params": json.dumps(INFER_PARAMS)},
                             headers=headers, timeout=300)
    if endpoint == "datastore":
        return requests.get(f"{url}/datastore/?output=all", headers=headers, timeout=30)
    if endpoint == "label":
        with open(TRUTH, "rb") as f:
            return requests.put(f"{url}/datastore/label?image=ct_chest&tag=final", headers=headers, timeout=60,
                                data={"params": json.dumps({"label_info": [{"name": "tumor", "idx": 1}]})},
                                files={"label": ("final.nii.gz", f)})
    if endpoint == "train":
        # no final label is stored (auto_train_after 0; the label test removes its own): training is
        # refused by the trainer, which is an answer past login
        return requests.post(f"{url}/train/medclipsam_weak?run_sync=true", json={}, headers=headers, timeout=120)
    raise ValueError(endpoint)


ENDPOINTS = ("info", "infer", "datastore", "label", "train")
NEEDED = {"info": USER, "infer": USER, "datastore": USER, "label": ANNOTATOR, "train": ADMIN}


def _bad_token(kind: str, keys) -> str | None:
    realm, other = keys["realm"], keys["other"]
    return {"none": None,
            "empty": "",
            "garbage": "not-a-token",
            "expired": make_token(realm, ALL_ROLES, expires_in=-60),
            "signature changed": signature_changed(make_token(realm, ALL_ROLES)),
            "payload changed": payload_changed(make_token(realm, [USER]), ALL_ROLES),
            "another key": make_token(other, ALL_ROLES),
            "alg none": unsigned(make_token(realm, ALL_ROLES)),
            "HS256 with the public key": hmac_with_public_key(realm, ALL_ROLES)}[kind]


BAD_TOKENS = ("none", "empty", "garbage", "expired", "signature changed", "payload changed", "another key",
              "alg none", "HS256 with the public key")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bad_or_missing_token_is_401(auth_server, keys, endpoint):
    url, _ = auth_server
    for kind in BAD_TOKENS:                               # bounded: 9 requests per endpoint
        r = call(url, endpoint, _bad_token(kind, keys))
        assert r.status_code == 401, f"{endpoint} with {kind} token: {r.status_code} {r.text[:300]}"
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), kind


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_valid_token_without_the_role_is_403(auth_server, keys, endpoint):
    url, _ = auth_server
    # MONAI Label's roles are not hierarchical: every role but the needed one is still 403
    lacking = [r for r in ALL_ROLES if r != NEEDED[endpoint]]
    for roles in ([], ["offline_access", "uma_authorization"], lacking):
        r = call(url, endpoint, make_token(keys["realm"], roles))
        assert r.status_code == 403, f"{endpoint} with roles {roles}: {r.status_code} {r.text[:300]}"
        assert NEEDED[endpoint] in r.json()["detail"], r.text


def test_admin_token_reads_info_lists_the_datastore_and_infers(auth_server, keys):
    url, _ = auth_server
    token = make_token(keys["realm"], ALL_ROLES)
    r = call(url, "info", token)
    assert r.status_code == 200, r.text
    assert "medclipsam" in r.json()["models"]
    r = call(url, "datastore", token)
    assert r.status_code == 200 and "ct_chest" in r.json()["objects"], r.text
    r = call(url, "infer", token)
    assert r.status_code == 200, r.text[:500]
    parts = multipart(r)
    assert "params" in parts and len(parts.get("image", b"")) > 0


def test_user_role_alone_reads_and_infers(auth_server, keys):
    url, _ = auth_server
    token = make_token(keys["realm"], [USER], username="bob")
    assert call(url, "info", token).status_code == 200
    assert call(url, "datastore", token).status_code == 200
    r = requests.get(f"{url}/auth/token/valid", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200 and r.json()["username"] == "bob" and r.json()["roles"] == [USER], r.text


def test_annotator_saves_a_label_and_admin_removes_it(auth_server, keys):
    url, _ = auth_server
    r = call(url, "label", make_token(keys["realm"], [USER, ANNOTATOR], username="carol"))
    try:
        assert r.status_code == 200, r.text[:500]
        listed = requests.get(f"{url}/datastore/?output=all", timeout=30,
                              headers={"Authorization": f"Bearer {make_token(keys['realm'], [USER])}"}).json()
        assert "final" in listed["objects"]["ct_chest"]["labels"], listed
    finally:
        admin = {"Authorization": f"Bearer {make_token(keys['realm'], ALL_ROLES)}"}
        d = requests.delete(f"{url}/datastore/label?id=ct_chest&tag=final", headers=admin, timeout=30)
    assert d.status_code == 200, d.text


def test_admin_passes_login_on_train(auth_server, keys):
    """With no final label the trainer refuses to train: whatever it answers, it is past login."""
    url, _ = auth_server
    r = call(url, "train", make_token(keys["realm"], ALL_ROLES))
    assert r.status_code not in (401, 403), r.text[:500]


def test_cors_allows_only_the_configured_origin(auth_server):
    url, _ = auth_server
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = requests.options(f"{url}/info/", headers={"Origin": ORIGIN, **pre}, timeout=30)
    assert ok.status_code == 200 and ok.headers.get("access-control-allow-origin") == ORIGIN, ok.headers
    bad = requests.options(f"{url}/info/", headers={"Origin": "http://evil.test", **pre}, timeout=30)
    assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers


def test_loopback_server_logs_no_exposure_warning_and_names_cors_origins(auth_server):
    _, work = auth_server
    log = (work / "monailabel.log").read_text(errors="replace")
    assert "WITHOUT LOGIN" not in log
    assert f"CORS allows the origins {ORIGIN}, http://localhost:3000 (MEDCLIPSAM_CORS_ORIGINS)" in log, log[-3000:]


# ---------------------------------------------------------------- in-process units

@pytest.mark.parametrize("host, auth, warned", [
    ("0.0.0.0", False, True), ("::", False, True), ("[::]", False, True), ("10.1.2.3", False, True),
    ("0.0.0.0", True, False), ("::", True, False), ("10.1.2.3", True, False),
    ("127.0.0.1", False, False), ("::1", False, False), ("localhost", False, False), ("127.0.1.1", False, False),
])
def test_exposure_warning(host, auth, warned):
    from medclipsam.serving.auth import exposure_warning

    line = exposure_warning(host, auth)
    assert (line is not None) == warned
    if warned:
        assert "\n" not in line and host in line and "-i 127.0.0.1" in line and "MONAI_LABEL_AUTH_ENABLE" in line


@pytest.mark.parametrize("argv, host", [
    (["main.py", "start_server", "--app", "a", "--studies", "s"], "0.0.0.0"),
    (["main.py", "start_server", "-a", "a", "-i", "127.0.0.1", "-p", "8000"], "127.0.0.1"),
    (["main.py", "start_server", "--host", "10.1.2.3"], "10.1.2.3"),
    (["main.py", "start_server", "--host=::"], "::"),
    (["main.py", "start_server", "--conf", "i", "127.0.0.1"], "0.0.0.0"),
    (["main.py", "start_server", "--conf", "i"], "0.0.0.0"),             # unparsable: the CLI's default
    (["main.py", "start_server", "--conf", "prompt", "x", "-i", "10.0.0.5"], "10.0.0.5"),
    (["app.py", "-m", "train", "-r", "{}"], None),
])
def test_listen_host_reads_the_cli_as_monailabel_does(argv, host):
    from medclipsam.serving.auth import listen_host

    assert listen_host(argv) == host


def test_secure_server_start_warns_only_for_an_exposed_server_without_login(monkeypatch, caplog):
    import logging

    from monailabel.config import settings

    from medclipsam.serving.auth import secure_server_start

    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_ENABLE", False)
    with caplog.at_level(logging.INFO, logger="medclipsam.serving.auth"):
        lines = secure_server_start(["main.py", "start_server", "-a", "x", "-s", "y"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0].getMessage() and "WITHOUT LOGIN" in lines[0]
    assert any("CORS" in line for line in lines)
    caplog.clear()
    lines = secure_server_start(["main.py", "start_server", "-i", "127.0.0.1"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING] and len(lines) == 1
    assert secure_server_start(["app.py", "-m", "train"]) == []


def test_cors_origins_lose_pydantics_trailing_slash():
    from medclipsam.serving.auth import cors_line, fix_cors_origins

    origins = ["https://ohif.example.org/", "http://localhost:3000/"]
    same = fix_cors_origins(origins)
    assert same is origins and origins == ["https://ohif.example.org", "http://localhost:3000"]
    assert fix_cors_origins(["*"]) == ["*"]
    assert "every origin" in cors_line(["*"]) and "MEDCLIPSAM_CORS_ORIGINS" in cors_line(["*"])


def test_cors_origins_setting_is_checked():
    from medclipsam.errors import ConfigError
    from medclipsam.serving.auth import CORS_SETTING, cors_origins_setting

    assert cors_origins_setting("") is None
    assert cors_origins_setting("https://a.org/, http://localhost:3000 ") == ["https://a.org", "http://localhost:3000"]
    for bad in ("a.org", "https://a.org/ohif", "ftp://a.org", "https://a.org?x"):
        with pytest.raises(ConfigError, match=CORS_SETTING):
            cors_origins_setting(bad)


def test_apply_cors_origins_reconfigures_a_built_middleware(monkeypatch):
    """As in monailabel.app: a module-level ``origins`` list given to CORSMiddleware, the stack already
    built (the lifespan call that creates the app instance builds it first)."""
    import types

    from fastapi import FastAPI
    from fastapi.middleware import Middleware
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.testclient import TestClient

    from medclipsam.serving.auth import apply_cors_origins

    origins = ["*"]
    app = FastAPI(middleware=[Middleware(CORSMiddleware, allow_origins=origins, allow_credentials=True,
                                         allow_methods=["*"], allow_headers=["*"])])
    app.get("/x")(lambda: {})
    module = types.SimpleNamespace(app=app, origins=origins)
    monkeypatch.setitem(__import__("sys").modules, "monailabel.app", module)
    client = TestClient(app)
    pre = {"Access-Control-Request-Method": "GET"}
    assert client.options("/x", headers={"Origin": "http://evil.test", **pre}).status_code == 200   # built, "*"
    assert apply_cors_origins([ORIGIN])
    assert origins == [ORIGIN]
    assert client.options("/x", headers={"Origin": "http://evil.test", **pre}).status_code == 400
    ok = client.options("/x", headers={"Origin": ORIGIN, **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN


def test_algorithms_setting_refuses_symmetric_and_unknown(monkeypatch):
    from medclipsam.errors import ConfigError
    from medclipsam.serving.auth import ALGORITHMS_SETTING, allowed_algorithms

    monkeypatch.delenv(ALGORITHMS_SETTING, raising=False)
    assert allowed_algorithms() == ["RS256"]
    assert allowed_algorithms("rs256, PS256") == ["RS256", "PS256"]
    for bad in ("HS256", "none", "RS256,HS512", "", "RSA"):
        with pytest.raises(ConfigError, match=ALGORITHMS_SETTING):
            allowed_algorithms(bad)


def test_token_check_in_process(monkeypatch, keys):
    """The replacement of MONAI Label's from_token: accepted claims, refusals, an unreachable realm → 503
    naming MONAI_LABEL_AUTH_REALM_URI, an algorithm the key cannot verify → 503 naming the setting."""
    from fastapi import HTTPException
    from monailabel.config import settings

    from medclipsam.serving import auth

    from servers import free_port

    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_ENABLE", True)
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_TIMEOUT", 3)
    monkeypatch.setattr(auth, "_key_cache", {})
    monkeypatch.setattr(auth, "_failures", {})
    with fake_realm(keys["realm"]) as realm:
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", realm)
        user = auth.user_from_token(make_token(keys["realm"], [USER, "x"], username="dana"))
        assert user.username == "dana" and user.roles == [USER, "x"]
        for kind in BAD_TOKENS[1:]:
            with pytest.raises(jwt.InvalidTokenError):
                auth.user_from_token(_bad_token(kind, keys))
        no_exp = jwt.encode({"preferred_username": "e", "realm_access": {"roles": ALL_ROLES}}, keys["realm"],
                            algorithm="RS256")
        with pytest.raises(jwt.InvalidTokenError):
            auth.user_from_token(no_exp)
        no_name = jwt.encode({"exp": int(time.time()) + 60}, keys["realm"], algorithm="RS256")
        with pytest.raises(jwt.InvalidTokenError, match="MONAI_LABEL_AUTH_TOKEN_USERNAME"):
            auth.user_from_token(no_name)
        monkeypatch.setenv(auth.ALGORITHMS_SETTING, "ES256")
        with pytest.raises(HTTPException) as e:
            auth.user_from_token(make_token(keys["realm"], ALL_ROLES))
        assert e.value.status_code == 503 and auth.ALGORITHMS_SETTING in e.value.detail
        monkeypatch.delenv(auth.ALGORITHMS_SETTING)
        token = make_token(keys["realm"], ALL_ROLES)
    monkeypatch.setattr(auth, "_key_cache", {})
    monkeypatch.setattr(auth, "_failures", {})
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", f"http://127.0.0.1:{free_port()}/realms/gone")
    with pytest.raises(HTTPException) as e:
        auth.user_from_token(token)
    assert e.value.status_code == 503 and "MONAI_LABEL_AUTH_REALM_URI" in e.value.detail


def test_realm_key_is_kept_while_the_realm_is_down_and_asked_again_only_now_and_then(monkeypatch, keys):
    from medclipsam.serving import auth

    from servers import free_port

    monkeypatch.setattr(auth, "_key_cache", {})
    monkeypatch.setattr(auth, "_failures", {})
    fetches = []
    real_fetch = auth._fetch_public_key
    monkeypatch.setattr(auth, "_fetch_public_key", lambda uri, timeout: fetches.append(uri) or real_fetch(uri, timeout))
    with fake_realm(keys["realm"]) as realm:
        key = auth.realm_public_key(realm, 3)
        assert auth.realm_public_key(realm, 3) is key and len(fetches) == 1          # cached
    monkeypatch.setattr(auth, "KEY_CACHE_SECONDS", 0.0)                             # due again; realm gone
    assert auth.realm_public_key(realm, 3) is key and len(fetches) == 2
    assert auth.realm_public_key(realm, 3) is key and len(fetches) == 2          # not asked again yet
    gone = f"http://127.0.0.1:{free_port()}/realms/gone"
    for _ in range(2):
        with pytest.raises(auth.RealmUnavailable, match="MONAI_LABEL_AUTH_REALM_URI"):
            auth.realm_public_key(gone, 3)
    assert fetches.count(gone) == 1
    monkeypatch.setattr(auth, "RETRY_SECONDS", 0.0)
    with pytest.raises(auth.RealmUnavailable):
        auth.realm_public_key(gone, 3)
    assert fetches.count(gone) == 2


def test_install_replaces_monailabels_from_token():
    import monailabel.endpoints.user.auth as ml_auth

    from medclipsam.serving.auth import install_token_check, user_from_token

    assert install_token_check() and ml_auth.from_token is user_from_token
