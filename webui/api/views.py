"""The provisioning API, /api/v1/ (Bearer tokens; DESIGN "hosting providers").

Objects are addressed by their natural keys (domain name, address, alias source, network,
position), so a provider's script can ``PUT`` the same document again and again: PUT creates
or replaces (idempotent), DELETE removes. Every change goes through webui.core.changes (audit
+ publish on commit). Querysets are scoped by webui.core.scoping: another domain's object is
"not found". CSV export/import of mailboxes and aliases is all-or-nothing.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from django.db import transaction
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webui.access.models import AccessRule
from webui.aliases.models import Alias
from webui.api import serializers as s
from webui.core import changes
from webui.core.scoping import is_superadmin, scope_queryset
from webui.core.validators import normalise_domain, parse_address
from webui.domains.models import Domain
from webui.mailboxes.models import Mailbox
from webui.relay.models import RelayNetwork

MAX_CSV = 5 * 1024 * 1024  # bytes of one import


class NaturalKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        mixins.DestroyModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """List, retrieve, create (POST), idempotent create-or-replace (PUT), delete."""

    domain_path: str | None = "domain"
    key_field = "name"
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        return scope_queryset(self.model.objects.all(), self.request.user, self.domain_path)

    def find(self, key: str) -> Any:
        raise NotImplementedError

    def get_object(self) -> Any:
        obj = self.find(self.kwargs[self.lookup_field])
        if obj is None:
            raise Http404("not found")
        return obj

    def _save(self, serializer: Any, before: dict[str, Any] | None, action_: str) -> Any:
        with transaction.atomic():
            obj = serializer.save()
            changes.changed(self.request.user, "api", action_, obj, before)
        return obj

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.data.get(self.key_field) if isinstance(request.data, dict) else None
        if key is not None and self.find(str(key)) is not None:
            return Response({self.key_field: ["already exists; use PUT to replace it"]},
                            status=status.HTTP_409_CONFLICT)
        ser = self.get_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        obj = self._save(ser, None, "create")
        return Response(self.get_serializer(obj).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = self.kwargs[self.lookup_field]
        obj = self.find(key)
        data = dict(request.data) if isinstance(request.data, dict) else {}
        data.setdefault(self.key_field, key)
        if str(data[self.key_field]) != key and self.normalise(str(data[self.key_field])) != \
                self.normalise(key):
            return Response({self.key_field: ["must match the URL"]},
                            status=status.HTTP_400_BAD_REQUEST)
        ser = self.get_serializer(obj, data=data)
        ser.is_valid(raise_exception=True)
        before = changes.snapshot(obj) if obj is not None else None
        obj = self._save(ser, before, "update" if before is not None else "create")
        return Response(self.get_serializer(obj).data,
                        status=status.HTTP_200_OK if before is not None else status.HTTP_201_CREATED)

    def normalise(self, key: str) -> str:
        return key

    def perform_destroy(self, instance: Any) -> None:
        changes.delete(self.request.user, "api", instance)


class DomainViewSet(NaturalKeyViewSet):
    model = Domain
    serializer_class = s.DomainSerializer
    domain_path = ""
    lookup_field = "name"
    lookup_value_regex = r"[^/]+"
    key_field = "name"

    def normalise(self, key: str) -> str:
        try:
            return normalise_domain(key)
        except Exception:
            return key

    def find(self, key: str) -> Domain | None:
        return self.get_queryset().filter(name=self.normalise(key)).first()

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not is_superadmin(request.user):
            return Response({"detail": "only a superadmin may add domains"},
                            status=status.HTTP_403_FORBIDDEN)
        return super().create(request, *args, **kwargs)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if self.find(self.kwargs["name"]) is None and not is_superadmin(request.user):
            return Response({"detail": "only a superadmin may add domains"},
                            status=status.HTTP_403_FORBIDDEN)
        return super().update(request, *args, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.get_object()  # 404 for another tenant's domain
        if not is_superadmin(request.user):
            return Response({"detail": "only a superadmin may remove domains"},
                            status=status.HTTP_403_FORBIDDEN)
        return super().destroy(request, *args, **kwargs)


def _address_key(key: str) -> tuple[str, str] | None:
    try:
        addr = parse_address(key)
    except Exception:
        return None
    return addr.local, addr.domain


class CsvMixin:
    csv_fields: list[str] = []

    def _csv_response(self, rows: list[list[Any]], name: str) -> HttpResponse:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.csv_fields)
        for row in rows:
            # A cell starting with = + - @ is a formula to a spreadsheet: quote it away.
            w.writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-") else c
                        for c in row])
        resp = HttpResponse(buf.getvalue(), content_type="text/csv; charset=utf-8")
        resp["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return resp

    def _read_csv(self, request: Request) -> list[dict[str, str]]:
        body = request.body if hasattr(request, "body") else b""
        if len(body) > MAX_CSV:
            raise serializers.ValidationError(f"larger than {MAX_CSV} bytes")
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise serializers.ValidationError("not UTF-8") from exc
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = set(self.csv_fields[:1]) - set(reader.fieldnames or [])
        if missing:
            raise serializers.ValidationError(f"the header must name {', '.join(self.csv_fields)}")
        return list(reader)

    def _import(self, request: Request, to_data: Any) -> Response:
        rows = self._read_csv(request)
        errors: dict[str, Any] = {}
        created = updated = 0
        with transaction.atomic():
            for number, row in enumerate(rows, start=2):
                data = to_data(row)
                obj = self.find(data[self.key_field])  # type: ignore[attr-defined]
                ser = self.get_serializer(obj, data=data)  # type: ignore[attr-defined]
                if not ser.is_valid():
                    errors[f"line {number}"] = ser.errors
                    continue
                before = changes.snapshot(obj) if obj is not None else None
                saved = ser.save()
                changes.changed(request.user, "api", "update" if obj else "create", saved, before)
                created += obj is None
                updated += obj is not None
            if errors:
                transaction.set_rollback(True)
                return Response({"detail": "nothing imported", "errors": errors},
                                status=status.HTTP_400_BAD_REQUEST)
        return Response({"created": created, "updated": updated})


class MailboxViewSet(CsvMixin, NaturalKeyViewSet):
    model = Mailbox
    serializer_class = s.MailboxSerializer
    lookup_field = "address"
    lookup_value_regex = r"[^/]+"
    key_field = "address"
    csv_fields = ["address", "password", "quota", "enabled", "name"]

    def get_queryset(self) -> Any:
        return super().get_queryset().select_related("domain")

    def normalise(self, key: str) -> str:
        k = _address_key(key)
        return f"{k[0].lower()}@{k[1]}" if k else key

    def find(self, key: str) -> Mailbox | None:
        k = _address_key(key)
        if k is None:
            return None
        return self.get_queryset().filter(local_part__iexact=k[0], domain__name=k[1]).first()

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request: Request) -> HttpResponse:
        rows = [[m.address, "", "" if m.quota is None else m.quota,
                 "yes" if m.enabled else "no", m.name] for m in self.get_queryset()]
        return self._csv_response(rows, "mailboxes")

    @extend_schema(request={"text/csv": OpenApiTypes.STR},
                   responses={200: inline_serializer("ImportResult", {
                       "created": serializers.IntegerField(), "updated": serializers.IntegerField()}),
                       400: OpenApiResponse(description="nothing imported; errors by line")})
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[])
    def import_csv(self, request: Request) -> Response:
        def to_data(row: dict[str, str]) -> dict[str, Any]:
            data: dict[str, Any] = {"address": (row.get("address") or "").strip(),
                                    "enabled": (row.get("enabled") or "yes").strip().lower()
                                    not in ("no", "false", "0"),
                                    "name": (row.get("name") or "").strip()}
            if (row.get("password") or ""):
                data["password"] = row["password"]
            quota = (row.get("quota") or "").strip()
            data["quota"] = quota or None
            return data
        return self._import(request, to_data)


class AliasViewSet(CsvMixin, NaturalKeyViewSet):
    model = Alias
    serializer_class = s.AliasSerializer
    lookup_field = "source"
    lookup_value_regex = r"[^/]+"
    key_field = "source"
    csv_fields = ["source", "targets", "enabled"]

    def get_queryset(self) -> Any:
        return super().get_queryset().select_related("domain")

    def normalise(self, key: str) -> str:
        if key.startswith("@"):
            try:
                return "@" + normalise_domain(key[1:])
            except Exception:
                return key
        k = _address_key(key)
        return f"{k[0].lower()}@{k[1]}" if k else key

    def find(self, key: str) -> Alias | None:
        if key.startswith("@"):
            try:
                name = normalise_domain(key[1:])
            except Exception:
                return None
            return self.get_queryset().filter(local_part="", domain__name=name).first()
        k = _address_key(key)
        if k is None:
            return None
        return self.get_queryset().filter(local_part__iexact=k[0], domain__name=k[1]).first()

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request: Request) -> HttpResponse:
        rows = [[a.source, " ".join(a.targets), "yes" if a.enabled else "no"]
                for a in self.get_queryset()]
        return self._csv_response(rows, "aliases")

    @extend_schema(request={"text/csv": OpenApiTypes.STR},
                   responses={200: inline_serializer("AliasImportResult", {
                       "created": serializers.IntegerField(), "updated": serializers.IntegerField()}),
                       400: OpenApiResponse(description="nothing imported; errors by line")})
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[])
    def import_csv(self, request: Request) -> Response:
        def to_data(row: dict[str, str]) -> dict[str, Any]:
            return {"source": (row.get("source") or "").strip(),
                    "targets": (row.get("targets") or "").split(),
                    "enabled": (row.get("enabled") or "yes").strip().lower()
                    not in ("no", "false", "0")}
        return self._import(request, to_data)


class RelayNetworkViewSet(NaturalKeyViewSet):
    model = RelayNetwork
    serializer_class = s.RelayNetworkSerializer
    domain_path = None
    superadmin_only = True
    lookup_field = "network"
    lookup_value_regex = r"[^/]+(?:/[^/]+)?"  # a CIDR has one slash; find() validates
    key_field = "network"

    def find(self, key: str) -> RelayNetwork | None:
        return self.get_queryset().filter(network=key).first()


class AccessRuleViewSet(NaturalKeyViewSet):
    model = AccessRule
    serializer_class = s.AccessRuleSerializer
    domain_path = None
    superadmin_only = True
    lookup_field = "position"
    lookup_value_regex = r"[^/]+"  # find() accepts ASCII digits only; else a JSON 404
    key_field = "position"

    def find(self, key: str) -> AccessRule | None:
        if not str(key).isdigit() or not str(key).isascii():
            return None
        return self.get_queryset().filter(position=int(key)).first()

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if isinstance(request.data, dict) and "position" in request.data:
            if str(request.data["position"]) != self.kwargs["position"]:
                return Response({"position": ["must match the URL"]},
                                status=status.HTTP_400_BAD_REQUEST)
        return super().update(request, *args, **kwargs)


class QueueSummaryView(APIView):
    """send's queue summary (read-only); 503 when send is down."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT,
                              503: OpenApiResponse(description="send is down")})
    def get(self, request: Request) -> Response:
        from webui.core.scoping import user_domains
        from webui.queue import status as queue_status

        try:
            summary = queue_status.summary()
        except queue_status.SendDown as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        if not is_superadmin(request.user):
            mine = set(user_domains(request.user).values_list("name", flat=True))
            summary = {"domains": {d: n for d, n in summary.get("domains", {}).items()
                                   if d in mine}}
        return Response(summary)
