"""Management API errors: 400s that name the field, and never a 500 with a traceback."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, IntegrityError):
        exc = exceptions.ValidationError(
            {"non_field_errors": ["This conflicts with an existing record."]}
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled management API error", exc_info=exc)
        return Response(
            {"detail": "Internal error; see the server log."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return response
