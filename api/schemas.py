"""Request and response schemas (pydantic): they validate requests and generate the OpenAPI
document at ``/openapi.json`` through spectree, so the two cannot drift apart.

spectree was chosen because it works with plain Flask blueprints and pydantic models as a
decorator (no replacement app class), validates query and JSON bodies, and builds the
OpenAPI 3 document from the same models; its validation errors are handed to ``before_handler``
below so they come out in the service's one error shape.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from flask import current_app
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
)
from spectree import Response, SpecTree
from spectree.model_adapter.pydantic_adapter import BaseFile
from spectree.plugins.flask_plugin import FlaskPlugin

from api import errors
from common.models import FileStatus, identity_key


def _precis(value: str) -> str:
    from common.accounts.usernames import check

    return check(value)


#: A pattern's bounded repetition of a Unicode class (``[\w.-]{1,64}``) compiles, in
#: pydantic-core's regex engine, into ~2 MiB of automaton for every field that uses it; the
#: length is a plain ``max_length`` instead (the same strings pass).
NAME_PATTERN = r"^[\w.-]+$"
NAME_MAX = 64

Username = Annotated[
    str,
    StringConstraints(
        strict=True, strip_whitespace=True, max_length=NAME_MAX, pattern=NAME_PATTERN
    ),
    AfterValidator(_precis),
]


def _email(value: str) -> str:
    """A syntactically valid address (RFC 5322 via email-validator), domain lower-cased; no DNS
    look-up, and reserved names such as ``example.test`` are accepted like any other.
    (Imported here: its tables are loaded by the processes that validate an address.)"""
    import email_validator

    try:
        checked = email_validator.validate_email(
            value, check_deliverability=False, globally_deliverable=False, test_environment=True
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None
    if len(identity_key(checked.normalized).encode()) > MAX_KEY_BYTES:
        raise ValueError("the address is too long once normalised (NFKC, case folded)")
    return checked.normalized


#: The longest identity key a unique index holds (PostgreSQL's B-tree takes ~2700 bytes); a
#: 64-character username stays under it, an address of 254 characters might not.
MAX_KEY_BYTES = 2048


Email = Annotated[
    str,
    StringConstraints(strict=True, max_length=254),
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]

#: What a file object's status may be: every FileStatus a client can see (not ``deleted``).
Status = Literal[tuple(s.value for s in FileStatus if s is not FileStatus.DELETED)]


class UserIn(BaseModel):
    """The body of ``POST /users``."""

    model_config = ConfigDict(strict=True)

    username: Username
    email: Email


class UserOut(BaseModel):
    id: int
    username: str
    email: str


class UserList(RootModel[list[UserOut]]):
    pass


class ErrorBody(BaseModel):
    """Every error: a human message, a stable machine code, and details where there are any."""

    model_config = ConfigDict(extra="allow")

    error: str
    code: str
    details: Any | None = None
    allowed_extensions: list[str] | None = None
    max_size_mb: int | None = None
    status: Status | None = None


class Hello(BaseModel):
    message: str


class Health(BaseModel):
    status: Literal["healthy", "unhealthy"]
    message: str
    timestamp: str


class FileMetadata(BaseModel):
    """The four string fields every file has, plus what the metadata worker extracted."""

    model_config = ConfigDict(extra="allow")

    original_name: str
    upload_time: str
    file_size: str
    content_type: str
    width: int | None = None
    height: int | None = None
    pages: int | None = None


class FileObject(BaseModel):
    name: str
    original_name: str
    size: int
    content_type: str
    status: Status
    last_modified: str
    etag: str | None
    sha256: str
    metadata: FileMetadata
    download_url: str | None
    error: str | None = None


class UploadForm(BaseModel):
    file: BaseFile = Field(description="the file; its name's extension must be allowed")


class UploadReply(BaseModel):
    message: str
    filename: str
    original_name: str
    size: int
    content_type: str
    status: Status
    status_url: str
    download_url: str | None
    file_info: FileObject


class FileQuery(BaseModel):
    prefix: str = Field("", description="only names starting with this")
    limit: int = Field(100, ge=1, le=1000, description="at most this many files")


class FileList(BaseModel):
    files: list[FileObject]
    count: int
    prefix: str


class DownloadReply(BaseModel):
    download_url: str
    file_info: FileObject
    expires_in: int


class DeleteReply(BaseModel):
    message: str
    filename: str


def error_replies(*codes: int) -> dict[str, type[BaseModel]]:
    return {f"HTTP_{code}": ErrorBody for code in codes}


def replies(ok: dict[str, Any], *error_codes: int) -> Response:
    """A spectree Response: the success bodies, the given errors, and the ones any route has."""
    return Response(**ok, **error_replies(*error_codes, 429, 500, 503))


def before_handler(req, resp, req_validation_error, instance, model_adapter) -> None:
    """Turn spectree's validation errors into the service's error shape."""
    if req_validation_error is None:
        return
    fields: dict[str, str] = {}
    unknown: list[str] = []
    for error in req_validation_error.errors(include_url=False):
        name = ".".join(str(p) for p in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            unknown.append(name)
        fields.setdefault(name, error["msg"])
    if unknown:
        raise errors.UNKNOWN_PARAMETER(
            {"unknown": sorted(unknown)},
        )
    if "limit" in fields:
        raise errors.INVALID_LIMIT(
            {"limit": req.args.get("limit")},
        )
    raise errors.VALIDATION_ERROR(fields)


#: ``app.config`` key: check every reply against its documented model as well. On in debug mode
#: and in the test suite's in-process apps; production skips it, since validating a page of 100
#: files took longer than building it. Replies are checked against the published document by
#: the suite either way (tests/test_schema_fuzz.py).
VALIDATE_REPLIES = "VALIDATE_REPLIES"


class _Plugin(FlaskPlugin):
    """spectree's Flask plugin; requests are always validated, replies as configured."""

    def validate_response(self, resp, resp_model, skip_validation, force_resp_serialize):
        skip = skip_validation or not current_app.config.get(VALIDATE_REPLIES)
        return super().validate_response(resp, resp_model, skip, force_resp_serialize)


class _SpecTree(SpecTree):
    """spectree's SpecTree, each model's JSON schema generated once. spectree generates it at
    every decoration that names the model: 292 generations for the 38 routes, most of them the
    same few error replies, were about a quarter of an API process's start (0.45 of 1.75 s of
    CPU). A model named again gets a copy of its first schema (spectree edits the ones it holds
    while it writes the document), so the document is the same
    (tests/unit/test_tuning.py)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._schemas: dict[tuple[type, str], tuple[str, dict]] = {}

    def _add_model(self, model, mode="validation") -> str:
        known = self._schemas.get((model, mode))
        if known is None:
            key = super()._add_model(model, mode)
            self._schemas[model, mode] = (key, copy.deepcopy(self.models[key]))
            return key
        key, schema = known
        self.models[key] = copy.deepcopy(schema)
        return key


def _spec(title: str, version: str, path: str) -> SpecTree:
    return _SpecTree(
        "flask",
        backend=_Plugin,
        title=title,
        version=version,
        path=path,
        mode="strict",  # document the routes this instance validates, not /docs or /storage
        naming_strategy=lambda model: model.__name__,
        page_templates={},  # the interactive docs are served from local assets at /docs
        validation_error_status=400,
        before=before_handler,
        annotations=False,
    )


#: v1 (the unversioned routes and /api/v1) and v2: one OpenAPI document each (api/docs.py).
spec = _spec("Upload pipeline API", "1.0.0", "apidoc")
spec_v2 = _spec("Upload pipeline API", "2.0.0", "apidoc/v2")
