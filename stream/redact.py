"""Credential redaction: the one implementation behind every place vigil shows a URI or a line.

:func:`redact` hides, anywhere in a string (a URI, a log line, a traceback, an event's JSON):

- the userinfo of a URI: ``rtsp://user:pw@host/x`` -> ``rtsp://***@host/x`` (everything up to
  the authority's *last* ``@``, so a password holding an unescaped ``@`` goes whole);
- the value of a credential-like query or form parameter: ``?user=admin&password=pw&x=1`` ->
  ``?user=***&password=***&x=1``. A parameter counts when its name is ``user``, ``username``,
  ``usr``, ``login`` or contains ``pass``, ``pwd``, ``token``, ``secret``, ``auth``, ``key``,
  ``sig``, ``cred``, ``session`` or ``cookie`` (case-insensitive; over-hiding a harmless
  parameter is the safe mistake);
- HTTP credentials written as headers: ``Authorization: Basic ...``, ``Cookie: ...``,
  ``X-Api-Key: ...`` -> ``Authorization: ***``, and ``Bearer TOKEN`` -> ``Bearer ***``
  wherever it stands.

``stream.sources.redact_uri`` (events, ``/api/status``, ``vigil streams list``) and
``pipeline.logs.RedactFilter`` (every log line) use this function. Standard library only: it is
imported before anything heavy.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ : the userinfo is everything in the authority (no "/" nor white space)
# up to its last "@".
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s]*@")

_SECRET_NAME = (
    r"(?:[A-Za-z0-9_.\-\[\]]*?(?:pass|pwd|token|secret|auth|key|sig|cred|session|cookie)"
    r"[A-Za-z0-9_.\-\[\]]*|user|username|usr|login)"
)
# A parameter starts after "?", "&" or ";" (URIs) or at a word start (free text: "token=...");
# its value runs to the next "&", "#", white space or quote.
_PARAM = re.compile(
    rf"(?P<lead>(?:^|(?<=[?&;\s\"'(,])))(?P<name>{_SECRET_NAME})=(?P<value>[^&#\s\"']+)",
    re.IGNORECASE,
)
_HEADER = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization|\bset-cookie|\bcookie|\bx-[a-z\-]*(?:key|token)"
    r"|\bapi-key)(?P<sep>\s*:\s*)(?P<value>[^\r\n\"']+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<scheme>Bearer)\s+(?P<value>[A-Za-z0-9\-._~+/=]+)", re.IGNORECASE)
_HINTS = ("@", "=", ":", "bearer")


def redact(text: str) -> str:
    """``text`` with every credential it shows replaced by ``***`` (see the module doc)."""
    if not text:
        return text
    lowered = text.lower()
    if not any(hint in lowered for hint in _HINTS):
        return text
    if "://" in text and "@" in text:
        text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    if "=" in text:
        text = _PARAM.sub(rf"\g<lead>\g<name>={MASK}", text)
    if ":" in text:
        text = _HEADER.sub(rf"\g<name>\g<sep>{MASK}", text)
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\g<scheme> {MASK}", text)
    return text
