"""get_food_handler_links and ``/documents/<token>``: signed, expiring links that download
exactly the stored bytes, for the reader role only, with JSON errors and never a file."""

from __future__ import annotations

import io
import json
import time

import pytest
from django.contrib.auth.models import Group
from django.core import signing
from pypdf import PdfReader
from rest_framework.test import APIClient

from operations import documents
from operations.models import FoodHandlerCertificate, FoodHandlerPacket
from tasks.auth.bearer import issue_local_token
from tests.support.food_handlers import AS_OF, ROSTER, food_handlers_by_id
from tests.support.jobs import run_job

pytestmark = pytest.mark.django_db(transaction=True)
READER_ROLE = "TaskStatus.FoodHandler.Read"
LOCATIONS = ["L01", "L08"]  # L01: a certificate missing at the source; L08: an HTML page


@pytest.fixture
def checked(sample_roster):
    task = run_job("update_food_handler_pdfs", {"locations": LOCATIONS})
    assert task.status == "completed_with_errors", task.error
    return sample_roster


@pytest.fixture
def links(checked):
    task = run_job("get_food_handler_links")
    assert task.status == "completed", task.error
    return task.result


@pytest.fixture
def reader(django_user_model):
    user = django_user_model.objects.create_user("fh-reader", password="pw")
    user.groups.add(Group.objects.get_or_create(name=READER_ROLE)[0])
    return user


@pytest.fixture
def reader_client(client, reader):
    client.force_login(reader)
    return client


def all_urls(result: dict) -> list[str]:
    urls = [loc["packet"]["url"] for loc in result["locations"] if loc["packet"]]
    return urls + [e["url"] for loc in result["locations"] for e in loc["employees"] if e["url"]]


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert "Content-Disposition" not in response
    if response.request["REQUEST_METHOD"] == "HEAD":
        return {}
    body = response.json()
    assert body["detail"] and body["request_id"]
    assert "Content-Disposition" not in response
    return body


def test_the_result_lists_every_food_handler_with_status_and_link(links, checked):
    handlers = food_handlers_by_id()
    assert abs(links["expires_at"] - (time.time() + 7 * 24 * 3600)) < 60
    assert [loc["location_id"] for loc in links["locations"]] == LOCATIONS
    for location in links["locations"]:
        loc = location["location_id"]
        mine = sorted(k for k, e in handlers.items() if e["location_id"] == loc)
        assert [e["employee_id"] for e in location["employees"]] == mine
        rows = {r.employee_id: r for r in FoodHandlerCertificate.objects.filter(location_id=loc)}
        for line in location["employees"]:
            row, source = rows[line["employee_id"]], handlers[line["employee_id"]]
            assert set(line) == {"employee_id", "name", "job", "status", "expires_on", "url"}
            assert (line["name"], line["job"], line["status"]) == (
                source["name"],
                source["job"],
                row.status,
            )
            card = source["food_handler"]
            assert line["expires_on"] == (card["expires_on"] if card else None)
            assert (line["url"] is None) == (row.document == "")
            if line["url"]:
                assert line["url"].startswith("/documents/")
        assert location["packet"]["filename"] == f"food-handler-packet-{loc}.pdf"
    refused = {e["employee_id"]: e for loc in links["locations"] for e in loc["employees"]}
    assert refused["L01-E071"]["url"] is None and refused["L01-E071"]["status"] == "overdue"
    assert refused["L08-E003"]["url"] is None
    # Nothing in a link counts up: it carries a content hash, never a row id.
    for url in all_urls(links):
        token = url.removeprefix("/documents/")
        assert len(token) < 400
        for row in FoodHandlerCertificate.objects.all()[:5]:
            assert f'"{row.pk}"' not in url


