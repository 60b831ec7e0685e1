"""The OpenAPI document and the interactive docs."""

import dataclasses

import pytest
from openapi_spec_validator import validate

from tests.conftest import settings_for

SPEC_ROUTES = {
    ("/", "get"): {"200"},
    ("/users", "get"): {"200"},
    ("/users", "post"): {"201", "400", "409", "415"},
    ("/files/upload", "post"): {"201", "400", "413", "415", "422", "429"},
    ("/files", "get"): {"200", "400"},
    ("/files/{name}/info", "get"): {"200", "404"},
    ("/files/{name}/download", "get"): {"200", "404", "409"},
    ("/files/{name}", "delete"): {"200", "404"},
    ("/health/storage", "get"): {"200", "503"},
}


@pytest.fixture
def docs_client(tmp_path):
    from api import create_app
    from tests.conftest import close_app

    app = create_app(settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    yield app.test_client()
    close_app(app)


def test_openapi_document_is_valid_and_lists_every_route(docs_client):
    reply = docs_client.get("/openapi.json")
    assert reply.status_code == 200
    document = reply.get_json()
    validate(document)
    for (path, method), statuses in SPEC_ROUTES.items():
        operation = document["paths"][path][method]
        assert statuses <= set(operation["responses"]), (path, method)


def test_schemas_in_the_document_are_the_validating_ones(docs_client):
    document = docs_client.get("/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    user = schemas["UserIn"]
    assert set(user["required"]) == {"username", "email"}
    assert user["properties"]["email"]["maxLength"] == 254
    query = document["paths"]["/files"]["get"]["parameters"]
    limit = next(p for p in query if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 1000
    upload = document["paths"]["/files/upload"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload


def test_interactive_docs_are_served_from_local_assets(docs_client):
    page = docs_client.get("/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "swagger-ui-bundle.js" in html and "/openapi.json" in html
    assert "unpkg.com" not in html and "cdn" not in html.lower()
    asset = docs_client.get("/docs/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.data) > 100_000
    asset.close()
    assert docs_client.get("/docs").status_code in (200, 301, 308)


V2_ROUTES = {
    ("/api/v2/users", "post"): {"201", "400", "409"},
    ("/api/v2/auth/token", "post"): {"200", "401"},
    ("/api/v2/auth/refresh", "post"): {"200", "401"},
    ("/api/v2/auth/token", "delete"): {"204", "401"},
    ("/api/v2/me", "get"): {"200", "401"},
    ("/api/v2/keys", "post"): {"201", "401", "403"},
    ("/api/v2/keys", "get"): {"200", "401"},
    ("/api/v2/keys/{key_id}", "delete"): {"204", "404"},
    ("/api/v2/files", "post"): {"201", "401", "403", "413", "415", "422"},
    ("/api/v2/files", "get"): {"200", "400", "401"},
    ("/api/v2/files/{name}", "get"): {"200", "404"},
    ("/api/v2/files/{name}/download", "get"): {"200", "302", "404", "409"},
    ("/api/v2/files/{name}", "delete"): {"204", "404"},
    ("/api/v2/files/{name}", "patch"): {"200", "400", "404"},
    ("/api/v2/files/bulk", "post"): {"200", "400"},
    ("/api/v2/tags", "get"): {"200", "401"},
    ("/api/v2/categories", "get"): {"200", "401"},
    ("/api/v2", "get"): {"200"},
    ("/api/v2/events/ticket", "post"): {"200", "401", "403"},
}


def test_one_document_per_version_each_with_its_security_scheme(docs_client):
    v1 = docs_client.get("/api/v1/openapi.json").get_json()
    v2 = docs_client.get("/api/v2/openapi.json").get_json()
    unversioned = docs_client.get("/openapi.json").get_json()
    for document in (v1, v2, unversioned):
        validate(document)
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {(p.removeprefix("/api/v1") or "/") for p in v1["paths"]} == set(unversioned["paths"])
    assert all(path == "/api/v2" or path.startswith("/api/v2/") for path in v2["paths"])
    for (path, method), statuses in V2_ROUTES.items():
        assert statuses <= set(v2["paths"][path][method]["responses"]), (path, method)
    assert v2["security"] == [{"bearer": []}] and v2["info"]["version"] == "2.0.0"
    # The docs client runs v1 open (the local stack): no credentials required there.
    assert v1["security"] == [] and unversioned["security"] == []
    listing = {p["name"] for p in v2["paths"]["/api/v2/files"]["get"]["parameters"]}
    assert {"limit", "cursor", "sort", "q", "prefix", "tag", "category", "status"} <= listing
    assert {"content_type", "min_size", "max_size", "uploaded_after", "uploaded_before"} <= listing
    page = docs_client.get("/docs/").get_data(as_text=True)
    assert "/api/v2/openapi.json" in page and "/api/v1/openapi.json" in page


def test_v1_requires_the_scheme_in_token_mode(tmp_path):
    from api import create_app
    from tests.conftest import close_app

    settings = settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    app = create_app(dataclasses.replace(settings, v1_access="token"))
    try:
        document = app.test_client().get("/api/v1/openapi.json").get_json()
        assert document["security"] == [{"bearer": []}]
    finally:
        close_app(app)
