"""Default pagination of the API: numbered pages (out-of-range pages are a 404, never a
database error); the audit history uses cursor pagination instead."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class Pages(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
