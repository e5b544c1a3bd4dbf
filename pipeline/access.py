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
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The key that protects each kind of endpoint.
HTTP_KEY = "runtime.http_token_file"
CURVE_KEY = "publish.curve_secret_key_file"
MAX_TOKEN_BYTES = 4096


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