def test_every_link_downloads_the_stored_bytes(links, checked, reader_client):
    handlers = food_handlers_by_id()
    downloads = 0
    for location in links["locations"]:
        packet = FoodHandlerPacket.objects.get(location_id=location["location_id"])
        response = reader_client.get(location["packet"]["url"])
        assert response.status_code == 200
        assert response.content == (checked / packet.document).read_bytes()
        assert len(PdfReader(io.BytesIO(response.content)).pages) >= 2
        assert response["Content-Disposition"] == (
            f'attachment; filename="food-handler-packet-{location["location_id"]}.pdf"'
        )
        for line in location["employees"]:
            if not line["url"]:
                continue
            response = reader_client.get(line["url"])
            assert response.status_code == 200
            assert response["Content-Type"] == "application/pdf"
            assert response["Content-Disposition"] == (
                f'attachment; filename="food-handler-{line["employee_id"]}.pdf"'
            )
            assert response["X-Content-Type-Options"] == "nosniff"
            assert "no-store" in response["Cache-Control"]
            card = handlers[line["employee_id"]]["food_handler"]
            assert response.content == (ROSTER / card["certificate_url"]).read_bytes()
            assert int(response["Content-Length"]) == len(response.content)
            downloads += 1
    assert (
        downloads
        == sum(1 for e in handlers.values() if e["location_id"] in LOCATIONS and e["food_handler"])
        - 2
    )  # the two refused ones


def test_head_answers_the_headers_without_the_file(links, reader_client):
    url = links["locations"][0]["employees"][0]["url"]
    full = reader_client.get(url)
    head = reader_client.head(url)
    assert head.status_code == 200 and head.content == b""
    for header in (
        "Content-Type",
        "Content-Disposition",
        "Content-Length",
        "X-Content-Type-Options",
    ):
        assert head[header] == full[header]


def test_a_bearer_token_of_a_reader_downloads_too(links, reader):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(reader)}")
    response = api.get(links["locations"][1]["packet"]["url"], HTTP_ACCEPT="application/pdf")
    assert response.status_code == 200 and response.content.startswith(b"%PDF-")


def test_an_altered_or_made_up_token_is_403_json(links, reader_client):
    url = links["locations"][0]["employees"][0]["url"]
    token = url.removeprefix("/documents/")
    payload, stamp, signature = token.rsplit(":", 2)
    other = links["locations"][1]["employees"][0]["url"].removeprefix("/documents/")
    forged = [
        f"{payload}:{stamp}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        f"{payload[:-2]}xx:{stamp}:{signature}",
        f"{other.rsplit(':', 1)[0]}:{signature}",  # another link's payload, this signature
        "x" * 2049,  # too long, whatever it holds
        token + "A" * 2100,
        "not-a-token",
        # Signed with our key but another salt: not one of our links.
        signing.dumps(
            {"n": "food-handler/packets/" + "0" * 64 + ".pdf", "f": "x.pdf"}, compress=True
        ),
        # Our salt, but a name outside the document folders.
        signing.dumps({"n": "../../settings.py", "f": "x.pdf"}, salt=documents.SALT),
    ]
    for bad in forged:
        body = assert_json_error(reader_client.get(f"/documents/{bad}"), 403)
        assert body["detail"] == "invalid link"
        assert_json_error(reader_client.head(f"/documents/{bad}"), 403)
    # The right one still works, and a download asking only for a PDF gets JSON errors.
    assert reader_client.get(url).status_code == 200
    assert_json_error(reader_client.get("/documents/nope", HTTP_ACCEPT="application/pdf"), 403)


def test_an_expired_link_is_410_json(settings, checked, reader_client):
    settings.DOCUMENT_LINK_SECONDS = 1
    task = run_job("get_food_handler_links", {"locations": ["L08"]})
    assert task.status == "completed", task.error
    url = task.result["locations"][0]["packet"]["url"]
    assert task.result["expires_at"] - time.time() < 2
    time.sleep(2.2)
    body = assert_json_error(reader_client.get(url), 410)
    assert "expired" in body["detail"]
    settings.DOCUMENT_LINK_SECONDS = 3600  # the same link, checked against a longer lifetime
    assert reader_client.get(url).status_code == 200


