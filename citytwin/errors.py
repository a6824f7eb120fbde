"""One error hierarchy for citytwin.

Domain code raises these with messages that are safe to show a user and that name what is wrong
(which file, which element, which parameter, why). The API maps them to HTTP status codes in one
table (``citytwin.api.errors``); the CLI prints them without a traceback. No HTTP codes live here.
"""

from __future__ import annotations


class CityTwinError(Exception):
    """Base class of every error citytwin raises on purpose."""

    def __init__(self, message: str, *, details: dict | list | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class InputError(CityTwinError):
    """Bad user input: a file, a parameter, a geometry, a payload."""


class NotFoundError(CityTwinError):
    """A named thing (id, tileset, run, datastream) does not exist."""


class ConflictError(CityTwinError):
    """The request contradicts the current state (e.g. a twin already exists in another CRS)."""


class ConfigurationError(CityTwinError):
    """The installation or settings are wrong (missing binary, bad URL)."""


class ExternalServiceError(CityTwinError):
    """A service the twin depends on (database, broker) failed or is unreachable."""


class PayloadTooLargeError(InputError):
    """An upload or message exceeds the configured size limit."""


class AuthError(CityTwinError):
    """Missing or invalid credentials."""


class PermissionDeniedError(CityTwinError):
    """Valid credentials without the scope the action needs."""
