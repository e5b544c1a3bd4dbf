"""What a run exposes beyond loopback, and the refusal to expose it unprotected.

Every endpoint a run binds (``runtime.http``; the ZeroMQ ``publish.events``,
``publish.frames``, ``publish.replay`` and ``runtime.control``) binds 127.0.0.1 unless
configured otherwise. Binding one beyond loopback (``0.0.0.0``, ``*``, a LAN address, an
interface or host name) needs its protection:

- HTTP: a bearer token, ``runtime.http_token_file``;
- ZeroMQ: CURVE, ``publish.curve_secret_key_file``.

Without it the run is refused before anything starts (:class:`ExposureError`, one line; the
CLI exits 2), unless ``runtime.insecure`` (``--insecure``) is set, and then a warning is logged
for each unprotected endpoint. ``ipc://`` and ``inproc://`` endpoints are local by nature.

:class:`HttpAccess` applies the HTTP side per request: the ``Host`` check against DNS rebinding
and the token (header, query or session cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The key that protects each kind of endpoint.
HTTP_KEY = "runtime.http_token_file"
CURVE_KEY = "publish.curve_secret_key_file"
MAX_TOKEN_BYTES = 4096
SESSION_COOKIE = "vigil_session"


class ExposureError(Exception):
    """An endpoint beyond loopback without its protection, or an unusable token file; the
    message is one line for the user."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` (an address, ``localhost``, ``*``, an interface or host name)
    stays on this machine: only loopback addresses and ``localhost`` do."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # "*", "0.0.0.0"-like names, interface and host names: reachable


def zmq_bind_host(endpoint: str) -> str | None:
    """``tcp://HOST:PORT`` -> HOST; None for ``ipc://`` and ``inproc://`` (local by nature)."""
    if not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://") :].rpartition(":")[0]
    return host.split(";")[-1]  # "tcp://src;dst:port" names the bound address last


def unprotected(cfg: Any) -> list[str]:
    """One phrase per endpoint bound beyond loopback without its protection."""
    from pipeline.config_runtime import parse_http_address

    found = []
    rt, pub = cfg.runtime, cfg.publish
    if rt.http:
        host, _ = parse_http_address(rt.http)
        if not is_loopback(host) and rt.http_token_file is None:
            found.append(f"runtime.http {rt.http} needs {HTTP_KEY}")
    if pub.curve_secret_key_file is None:
        endpoints = {
            "publish.events": pub.events,
            "publish.frames": pub.frames,
            "publish.replay": getattr(pub, "replay", None),
            "runtime.control": rt.control,
        }
        for key, endpoint in endpoints.items():
            host = zmq_bind_host(endpoint) if endpoint else None
            if host is not None and not is_loopback(host):
                found.append(f"{key} {endpoint} needs {CURVE_KEY}")
    return found


def check_exposure(cfg: Any, *, warn: bool = True) -> None:
    """Raise :class:`ExposureError` when an endpoint is exposed unprotected (see the module
    doc); with ``runtime.insecure`` log a warning per such endpoint instead (when ``warn``)."""
    found = unprotected(cfg)
    if not found:
        return
    if not cfg.runtime.insecure:
        raise ExposureError(
            "refusing to listen beyond loopback unprotected: "
            + "; ".join(found)
            + " (or accept the risk: --insecure, runtime.insecure: true)"
        )
    if warn:
        for what in found:
            log.warning("insecure: %s, and listens unprotected (--insecure)", what)


def read_token(path: str | Path) -> str:
    """The HTTP token in ``path`` (surrounding white space stripped); ExposureError when the
    file is missing, unreadable, empty, too long or holds white space inside the token."""
    path = Path(path)
    try:
        data = path.read_bytes()[: MAX_TOKEN_BYTES + 1]
    except OSError as exc:
        raise ExposureError(f"cannot read {HTTP_KEY} {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ExposureError(f"{HTTP_KEY} {path}: not UTF-8 text") from None
    if not token:
        raise ExposureError(f"{HTTP_KEY} {path} is empty")
    if len(data) > MAX_TOKEN_BYTES or any(c.isspace() for c in token):
        raise ExposureError(
            f"{HTTP_KEY} {path}: expected one token of at most {MAX_TOKEN_BYTES} bytes, "
            "without white space"
        )
    return token


class HttpAccess:
    """Who may use the HTTP endpoint: the ``Host`` check and the optional token.

    - ``Host``: the bound host, ``localhost``, ``127.0.0.1``, ``::1``, the names in
      ``allowed_hosts``, and any IP literal are accepted (DNS rebinding needs a name the
      attacker controls, so an IP literal cannot be one); anything else is 403. A request
      without ``Host`` (HTTP/1.0 tools; every browser sends one) is accepted.
    - ``token`` (``runtime.http_token_file``): ``Authorization: Bearer TOKEN``, or
      ``?token=TOKEN`` on any URL, or the session cookie that ``/?token=TOKEN`` sets
      (HttpOnly, SameSite=Strict) before redirecting to ``/``: the viewer's ``<img>`` and
      ``EventSource`` requests cannot send headers, but send the cookie.
    """

    def __init__(
        self,
        *,
        bound_host: str = "127.0.0.1",
        allowed_hosts: Sequence[str] = (),
        token: str | None = None,
    ) -> None:
        names = {"localhost", "127.0.0.1", "::1", bound_host, *allowed_hosts}
        self.allowed_hosts = frozenset(_host_name(n) for n in names if n)
        self.token = token or None
        self.session = (
            hmac.new(self.token.encode(), b"vigil viewer session", hashlib.sha256).hexdigest()
            if self.token
            else None
        )

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header may be served (see the class doc)."""
        if header is None:
            return True
        name = _host_name(header)
        if name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        """Whether the request carries the token (header, query or session cookie)."""
        if self.token is None:
            return True
        auth = headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), self.token):
            return True
        if any(_same(t, self.token) for t in query.get("token", [])):
            return True
        return self.session is not None and _same(_cookie(headers, SESSION_COOKIE), self.session)

    def session_cookie(self) -> str:
        """The ``Set-Cookie`` value that lets a browser in without the token in its URLs."""
        return f"{SESSION_COOKIE}={self.session}; Path=/; HttpOnly; SameSite=Strict"


def _host_name(value: str) -> str:
    """``Host`` header or host -> the lower-case name without port or brackets."""
    host = value.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:  # name:port (several ":" is a bare IPv6 address)
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _cookie(headers: Any, name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("Cookie") or "")
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None
