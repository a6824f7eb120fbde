"""API keys with scopes, stored hashed.

A key looks like ``ct_<prefix>_<secret>``; the database keeps the prefix (to find the row) and the
SHA-256 of the whole key (keys are 256-bit random, so a slow KDF buys nothing). Writes always need a
key with the right scope; reads are open unless ``require_key_for_reads`` is set.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Callable

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine, text

from citytwin.errors import AuthError, InputError, PermissionDeniedError

SCOPES = ("read", "ingest", "outages:write", "commands", "admin")
HEADER = "X-API-Key"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: Connection, name: str, scopes: list[str]) -> str:
    """Create a key; the plain key is returned once and never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InputError(f"unknown or missing scopes {unknown}; choose from {list(SCOPES)}")
    prefix = secrets.token_hex(4)
    key = f"ct_{prefix}_{secrets.token_urlsafe(32)}"
    conn.execute(text("INSERT INTO api_keys (name, prefix, key_hash, scopes) VALUES (:n, :p, :h, :s)"),
                 {"n": name, "p": prefix, "h": _hash(key), "s": scopes})
    return key


def scopes_for_key(conn: Connection, key: str) -> set[str]:
    """The scopes of a valid, unrevoked key; AuthError otherwise."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "ct":
        raise AuthError("malformed API key")
    row = conn.execute(text("SELECT key_hash, scopes FROM api_keys WHERE prefix = :p AND revoked_at IS NULL"),
                       {"p": parts[1]}).first()
    if row is None or not hmac.compare_digest(row[0], _hash(key)):
        raise AuthError("invalid or revoked API key")
    return set(row[1])


def require_scope(scope: str, *, for_read: bool = False) -> Callable:
    """A dependency: the request must carry a key with ``scope`` (``admin`` implies all)."""

    def dependency(request: Request) -> set[str]:
        settings = request.app.state.settings
        if for_read and not getattr(settings, "require_key_for_reads", False):
            return {"read"}
        key = request.headers.get(HEADER)
        if not key:
            raise AuthError(f"this action needs an API key with scope {scope!r} in the {HEADER} header")
        engine: Engine = request.app.state.engine
        with engine.connect() as conn:
            scopes = scopes_for_key(conn, key)
        if scope not in scopes and "admin" not in scopes:
            raise PermissionDeniedError(f"the API key lacks scope {scope!r} (it has {sorted(scopes)})")
        return scopes

    return Depends(dependency)
