"""Management API for instances, target groups and provider credentials: one DRF view per operation.

A target group travels in exactly the shape of `target-group.json`
(`targetgroups.documents`); an instance's upstream `api_key` is write-only and
comes back only as `has_api_key`.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import JsonApi, json_object
from config.api_fields import JsonTypesMixin, ObjectField
from targetgroups import selectors
from targetgroups.documents import DocumentError, TargetGroupDocument, target_group_document
from targetgroups.models import Instance, ProviderCredential, TargetGroup
from targetgroups.providers import PROVIDERS
from targetgroups.services import (
    INSTANCE_FIELDS,
    instance_delete,
    instance_save,
    provider_credential_delete,
    provider_credential_save,
    target_group_delete,
    target_group_import,
)
from targetgroups.validators import slug_validator

# --- Instances ----------------------------------------------------------------------


def _reject_nul(value: Any) -> None:
    """PostgreSQL cannot store NUL characters in JSON; refuse them with a 400, not a 500."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError("Text may not contain NUL characters.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item)


class InstanceOutputSerializer(serializers.ModelSerializer):
    has_api_key = serializers.BooleanField(
        read_only=True, help_text="The upstream key itself is never returned."
    )

    class Meta:
        model = Instance
        fields = (
            "instance_id",
            *INSTANCE_FIELDS,
            "capacity_since",
            "has_api_key",
            "created_at",
            "updated_at",
        )
        ref_name = "Instance"


class InstanceInputSerializer(JsonTypesMixin, serializers.ModelSerializer):
    options = ObjectField(required=False, help_text=Instance._meta.get_field("options").help_text)
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        style={"input_type": "password"},
        help_text='Write-only. Omit to keep the stored key; "" removes it.',
    )

    class Meta:
        model = Instance
        fields = ("instance_id", *INSTANCE_FIELDS, "api_key")
        ref_name = "InstanceInput"

    def validate_options(self, value: Any) -> Any:
        _reject_nul(value)
        return value


def _instance_or_404(instance_id: str) -> Instance:
    instance = selectors.instance_get(instance_id=instance_id)
    if instance is None:
        raise NotFound(f"No instance with instance_id {instance_id!r}.")
    return instance


class InstanceListApi(JsonApi):
    OutputSerializer = InstanceOutputSerializer

    @extend_schema(summary="List instances", responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(selectors.instance_list(), many=True).data)


