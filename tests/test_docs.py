"""The OpenAPI document and the interactive docs."""

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
