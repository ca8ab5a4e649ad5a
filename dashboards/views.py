"""The live dashboard for logged-in admins.

The page is rendered once with the recent statistics of the user's tenants (counters, top
fingerprints, per database and user); everything after that comes over ``/api/v1/stream``
(audit tail, metrics snapshots), authenticated by the admin session — the page never polls.
Its JavaScript and CSS are the app's own files, served by :func:`asset` so the dashboard works
under daphne alone, without a CDN or a collectstatic step.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
from pathlib import Path

from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from controlplane.reports.services import usage_for
from controlplane.tenants.services import tenants_of

ASSETS = Path(__file__).resolve().parent / "static" / "dashboards"
RECENT = dt.timedelta(hours=24)


@require_GET
@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    tenants = list(tenants_of(request.user))  # type: ignore[arg-type]
    since = timezone.now() - RECENT
    usage = usage_for(tenants, since=since, all_tenants=bool(request.user.is_superuser))  # type: ignore[union-attr]
    return render(
        request,
        "dashboards/index.html",
        {"tenants": tenants, "usage": usage, "since": since, "title": "Live dashboard"},
    )


@require_GET
@staff_member_required
def asset(request: HttpRequest, name: str) -> FileResponse:
    path = (ASSETS / name).resolve()
    if ASSETS not in path.parents or not path.is_file():
        raise Http404(name)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = FileResponse(path.open("rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=300"
    return response
