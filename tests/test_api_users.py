import threading

import pytest


def test_root_greets(client):
    reply = client.get("/")
    assert reply.status_code == 200
    assert reply.get_json() == {"message": "Hello World!"}


def test_create_and_list_users(client):
    first = client.post("/users", json={"username": "john_doe", "email": "john@example.com"})
    second = client.post("/users", json={"username": "Иван", "email": "ivan@example.com"})
    assert first.status_code == 201 and second.status_code == 201
    assert first.get_json() == {
        "id": first.get_json()["id"],
        "username": "john_doe",
        "email": "john@example.com",
    }
    listed = client.get("/users")
    assert listed.status_code == 200
    assert [u["username"] for u in listed.get_json()] == ["john_doe", "Иван"]
    assert "Иван".encode() in listed.data  # not ASCII-escaped


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "a@example.com"}, "username"),
        ({"username": "a"}, "email"),
        ({"username": 123, "email": "a@example.com"}, "username"),
        ({"username": "a", "email": ["a@example.com"]}, "email"),
        ({"username": "a", "email": "not-an-email"}, "email"),
        ({"username": "x" * 65, "email": "a@example.com"}, "username"),
        ({"username": "a", "email": "a" * 250 + "@example.com"}, "email"),
        ({"username": "bad name!", "email": "a@example.com"}, "username"),
        ({"username": "", "email": "a@example.com"}, "username"),
        ({"username": None, "email": "a@example.com"}, "username"),
    ],
)
def test_invalid_fields_are_named(client, payload, field):
    reply = client.post("/users", json=payload)
    assert reply.status_code == 400
    body = reply.get_json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["error"] == "Неверные данные"
    assert field in body["details"]


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b'{"username": "a",}', b"[" * 10_000 + b"]" * 10_000, b"\xff\xfe"]
)
def test_malformed_json_is_400(client, raw):
    reply = client.post("/users", data=raw, content_type="application/json")
    assert reply.status_code == 400
    assert reply.get_json()["code"] == "INVALID_JSON"


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_400(client, raw):
    reply = client.post("/users", data=raw, content_type="application/json")
    assert reply.status_code == 400
    assert reply.get_json()["code"] == "INVALID_JSON"


def test_body_that_is_not_json_is_415(client):
    reply = client.post(
        "/users", data="username=a", content_type="application/x-www-form-urlencoded"
    )
    assert reply.status_code == 415
    assert reply.get_json()["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_duplicate_username_or_email_is_409(client):
    assert (
        client.post("/users", json={"username": "ann", "email": "ann@example.com"}).status_code
        == 201
    )
    same_name = client.post("/users", json={"username": "ann", "email": "other@example.com"})
    same_mail = client.post("/users", json={"username": "bob", "email": "ann@example.com"})
    assert same_name.status_code == 409 and same_mail.status_code == 409
    assert same_name.get_json()["details"] == {"field": "username"}
    assert same_mail.get_json()["details"] == {"field": "email"}
    assert same_name.get_json()["error"] == "Пользователь уже существует"


def test_concurrent_creates_give_exactly_one_201(app):
    barrier = threading.Barrier(16)
    statuses: list[int] = []

    def create():
        client = app.test_client()
        barrier.wait()
        reply = client.post("/users", json={"username": "racer", "email": "racer@example.com"})
        statuses.append(reply.status_code)

    threads = [threading.Thread(target=create) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [201] + [409] * 15
    assert len(app.test_client().get("/users").get_json()) == 1


def test_unknown_route_and_wrong_method_are_json(client):
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.get_json()["code"] == "NOT_FOUND"
    wrong = client.put("/users")
    assert wrong.status_code == 405 and wrong.get_json()["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in wrong.headers["Allow"]


ADMIN = {"username": "admin", "email": "a@example.com"}


@pytest.mark.parametrize(
    ("taken", "again", "field"),
    [
        (ADMIN, ("Admin", "b@example.com"), "username"),
        (ADMIN, ("ADMIN", "b@example.com"), "username"),
        (ADMIN, ("ａｄｍｉｎ", "b@example.com"), "username"),  # fullwidth
        ({"username": "a", "email": "admin@example.com"}, ("b", "Admin@Example.com"), "email"),
    ],
)
def test_names_and_addresses_are_unique_after_nfkc_and_case_folding(client, taken, again, field):
    assert client.post("/users", json=taken).status_code == 201
    username, email = again
    reply = client.post("/users", json={"username": username, "email": email})
    assert reply.status_code == 409
    assert reply.get_json()["details"] == {"field": field}
    assert client.get("/users").get_json() == [
        {"id": client.get("/users").get_json()[0]["id"], **taken}
    ]


def test_the_spelling_given_is_kept_for_display(client):
    reply = client.post("/users", json={"username": "Иван_Петров", "email": "Ivan@Example.com"})
    assert reply.status_code == 201
    assert reply.get_json()["username"] == "Иван_Петров"
    assert client.get("/users").get_json()[0]["username"] == "Иван_Петров"


def test_open_v1_users_are_apart_from_accounts(client):
    """Open v1 neither lists accounts nor reserves their names."""
    account = {"username": "alice", "email": "alice@example.com", "password": "long enough"}
    assert client.post("/api/v2/users", json=account).status_code == 201
    assert client.get("/users").get_json() == []
    squat = client.post("/users", json={"username": "bob", "email": "bob@example.com"})
    assert squat.status_code == 201
    same = client.post("/users", json={"username": "alice", "email": "alice@example.com"})
    assert same.status_code == 201  # an account's name is not open v1's
    assert [u["username"] for u in client.get("/users").get_json()] == ["bob", "alice"]
    bob = {"username": "bob", "email": "bob@example.com", "password": "long enough"}
    assert client.post("/api/v2/users", json=bob).status_code == 201
