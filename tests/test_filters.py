"""One parser for the list filters: the API refuses what the pages quietly drop."""

from __future__ import annotations

import pytest
from django.http import QueryDict

from tasks.filters import page_filters

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("query", "operation", "statuses"),
    [
        ("operation=daily_sales&status=failed,error", "daily_sales", ["failed", "error"]),
        ("operation=nope&status=failed,gone", None, ["failed"]),
        ("status=gone", None, None),
        ("", None, None),
        ("operation=&status=,", None, None),
    ],
)
def test_the_pages_read_the_api_filters_and_drop_what_the_api_refuses(query, operation, statuses):
    assert page_filters(QueryDict(query)) == (operation, statuses)


def test_the_api_refuses_what_the_monitor_drops(api, client, user):
    refused = api.get("/task-status?operation=nope&status=failed,gone")
    assert refused.status_code == 400
    assert refused.json()["parameter"] == "operation"
    refused = api.get("/task-status?status=failed,gone")
    assert refused.status_code == 400 and "unknown status 'gone'" in refused.json()["detail"]
    client.force_login(user)
    page = client.get("/?operation=nope&status=failed,gone")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="failed" checked' in html and 'value="error" checked' not in html
