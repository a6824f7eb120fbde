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

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy import Connection, Engine, text

from citytwin.errors import AuthError, InputError, NotFoundError, PermissionDeniedError

SCOPES = ("read", "ingest", "outages:write", "commands", "admin")
HEADER = "X-API-Key"
# Declared as a security scheme so the OpenAPI document tells clients where the key goes. auto_error is
# off: a missing key is our AuthError (401 with the house error body), and reads may need no key at all.
api_key_header = APIKeyHeader(name=HEADER, scheme_name="ApiKey", auto_error=False,
                              description="An API key `ct_<prefix>_<secret>` "
                                          "(create one with `citytwin keys create`)")


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
    # The prefix is 8 hex digits (see create_key); checking it keeps junk (e.g. NUL bytes) out of SQL.
    if len(parts) != 3 or parts[0] != "ct" or not _is_prefix(parts[1]):
        raise AuthError("malformed API key")
    row = conn.execute(text("SELECT key_hash, scopes FROM api_keys WHERE prefix = :p AND revoked_at IS NULL"),
                       {"p": parts[1]}).first()
    if row is None or not hmac.compare_digest(row[0], _hash(key)):
        raise AuthError("invalid or revoked API key")
    return set(row[1])


def _is_prefix(text: str) -> bool:
    return len(text) == 8 and all(c in "0123456789abcdef" for c in text)


def revoke_key(conn: Connection, key_or_prefix: str) -> None:
    """Revoke a key (given whole or by its prefix); it stops working at once."""
    parts = key_or_prefix.split("_", 2)
    prefix = parts[1] if len(parts) == 3 and parts[0] == "ct" else key_or_prefix
    if not _is_prefix(prefix) or conn.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE prefix = :p AND revoked_at IS NULL"),
            {"p": prefix}).rowcount == 0:
        raise NotFoundError(f"no active API key with prefix {prefix[:20]!r}")


def require_scope(scope: str, *, for_read: bool = False) -> Callable:
    """A dependency: the request must carry a key with ``scope`` (``admin`` implies all)."""

    def dependency(request: Request, key: str | None = Security(api_key_header)) -> set[str]:
        settings = request.app.state.settings
        if for_read and not getattr(settings, "require_key_for_reads", False):
            return {"read"}
        if not key:
            raise AuthError(f"this action needs an API key with scope {scope!r} in the {HEADER} header")
        engine: Engine = request.app.state.engine
        with engine.connect() as conn:
            scopes = scopes_for_key(conn, key)
        if scope not in scopes and "admin" not in scopes:
            raise PermissionDeniedError(f"the API key lacks scope {scope!r} (it has {sorted(scopes)})")
        return scopes

    return Depends(dependency)
