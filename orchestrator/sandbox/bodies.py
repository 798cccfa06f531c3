"""Response bodies exactly as the real service sends them (see x-compliance-api.md §1.7, §3)."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

PROBLEMS = "https://api.twitter.com/2/problems"
API_CONTENT_TYPE = "application/json; charset=utf-8"
PROBLEM_CONTENT_TYPE = "application/problem+json"
XML_CONTENT_TYPE = "application/xml; charset=UTF-8"

# Recorded / documented bodies.
UNAUTHORIZED: dict[str, Any] = {
    "title": "Unauthorized",
    "type": "about:blank",
    "status": 401,
    "detail": "Unauthorized",
}
TOO_MANY_REQUESTS: dict[str, Any] = {
    "title": "Too Many Requests",
    "detail": "Too Many Requests",
    "type": "about:blank",
    "status": 429,
}
CONFLICT: dict[str, Any] = {
    "title": "Conflict",
    "detail": "You cannot create a new job if one is already in progress.",
    "type": f"{PROBLEMS}/conflict",
    "status": 409,
}
SERVER_ERRORS: dict[int, dict[str, Any]] = {
    500: {
        "title": "Internal Server Error",
        "detail": "Internal Server Error",
        "type": "about:blank",
        "status": 500,
    },
    503: {
        "title": "Service Unavailable",
        "detail": "Service Unavailable",
        "type": "about:blank",
        "status": 503,
    },
}
NOT_FOUND_PAGE: dict[str, Any] = {
    "errors": [{"message": "Sorry, that page does not exist", "code": 34}]
}


def invalid_request(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The 400 body recorded in PR-cc1: `errors[]` first, no `status` member."""
    return {
        "errors": errors,
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": f"{PROBLEMS}/invalid-request",
    }


def param_error(name: str, values: list[str], message: str) -> dict[str, Any]:
    return {"parameters": {name: values}, "message": message}


def body_error(message: str) -> dict[str, Any]:
    return {"message": message}


def job_not_found(job_id: str) -> dict[str, Any]:
    """v2's usual resource-not-found entry (not recorded for this endpoint)."""
    return {
        "value": job_id,
        "detail": f"Could not find compliance job with id: [{job_id}].",
        "title": "Not Found Error",
        "resource_type": "compliance_job",
        "parameter": "id",
        "resource_id": job_id,
        "type": f"{PROBLEMS}/resource-not-found",
    }


def job_not_found_problem(job_id: str) -> dict[str, Any]:
    return {
        "title": "Not Found Error",
        "detail": f"Could not find compliance job with id: [{job_id}].",
        "type": f"{PROBLEMS}/resource-not-found",
        "status": 404,
    }


# -- GCS XML errors -----------------------------------------------------------------------


def gcs_error(code: str, message: str, details: str | None = None, **extra: str) -> bytes:
    parts = [
        "<?xml version='1.0' encoding='UTF-8'?><Error>",
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>",
    ]
    if details is not None:
        parts.append(f"<Details>{escape(details)}</Details>")
    parts.extend(f"<{key}>{escape(value)}</{key}>" for key, value in extra.items())
    parts.append("</Error>")
    return "".join(parts).encode()


def signature_mismatch(string_to_sign: str, canonical_request: str) -> bytes:
    return gcs_error(
        "SignatureDoesNotMatch",
        "Access denied.",
        "The request signature we calculated does not match the signature you provided. "
        "Check your Google secret key and signing method.",
        StringToSign=string_to_sign,
        CanonicalRequest=canonical_request,
    )


def expired_token(expired_at_iso: str) -> bytes:
    return gcs_error(
        "ExpiredToken",
        "Invalid argument.",
        f"The provided token has expired. Request signature expired at: {expired_at_iso}",
    )


def no_such_key(object_name: str) -> bytes:
    return gcs_error(
        "NoSuchKey", "The specified key does not exist.", f"No such object: {object_name}"
    )


def access_denied(
    object_name: str,
    *,
    caller: str = "Anonymous caller",
    permission: str = "storage.objects.get",
) -> bytes:
    return gcs_error(
        "AccessDenied",
        "Access denied.",
        f"{caller} does not have {permission} access to the Google Cloud "
        f"Storage object {object_name}.",
    )


def invalid_argument(details: str) -> bytes:
    return gcs_error("InvalidArgument", "Invalid argument.", details)


STORAGE_FAULTS: dict[int, tuple[str, str]] = {
    429: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("ServiceUnavailable", "We encountered an internal error. Please try again."),
}
