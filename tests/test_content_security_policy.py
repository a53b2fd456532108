"""A Content-Security-Policy header on every HTML page; /api/docs from our own files.

Through a real daphne: the header, the page and every file it names as a
browser would fetch them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


class Resources(HTMLParser):
    """Every URL a page makes the browser load: scripts, styles, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.urls.append(values["src"] or "")
            else:
                self._in_script = True
        elif tag == "link" and values.get("href"):
            self.urls.append(values["href"] or "")
        elif tag == "img" and values.get("src"):
            self.urls.append(values["src"] or "")
        elif tag == "style":
            self.inline_styles += 1
        if "style" in values:
            self.inline_styles += 1

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def fetch(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_api_docs_load_only_our_own_files_under_a_csp(live, token):
    status, headers, body = fetch(f"{live.http}/api/docs", token)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy

    page = Resources()
    page.feed(body.decode())
    assert page.inline_scripts == 0 and page.inline_styles == 0
    assert any("swagger-ui-bundle.js" in url for url in page.urls), page.urls
    for url in page.urls:
        assert urlsplit(url).netloc == "" and not url.startswith("//"), url
        # The init script needs the same credentials as the page; static files none.
        status, headers, content = fetch(urljoin(f"{live.http}/api/docs", url), token)
        assert status == 200, (url, status)
        assert content, url
    assert b"cdn" not in body.lower()


def test_api_docs_without_credentials_is_a_json_401(live):
    status, headers, body = fetch(f"{live.http}/api/docs")
    assert status in (401, 403) and headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", ["/admin/login/", "/accounts/login/"])
def test_django_pages_carry_the_csp_header(live, path):
    status, headers, _ = fetch(f"{live.http}{path}")
    assert status == 200
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_a_json_answer_carries_no_csp(live, token):
    status, headers, _ = fetch(f"{live.http}/task-status", token)
    assert status == 200 and "Content-Security-Policy" not in headers
