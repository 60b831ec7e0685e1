"""Accounts over HTTP: register, log in, call with a token or a key (tests of v2 and token mode)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import update

from common.db import Database
from common.models import User
from common.settings import Settings
from tests.conftest import Server, start_gunicorn

PASSWORD = "correct horse battery"


def token_settings(settings: Settings, **overrides) -> Settings:
    """The stack's settings with v1 closed (the shipped default) and ``overrides``."""
    return dataclasses.replace(settings, v1_access="token", **overrides)


def start_api(settings: Settings, tmp_path: Path, **env: str) -> Server:
    return start_gunicorn(
        settings, tmp_path / f"gunicorn-{len(list(tmp_path.iterdir()))}.log", **env
    )


@dataclass
class Account:
    """A registered user of an API at ``url``, logged in."""

    url: str
    username: str
    tokens: dict = field(default_factory=dict)
    id: int = 0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(
            self.url + path, headers=self.auth | kwargs.pop("headers", {}), **kwargs
        )

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(
            self.url + path, headers=self.auth | kwargs.pop("headers", {}), **kwargs
        )

    def patch(self, path: str, **kwargs) -> requests.Response:
        return requests.patch(
            self.url + path, headers=self.auth | kwargs.pop("headers", {}), **kwargs
        )

    def delete(self, path: str, **kwargs) -> requests.Response:
        return requests.delete(
            self.url + path, headers=self.auth | kwargs.pop("headers", {}), **kwargs
        )

    def upload(self, path: str = "/api/v2/files", data: bytes = b"hello", name: str = "a.txt"):
        reply = self.post(path, files={"file": (name, data)})
        assert reply.status_code == 201, reply.text
        body = reply.json()
        return body.get("name") or body["filename"]


def register(url: str, username: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(
        url + "/api/v2/users",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )


def log_in(url: str, username: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(
        url + "/api/v2/auth/token", json={"username": username, "password": password}
    )


def account(url: str, username: str) -> Account:
    created = register(url, username)
    assert created.status_code == 201, created.text
    tokens = log_in(url, username)
    assert tokens.status_code == 200, tokens.text
    return Account(url, username, tokens.json(), created.json()["id"])


def make_admin(db: Database, user: Account) -> Account:
    """``user`` made an admin (as the CLI does), logged in again to carry it in its token."""
    with db.session() as session:
        session.execute(update(User).where(User.id == user.id).values(is_admin=True))
    user.tokens = log_in(user.url, user.username).json()
    return user
