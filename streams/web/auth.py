"""Who may call the endpoint: a bearer token when one is set, else loopback clients only.

``/metrics`` and ``/healthz`` are open (Prometheus and orchestrators call them);
every other route depends on :func:`access`. With ``PULSE_API_TOKEN`` set a request
must carry ``Authorization: Bearer <token>``; a browser may send the token as the
Basic-auth password instead (any user name), so the live page works from a
browser's own login prompt. Without a token only loopback clients are served.
Tokens are compared in constant time and never logged.

>>> credential("Bearer s3cret"), credential("bearer s3cret")
('s3cret', 's3cret')
>>> credential("Basic " + base64.b64encode(b"ops:s3cret").decode())
's3cret'
>>> credential("Digest x") is None, credential("") is None
(True, True)
>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("::ffff:127.0.0.1")
(True, True, True)
>>> is_loopback("10.0.0.7"), is_loopback("testclient"), is_loopback(None)
(False, False, False)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import HTTPException, Request

__all__ = ["access", "credential", "is_loopback"]

_REALM = 'realm="Community Pulse"'


def credential(authorization: str) -> str | None:
    """The token in an ``Authorization`` header value (Bearer, or Basic's password)."""
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, colon, password = decoded.partition(":")
        return password if colon and password else None
    return None


def is_loopback(host: str | None) -> bool:
    """Whether a client address is on this machine's loopback (IPv4-mapped IPv6 too)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def access(
    token: str, challenge: Literal["Bearer", "Basic"] = "Bearer"
) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that lets a request through or raises 401 / 403.

    ``challenge`` is the scheme a 401 asks for: ``Basic`` on the page (the browser
    then prompts for the token), ``Bearer`` on the API.
    """
    expected = token.encode()

    async def check(request: Request) -> None:
        if expected:
            supplied = credential(request.headers.get("authorization", ""))
            if supplied is None or not hmac.compare_digest(supplied.encode(), expected):
                raise HTTPException(
                    status_code=401,
                    detail="missing or wrong API token: send Authorization: Bearer "
                    "<PULSE_API_TOKEN>",
                    headers={"WWW-Authenticate": f"{challenge} {_REALM}"},
                )
            return
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise HTTPException(
                status_code=403,
                detail="this worker has no PULSE_API_TOKEN: it answers loopback clients only",
            )

    return check
