"""ZeroMQ sockets a peer can reach, made in one place with their limits and CURVE.

Every endpoint vigil binds for the outside (event XPUB, replay ROUTER, frame feed PUB, control
REP) is made by :func:`server_socket`, which sets LINGER, the high-water marks, ``MAXMSGSIZE``
(ZeroMQ drops a peer whose message is larger, before the message is buffered in memory) and,
when keys are given, CURVE with the optional client allow-list (one ZAP authenticator per
context, shared by its sockets). Clients get the matching :func:`client_socket`.

Requests from peers are parsed with :func:`parse_json_object` (size and nesting bounded, so no
``RecursionError`` and no giant allocation) and integers checked with :func:`check_int`;
both raise :class:`PeerError` (a ``ValueError``), which a server answers and then drops.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

#: Largest integer a peer may send where a sequence number or count is expected (SQLite's
#: INTEGER is a signed 64-bit value; anything larger overflows in the driver).
MAX_PEER_INT = 2**63 - 1
#: Deepest JSON nesting accepted from a peer (the protocols need 2).
MAX_JSON_DEPTH = 16
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
#: Subscriptions are topics (event types, stream ids): a peer never needs more.
DEFAULT_MAX_SUBSCRIPTION_BYTES = 1024


class PeerError(ValueError):
    """A message from a peer that breaks the protocol; the text is safe to send back."""


@dataclass(frozen=True)
class SocketLimits:
    """Per-socket limits. ``max_message_bytes``: inbound message cap (ZeroMQ disconnects a peer
    that sends more; -1: none). ``sndhwm``/``rcvhwm``: messages queued per peer (0: none).
    ``linger_ms``: how long close() may wait to deliver what is queued."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    sndhwm: int = 1000
    rcvhwm: int = 1000
    linger_ms: int = 0


@dataclass(frozen=True)
class CurveServerKeys:
    """The server's CURVE key pair (z85) and the folder of admitted client certificates
    (None: any client that knows the server key)."""

    public: bytes
    secret: bytes
    clients_dir: Path | None = None

    @classmethod
    def load(
        cls, secret_file: str | Path | None, clients_dir: str | Path | None = None
    ) -> CurveServerKeys | None:
        """Keys from a ``zmq.auth`` secret certificate (None when no file is given)."""
        if secret_file is None:
            return None
        from zmq.auth import load_certificate

        public, secret = load_certificate(str(secret_file))
        if secret is None:
            raise ValueError(f"{secret_file} holds no CURVE secret key")
        return cls(public, secret, Path(clients_dir) if clients_dir is not None else None)


ClientKeys = tuple[bytes, bytes, bytes]  # (server public, client public, client secret), z85


def load_client_keys(
    server_key: bytes | str | Path | None, client_cert: str | Path | None = None
) -> ClientKeys | None:
    """CURVE keys of a client: the server's public key (z85, or a certificate file) and this
    client's secret certificate (None: a throw-away pair, enough when no allow-list is set)."""
    if server_key is None:
        return None
    from zmq.auth import load_certificate

    if isinstance(server_key, Path) or (isinstance(server_key, str) and Path(server_key).is_file()):
        server, _ = load_certificate(str(server_key))
    else:
        server = server_key.encode() if isinstance(server_key, str) else server_key
    if client_cert is not None:
        public, secret = load_certificate(str(client_cert))
        if secret is None:
            raise ValueError(f"{client_cert} holds no CURVE secret key")
    else:
        public, secret = zmq.curve_keypair()
    return server, public, secret


def server_socket(
    ctx: zmq.Context,
    kind: int,
    endpoint: str,
    *,
    limits: SocketLimits = SocketLimits(),
    curve: CurveServerKeys | None = None,
) -> zmq.Socket:
    """A bound socket of ``kind`` (``zmq.XPUB``, ``zmq.ROUTER``...) with ``limits`` and, if
    ``curve`` is given, CURVE encryption (and the client allow-list) on it."""
    sock = ctx.socket(kind)
    try:
        _apply(sock, limits)
        if curve is not None:
            if curve.clients_dir is not None:
                _authenticator(ctx, curve.clients_dir)
            sock.curve_secretkey = curve.secret
            sock.curve_publickey = curve.public
            sock.curve_server = True
        sock.bind(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def client_socket(
    ctx: zmq.Context,
    kind: int,
    endpoint: str,
    *,
    limits: SocketLimits = SocketLimits(max_message_bytes=-1),
    curve: ClientKeys | None = None,
) -> zmq.Socket:
    """A connected socket of ``kind``, a CURVE client of the server when ``curve`` is given."""
    sock = ctx.socket(kind)
    try:
        _apply(sock, limits)
        if curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
        sock.connect(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def release_authenticator(ctx: zmq.Context) -> None:
    """Stop the context's ZAP authenticator, if any (call before destroying the context)."""
    with _AUTH_LOCK:
        auth = _AUTHS.pop(id(ctx), None)
    if auth is not None:
        auth.stop()


def _apply(sock: zmq.Socket, limits: SocketLimits) -> None:
    sock.setsockopt(zmq.LINGER, limits.linger_ms)
    sock.setsockopt(zmq.SNDHWM, limits.sndhwm)
    sock.setsockopt(zmq.RCVHWM, limits.rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)


_AUTHS: dict[int, Any] = {}
_AUTH_LOCK = threading.Lock()


def _authenticator(ctx: zmq.Context, clients_dir: Path) -> Any:
    """The context's one ZAP handler (ZeroMQ allows one per context), admitting the clients
    whose public certificates are in ``clients_dir``."""
    from zmq.auth.thread import ThreadAuthenticator

    with _AUTH_LOCK:
        auth = _AUTHS.get(id(ctx))
        if auth is None:
            auth = ThreadAuthenticator(ctx)
            auth.start()
            _AUTHS[id(ctx)] = auth
        auth.configure_curve(domain="*", location=str(clients_dir))
        return auth


# -- requests from peers ----------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def parse_json_object(
    raw: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """``raw`` as a JSON object; :class:`PeerError` when it is larger than ``max_bytes``,
    nested deeper than ``max_depth``, not JSON or not an object. The depth is measured
    before parsing, so a deeply nested body never reaches the recursive parser."""
    if len(raw) > max_bytes:
        raise PeerError(f"request of {len(raw)} bytes, over the {max_bytes}-byte limit")
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
        if deepest > max_depth:
            raise PeerError(f"JSON nested deeper than {max_depth}")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PeerError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise PeerError("a request is a JSON object")
    return value


def check_int(value: Any, name: str, lo: int = 0, hi: int = MAX_PEER_INT) -> int:
    """``value`` if it is an integer (not a bool) in ``[lo, hi]``, else :class:`PeerError`."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise PeerError(f"{name!r} must be an integer in [{lo}, {hi}], not {shown}")
    return value