class InstanceCreateApi(JsonApi):
    InputSerializer = InstanceInputSerializer
    OutputSerializer = InstanceOutputSerializer

    @extend_schema(
        summary="Create an instance", request=InputSerializer, responses={201: OutputSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = instance_save(**serializer.validated_data)
        return Response(self.OutputSerializer(instance).data, status=status.HTTP_201_CREATED)


class InstanceRetrieveApi(JsonApi):
    OutputSerializer = InstanceOutputSerializer

    @extend_schema(summary="Retrieve an instance", responses=OutputSerializer)
    def get(self, request: Request, instance_id: str) -> Response:
        return Response(self.OutputSerializer(_instance_or_404(instance_id)).data)


class InstanceUpdateApi(JsonApi):
    """PUT and PATCH alike leave out fields the body omits; an omitted api_key keeps the stored
    one."""

    class InputSerializer(InstanceInputSerializer):
        class Meta(InstanceInputSerializer.Meta):
            extra_kwargs = {"instance_id": {"required": False}}
            ref_name = "InstanceUpdateInput"

        def validate_instance_id(self, value: str) -> str:
            if self.instance is not None and value != self.instance.instance_id:
                raise serializers.ValidationError(
                    "The instance_id cannot change: target-group files refer to it. Create a new "
                    "instance instead."
                )
            return value

    OutputSerializer = InstanceOutputSerializer

    @extend_schema(
        summary="Update an instance", request=InputSerializer, responses=OutputSerializer
    )
    def put(self, request: Request, instance_id: str) -> Response:
        return self._update(request, instance_id, partial=False)

    @extend_schema(
        summary="Update some fields of an instance",
        request=InputSerializer,
        responses=OutputSerializer,
    )
    def patch(self, request: Request, instance_id: str) -> Response:
        return self._update(request, instance_id, partial=True)

    def _update(self, request: Request, instance_id: str, *, partial: bool) -> Response:
        instance = _instance_or_404(instance_id)
        serializer = self.InputSerializer(instance, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        values.pop("instance_id", None)
        instance = instance_save(instance=instance, **values)
        return Response(self.OutputSerializer(instance).data)


class InstanceDeleteApi(JsonApi):
    @extend_schema(
        summary="Delete an instance (refused while a group, route or balancer uses it)",
        responses={204: None},
    )
    def delete(self, request: Request, instance_id: str) -> Response:
        instance_delete(instance=_instance_or_404(instance_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Target groups --------------------------------------------------------------------


def _group_or_404(name: str) -> TargetGroup:
    group = selectors.target_group_get(name=name)
    if group is None:
        raise NotFound(f"No target group named {name!r}.")
    return group


def _import(data: Any, *, group: TargetGroup | None = None) -> tuple[TargetGroup, bool]:
    """target_group_import, with member errors always in one shape: a list, one entry per member.

    DRF reports a member's field errors as `{"1": {...}}` and the cross-member
    checks report `[{}, {...}]`; clients get the list either way.
    """
    try:
        return target_group_import(data=data, group=group)
    except DocumentError as exc:
        detail: dict[str, Any] = dict(exc.detail)
        members = detail.get("members")
        if isinstance(members, dict) and members and all(isinstance(k, int) for k in members):
            given = data.get("members") if isinstance(data, dict) else None
            count = max(len(given) if isinstance(given, list) else 0, max(members) + 1)
            detail["members"] = [members.get(index, {}) for index in range(count)]
        raise ValidationError(detail) from None


class TargetGroupListApi(JsonApi):
    OutputSerializer = TargetGroupDocument

    @extend_schema(
        summary="List target groups as target-group documents",
        responses=OutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return Response([target_group_document(group) for group in selectors.target_group_list()])


class TargetGroupCreateApi(JsonApi):
    """Create a new group; an existing name is refused (import replaces instead)."""

    InputSerializer = TargetGroupDocument
    OutputSerializer = TargetGroupDocument

    @extend_schema(
        summary="Create a target group", request=InputSerializer, responses={201: OutputSerializer}
    )
    def post(self, request: Request) -> Response:
        data = json_object(request.data)
        name = data.get("name")
        if isinstance(name, str) and selectors.target_group_get(name=name) is not None:
            raise ValidationError(
                {
                    "name": [
                        f"A target group named {name!r} already exists; update it, or import to "
                        "replace it."
                    ]
                }
            )
        group, _ = _import(data)
        return Response(target_group_document(group), status=status.HTTP_201_CREATED)


class TargetGroupRetrieveApi(JsonApi):
    OutputSerializer = TargetGroupDocument

    @extend_schema(summary="Retrieve a target group", responses=OutputSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(target_group_document(_group_or_404(name)))


class TargetGroupUpdateApi(JsonApi):
    """PUT replaces the whole document (members included); PATCH replaces the keys it gives.

    The name is the URL's: the body may repeat it but not change it.
    """

    class InputSerializer(TargetGroupDocument):
        """The document, its name optional: the URL names the group."""

        name = serializers.CharField(max_length=63, validators=[slug_validator], required=False)

        class Meta:
            ref_name = "TargetGroupUpdateDocument"

    OutputSerializer = TargetGroupDocument

    @extend_schema(
        summary="Replace a target group", request=InputSerializer, responses=OutputSerializer
    )
    def put(self, request: Request, name: str) -> Response:
        group = _group_or_404(name)
        return self._save(group, {"name": group.name, **json_object(request.data)})

    @extend_schema(
        summary="Change some keys of a target group",
        request=InputSerializer,
        responses=OutputSerializer,
    )
    def patch(self, request: Request, name: str) -> Response:
        group = _group_or_404(name)
        return self._save(group, {**target_group_document(group), **json_object(request.data)})

    def _save(self, group: TargetGroup, data: dict[str, Any]) -> Response:
        group, _ = _import(data, group=group)
        return Response(target_group_document(group))


class TargetGroupDeleteApi(JsonApi):
    @extend_schema(
        summary="Delete a target group (refused while a route points at it)", responses={204: None}
    )
    def delete(self, request: Request, name: str) -> Response:
        target_group_delete(group=_group_or_404(name))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TargetGroupImportApi(JsonApi):
    """Create or replace the group the document names. A bad document changes nothing."""

    InputSerializer = TargetGroupDocument
    OutputSerializer = TargetGroupDocument

    @extend_schema(
        summary="Import a target-group document (create or replace by name)",
        request=InputSerializer,
        responses={200: OutputSerializer, 201: OutputSerializer},
    )
    def post(self, request: Request) -> Response:
        group, created = _import(request.data)
        return Response(
            target_group_document(group),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class TargetGroupExportApi(JsonApi):
    """The document as a file download, byte for byte what `export_targetgroup` prints."""

    @extend_schema(
        summary="Export a target group as target-group JSON",
        responses={(200, "application/json"): TargetGroupDocument},
    )
    def get(self, request: Request, name: str) -> HttpResponse:
        group = _group_or_404(name)
        body = json.dumps(target_group_document(group), indent=2) + "\n"
        response = HttpResponse(body, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{group.name}.json"'
        return response


# --- Provider credentials -------------------------------------------------------------


class ProviderOutputSerializer(serializers.Serializer):
    """A provider's facts (targetgroups.providers) and its stored credential, if any."""

    provider = serializers.CharField(help_text="The code: also the `provider/` model prefix.")
    name = serializers.CharField(help_text="The provider's name, e.g. Google Gemini.")
    wire = serializers.CharField(help_text="openai, anthropic or azure.")
    default_base_url = serializers.CharField(help_text='"" when every operator has their own.')
    auth = serializers.CharField(help_text="bearer, x-api-key or api-key: how the key is sent.")
    key_required = serializers.BooleanField()
    model_prefixes = serializers.ListField(
        child=serializers.CharField(), help_text="Model names starting so go to this provider."
    )
    embeddings = serializers.BooleanField(help_text="Serves /v1/embeddings.")
    configured = serializers.BooleanField(help_text="A credential is stored.")
    base_url = serializers.CharField(help_text='The credential\'s own; "" uses the default.')
    api_version = serializers.CharField(help_text="Azure OpenAI only.")
    enabled = serializers.BooleanField(allow_null=True, help_text="null: not configured.")
    has_api_key = serializers.BooleanField(help_text="The key itself is never returned.")
    updated_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "Provider"


def provider_entry(code: str, credential: ProviderCredential | None) -> dict[str, Any]:
    facts = PROVIDERS[code]
    return {
        "provider": code,
        "name": facts.label,
        "wire": facts.wire,
        "default_base_url": facts.base_url,
        "auth": facts.auth,
        "key_required": facts.key_required,
        "model_prefixes": list(facts.prefixes),
        "embeddings": facts.embeddings,
        "configured": credential is not None,
        "base_url": credential.base_url if credential else "",
        "api_version": credential.api_version if credential else "",
        "enabled": credential.enabled if credential else None,
        "has_api_key": credential.has_api_key if credential else False,
        "updated_at": credential.updated_at if credential else None,
    }


def _known_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise NotFound(f"No provider {provider!r}; known: {', '.join(PROVIDERS)}.")
    return provider


def credential_or_404(provider: str) -> ProviderCredential:
    credential = ProviderCredential.objects.filter(provider=_known_provider(provider)).first()
    if credential is None:
        raise NotFound(f"No credential is stored for {PROVIDERS[provider].label}.")
    return credential


class ProviderListApi(JsonApi):
    OutputSerializer = ProviderOutputSerializer

    @extend_schema(
        summary="List providers and their credentials (never the keys)",
        responses=OutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        stored = {c.provider: c for c in ProviderCredential.objects.all()}
        return Response([provider_entry(code, stored.get(code)) for code in PROVIDERS])


class ProviderRetrieveApi(JsonApi):
    OutputSerializer = ProviderOutputSerializer

    @extend_schema(summary="Retrieve a provider and its credential", responses=OutputSerializer)
    def get(self, request: Request, provider: str) -> Response:
        credential = ProviderCredential.objects.filter(provider=_known_provider(provider)).first()
        return Response(provider_entry(provider, credential))


class ProviderCredentialInputSerializer(JsonTypesMixin, serializers.Serializer):
    base_url = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text='"" uses the provider\'s own base URL.',
    )
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        style={"input_type": "password"},
        help_text='Write-only. Omit to keep the stored key; "" removes it.',
    )
    api_version = serializers.CharField(
        required=False, allow_blank=True, max_length=40, help_text="Azure OpenAI only."
    )
    enabled = serializers.BooleanField(required=False)

    class Meta:
        ref_name = "ProviderCredentialInput"

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        _reject_nul(attrs)
        return attrs


class ProviderUpdateApi(JsonApi):
    """Store or change the provider's credential: PUT and PATCH alike leave out what the body
    omits (an omitted api_key keeps the stored key). 201 when it creates one."""

    InputSerializer = ProviderCredentialInputSerializer
    OutputSerializer = ProviderOutputSerializer

    @extend_schema(
        summary="Store a provider credential",
        request=InputSerializer,
        responses={200: OutputSerializer, 201: OutputSerializer},
    )
    def put(self, request: Request, provider: str) -> Response:
        return self._save(request, provider)

    @extend_schema(
        summary="Change some fields of a provider credential",
        request=InputSerializer,
        responses={200: OutputSerializer, 201: OutputSerializer},
    )
    def patch(self, request: Request, provider: str) -> Response:
        return self._save(request, provider)

    def _save(self, request: Request, provider: str) -> Response:
        _known_provider(provider)
        serializer = self.InputSerializer(data=json_object(request.data))
        serializer.is_valid(raise_exception=True)
        created = not ProviderCredential.objects.filter(provider=provider).exists()
        credential = provider_credential_save(provider=provider, **serializer.validated_data)
        return Response(
            provider_entry(provider, credential),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ProviderDeleteApi(JsonApi):
    @extend_schema(summary="Remove a provider credential", responses={204: None})
    def delete(self, request: Request, provider: str) -> Response:
        provider_credential_delete(credential=credential_or_404(provider))
        return Response(status=status.HTTP_204_NO_CONTENT)
