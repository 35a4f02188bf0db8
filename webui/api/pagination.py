"""Limit/offset pagination that refuses a bad ``limit`` or ``offset`` (400) instead of
silently using the default, as the schema promises (non-negative integers)."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_LIMIT = 1000


class StrictLimitOffsetPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        for name in (self.limit_query_param, self.offset_query_param):
            values = request.query_params.getlist(name)
            if len(values) > 1 or any(not re.fullmatch(r"[0-9]{1,9}", v) for v in values):
                raise ValidationError({name: ["must be one non-negative integer"]})
        return super().paginate_queryset(queryset, request, view)