def test_only_the_reader_role_and_staff_see_documents(links, client, django_user_model):
    url = links["locations"][0]["packet"]["url"]
    plain = django_user_model.objects.create_user("plain", password="pw")
    runner = django_user_model.objects.create_user("runs", password="pw")
    runner.groups.add(Group.objects.get_or_create(name="TaskStatus.Run")[0])
    for user in (plain, runner):
        client.force_login(user)
        body = assert_json_error(client.get(url), 404)
        assert body["detail"] == "no such document"
        assert_json_error(client.get("/documents/garbage"), 404)  # no hint either way
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(user)}")
        assert_json_error(api.get(url), 404)
    staff = django_user_model.objects.create_user("boss", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 200


def test_an_anonymous_client_is_refused_json(links, client):
    url = links["locations"][0]["packet"]["url"]
    response = client.get(url)
    assert response.status_code in (401, 403)
    assert_json_error(response, response.status_code)
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-token")
    assert_json_error(bad.get(url), 401)


def test_a_document_gone_from_storage_is_410_json(links, checked, reader_client):
    line = links["locations"][0]["employees"][0]
    row = FoodHandlerCertificate.objects.get(employee_id=line["employee_id"])
    (checked / row.document).unlink()
    assert_json_error(reader_client.get(line["url"]), 410)
    assert_json_error(reader_client.head(line["url"]), 410)


def test_links_need_records_and_known_locations(sample_roster):
    none = run_job("get_food_handler_links")
    assert none.status == "failed"
    assert none.error == "no food handler records yet; run update_food_handler_pdfs first"
    run_job("update_food_handler_pdfs", {"locations": ["L02"]})
    unknown = run_job("get_food_handler_links", {"locations": ["L02", "L09"]})
    assert unknown.status == "failed" and unknown.error.startswith("unknown location(s): L09")
    one = run_job("get_food_handler_links", {"locations": ["L02"]})
    assert one.status == "completed"
    assert one.progress == {"current": 1, "total": 1, "message": one.progress_message}
    assert json.dumps(one.result).count("/documents/") == 1 + sum(
        1 for e in one.result["locations"][0]["employees"] if e["url"]
    )


def test_ids_outside_the_filename_characters_still_get_links(doc_storage, reader_client):
    """An employee or location id with spaces, slashes, quotes or accents is the roster's
    business: the download name gets "_" for them, and the job does not fail."""
    certificate, digest = documents.store("certificates", b"%PDF-1.4 certificate")
    packet, packet_digest = documents.store("packets", b"%PDF-1.4 packet")
    location, employee = 'Café 1/"A"', "L01 E/001é"
    FoodHandlerCertificate.objects.create(
        employee_id=employee,
        employee_name="Ana",
        location_id=location,
        status="valid",
        document=certificate,
        content_hash=digest,
        as_of=AS_OF,
    )
    FoodHandlerPacket.objects.create(
        location_id=location, document=packet, content_hash=packet_digest, as_of=AS_OF
    )
    task = run_job("get_food_handler_links")
    assert task.status == "completed", task.error
    [line] = task.result["locations"][0]["employees"]
    assert line["employee_id"] == employee
    assert task.result["locations"][0]["packet"]["filename"] == (
        "food-handler-packet-Caf__1__A_.pdf"
    )
    response = reader_client.get(line["url"])
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="food-handler-L01_E_001_.pdf"'
    packet_url = task.result["locations"][0]["packet"]["url"]
    assert reader_client.get(packet_url).content == b"%PDF-1.4 packet"


def test_sign_and_unsign():
    name = "food-handler/certificates/" + "a" * 64 + ".pdf"
    token = documents.sign(name, "food-handler-L01-E001.pdf")
    assert documents.unsign(token) == documents.Link(name, "food-handler-L01-E001.pdf")
    with pytest.raises(ValueError):
        documents.sign("food-handler/certificates/../../x.pdf", "a.pdf")
    with pytest.raises(ValueError):
        documents.sign(name, 'a".pdf')
    with pytest.raises(documents.BadLink):
        documents.unsign(token[:-3])
