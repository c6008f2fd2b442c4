"""Gateway errors in the OpenAI shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse


class GatewayError(Exception):
    """An error answered to the client; never carries an upstream secret."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, extra_headers: dict[str, str] | None = None) -> HttpResponse:
        response = HttpResponse(
            orjson.dumps(self.body()), status=self.status, content_type="application/json"
        )
        response.error_code = self.code or self.type  # type: ignore[attr-defined]  # for the usage event
        for key, value in {**self.headers, **(extra_headers or {})}.items():
            response[key] = value
        return response


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def unauthorized(
    message: str = "Missing or invalid API key. Send it as 'Authorization: Bearer <key>'.",
) -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code="invalid_api_key")


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, type="permission_error", code="model_not_allowed")


def model_not_found(name: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model {name!r} does not exist or is disabled.",
        code="model_not_found",
        param="model",
    )


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


def rate_limited(
    retry_after: int, message: str = "Rate limit reached for this API key."
) -> GatewayError:
    return GatewayError(
        429,
        message,
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )
