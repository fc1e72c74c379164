"""The OpenAPI schema is valid, warning-free, served, and documents the shared error body."""

import json

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/streams/{id}/live/" in out.read_text()


def test_schema_and_docs_are_served(api_client):
    schema = json.loads(api_client.get("/api/schema/?format=json").content)
    assert schema["openapi"].startswith("3.")
    ops = schema["paths"]["/api/v1/webhooks/{id}/"]
    assert set(ops["patch"]["responses"]) >= {"200", "400", "401", "403", "404", "413", "415", "429"}
    error_ref = ops["delete"]["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref == "#/components/schemas/ErrorResponse"
    create = schema["paths"]["/api/v1/streams/"]["post"]
    assert list(create["requestBody"]["content"]) == ["application/json"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("StreamWithKey")
    assert "stream_key" not in schema["components"]["schemas"]["Stream"]["properties"]
    assert "secret" not in schema["components"]["schemas"]["Endpoint"]["properties"]
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
