"""Helpers shared by the API serializers: model validation reported as DRF field errors."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers


def as_drf_error(exc: DjangoValidationError) -> serializers.ValidationError:
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(
            {
                ("non_field_errors" if key == "__all__" else key): value
                for key, value in exc.message_dict.items()
            }
        )
    return serializers.ValidationError({"non_field_errors": exc.messages})


def clean_instance(instance: Any) -> None:
    """Run the model's ``clean()`` (which validates through proxyworker.config)."""
    try:
        instance.clean()
    except DjangoValidationError as exc:
        raise as_drf_error(exc) from None
