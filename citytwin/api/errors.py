"""The one table that maps domain errors to HTTP status codes, and the handlers that apply it.

Domain code raises ``citytwin.errors`` classes; only this module knows about HTTP. Every error body
has the same shape: ``{"error": <kind>, "detail": <message>, "details": <optional list/dict>}``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from citytwin import errors

log = logging.getLogger("citytwin.api")

STATUS_FOR_ERROR: dict[type[errors.CityTwinError], int] = {
    errors.PayloadTooLargeError: 413,
    errors.InputError: 400,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.AuthError: 401,
    errors.PermissionDeniedError: 403,
    errors.ConfigurationError: 503,
    errors.ExternalServiceError: 503,
}


def status_for(exc: errors.CityTwinError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[cls]
    return 500


def error_body(kind: str, detail: str, details: object | None = None) -> dict:
    body: dict = {"error": kind, "detail": detail}
    if details is not None:
        body["details"] = details
    return body


async def _domain_error(request: Request, exc: errors.CityTwinError) -> JSONResponse:
    status = status_for(exc)
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return JSONResponse(error_body(type(exc).__name__, exc.message, exc.details), status_code=status,
                        headers=headers)


def describe_validation(exc: RequestValidationError) -> tuple[str, list[dict]]:
    """A one-line message and the list of problems (where, what) of a request that failed validation."""
    problems = [{"where": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg", "")}
                for err in exc.errors()]
    detail = "; ".join(f"{p['where']}: {p['problem']}" for p in problems[:5])
    return f"invalid request: {detail}", problems


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail, problems = describe_validation(exc)
    return JSONResponse(error_body("InputError", detail, problems), status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body("HTTPError", str(exc.detail)), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("InternalError", "internal error; see the server log"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.CityTwinError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
