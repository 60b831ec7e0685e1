"""The one JSON error shape, and the mapping of every exception to it.

Body: ``{"error": <human message, Russian>, "code": <MACHINE_CODE>, "details"?: ...}`` plus the
extra keys of some errors (``allowed_extensions``, ``max_size_mb``), as docs/API.md lists them.
No route answers an HTML page or a traceback.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, SecurityError

from api import multipart, services
from common.storage import StorageUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised by routes; rendered by the handler below."""

    def __init__(
        self,
        http_status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message = http_status, code, message
        self.details, self.extra, self.headers = details, extra, headers or {}


@dataclass(frozen=True)
class Problem:
    """One error of the catalogue below: raise it by name, ``raise FILE_NOT_FOUND()``, with
    its details (``VALIDATION_ERROR.at("field", "why")``) and extra keys as docs/API.md shows."""

    http_status: int
    code: str
    message: str

    def __call__(
        self, details: Any = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> ApiError:
        status, code, message = self.http_status, self.code, self.message
        return ApiError(status, code, message, details, headers=headers, **extra)

    def at(self, field: str, problem: Any) -> ApiError:
        """The error about one field of the request: ``details`` is ``{field: problem}``."""
        return self({field: problem})


# The catalogue: every error a route raises (docs/API.md, "Errors").
INVALID_JSON = Problem(400, "INVALID_JSON", "Некорректный JSON")
NOT_AN_OBJECT = Problem(400, "INVALID_JSON", "Ожидается JSON-объект")
JSON_EXPECTED = Problem(415, "UNSUPPORTED_MEDIA_TYPE", "Ожидается тело в формате application/json")
VALIDATION_ERROR = Problem(400, "VALIDATION_ERROR", "Неверные данные")
UNKNOWN_PARAMETER = Problem(400, "UNKNOWN_PARAMETER", "Неизвестный параметр запроса")
INVALID_LIMIT = Problem(
    400, "INVALID_LIMIT", "Параметр limit должен быть целым числом от 1 до 1000"
)
INVALID_CURSOR = Problem(400, "INVALID_CURSOR", "Недействительный курсор")
INVALID_TAG = Problem(400, "INVALID_TAG", "Недопустимый тег или категория")
UNAUTHORIZED = Problem(401, "UNAUTHORIZED", "Требуется авторизация")
BAD_CREDENTIAL = Problem(401, "UNAUTHORIZED", "Недействительные учетные данные")
INVALID_CREDENTIALS = Problem(401, "INVALID_CREDENTIALS", "Неверное имя пользователя или пароль")
FORBIDDEN = Problem(403, "FORBIDDEN", "Доступ запрещен")
QUOTA_EXCEEDED = Problem(403, "QUOTA_EXCEEDED", "Превышена квота хранилища")
INSUFFICIENT_SCOPE = Problem(403, "INSUFFICIENT_SCOPE", "Недостаточно прав для этого действия")
INVALID_SIGNATURE = Problem(403, "INVALID_SIGNATURE", "Ссылка недействительна или истекла")
NOT_FOUND = Problem(404, "NOT_FOUND", "Ресурс не найден")
FILE_NOT_FOUND = Problem(404, "FILE_NOT_FOUND", "Файл не найден")
USER_NOT_FOUND = Problem(404, "USER_NOT_FOUND", "Пользователь не найден")
KEY_NOT_FOUND = Problem(404, "KEY_NOT_FOUND", "Ключ не найден")
FILE_NOT_READY = Problem(409, "FILE_NOT_READY", "Файл еще не готов к скачиванию")
FILE_UNAVAILABLE = Problem(409, "FILE_NOT_READY", "Файл недоступен")
USER_EXISTS = Problem(409, "USER_EXISTS", "Пользователь уже существует")
FILE_REJECTED = Problem(422, "FILE_REJECTED", "Файл отклонен: содержимое не соответствует типу")
UPLOAD_NOT_FOUND = Problem(404, "UPLOAD_NOT_FOUND", "Загрузка не найдена")
UPLOAD_CLOSED = Problem(409, "UPLOAD_CLOSED", "Загрузка уже завершена или отменена")
PARTS_MISSING = Problem(400, "PARTS_MISSING", "Получены не все части файла")
PART_SIZE_MISMATCH = Problem(400, "PART_SIZE_MISMATCH", "Размер части не совпадает с объявленным")
CHECKSUM_MISMATCH = Problem(400, "CHECKSUM_MISMATCH", "Контрольная сумма части не совпадает")
FILE_TOO_LARGE = Problem(413, "FILE_TOO_LARGE", "Файл слишком большой")
EXTENSION_NOT_ALLOWED = Problem(415, "EXTENSION_NOT_ALLOWED", "Недопустимое расширение файла")
SERVICE_UNAVAILABLE = Problem(503, "SERVICE_UNAVAILABLE", "Сервис временно недоступен")


def error_response(
    http_status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
):
    """Build the JSON error response; every error the API returns comes through here."""
    body: dict[str, Any] = {"error": message, "code": code}
    if details is not None:
        body["details"] = details
    body.update(extra)
    response = jsonify(body)
    response.status_code = http_status
    response.headers.update(headers or {})
    return response


#: Machine code and message per HTTP status, for the app's errors and gunicorn's own answers
#: (``gunicorn.conf.py``) alike.
HTTP_MESSAGES = {
    400: ("BAD_REQUEST", "Неверный запрос"),
    403: ("FORBIDDEN", "Доступ запрещен"),
    404: ("NOT_FOUND", "Ресурс не найден"),
    405: ("METHOD_NOT_ALLOWED", "Метод не разрешен"),
    413: ("PAYLOAD_TOO_LARGE", "Тело запроса слишком большое"),
    414: ("URI_TOO_LONG", "Слишком длинный адрес запроса"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Неподдерживаемый тип содержимого"),
    417: ("EXPECTATION_FAILED", "Ожидание не может быть выполнено"),
    429: ("RATE_LIMITED", "Превышен лимит запросов"),
    431: ("HEADERS_TOO_LARGE", "Слишком большие заголовки запроса"),
    501: ("NOT_IMPLEMENTED", "Не поддерживается"),
}
INTERNAL_ERROR = ("INTERNAL_ERROR", "Внутренняя ошибка сервера")

_UPLOAD_ERRORS = {
    multipart.NotMultipart: (400, "Ожидается тело multipart/form-data с полем file"),
    multipart.MalformedUpload: (400, "Некорректное тело multipart/form-data"),
    multipart.MissingFile: (400, "Нет файла в запросе: ожидается поле file"),
    multipart.EmptyFilename: (400, "Файл не выбран: пустое имя файла"),
    multipart.DuplicateFile: (400, "В запросе должен быть ровно один файл в поле file"),
}


def upload_error(exc: multipart.UploadError):
    # Imported here, not above: gunicorn.conf.py imports this module before it sets
    # PROMETHEUS_MULTIPROC_DIR, and prometheus_client chooses its storage on first import.
    from api.observability import UPLOADS_REFUSED

    UPLOADS_REFUSED.labels(exc.code).inc()
    settings = services.settings()
    if isinstance(exc, multipart.FileTooLarge):
        return error_response(
            413,
            exc.code,
            "Файл слишком большой",
            max_size_mb=settings.max_upload_mb,
            headers={"Connection": "close"},
        )
    if isinstance(exc, multipart.ExtensionNotAllowed):
        return error_response(
            415,
            exc.code,
            "Недопустимый тип файла",
            allowed_extensions=list(settings.allowed_extensions),
        )
    status, message = _UPLOAD_ERRORS.get(type(exc), (400, "Неверный запрос"))
    return error_response(status, exc.code, message, details=str(exc))


def _outage(exc: Exception, http_status: int, code: str, message: str, retry_after: int):
    """Something the service depends on is down or full: logged, and retry later."""
    log.error("%s: %s", code, exc)
    return error_response(http_status, code, message, headers={"Retry-After": str(retry_after)})


def passwords_busy() -> type[Exception]:
    from common.accounts.passwords import Busy

    return Busy


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(
            exc.http_status, exc.code, exc.message, exc.details, exc.headers, **exc.extra
        )

    app.register_error_handler(multipart.UploadError, upload_error)

    @app.errorhandler(SecurityError)
    def _host_not_allowed(exc: SecurityError):
        return error_response(400, "HOST_NOT_ALLOWED", "Недопустимый адрес сервера (Host)")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code, message = HTTP_MESSAGES.get(exc.code or 500, ("HTTP_ERROR", exc.name))
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        if exc.code == 413:
            headers["Connection"] = "close"
        return error_response(exc.code or 500, code, message, headers=headers)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _database_down(exc: Exception):
        return _outage(exc, 503, "DATABASE_UNAVAILABLE", "База данных временно недоступна", 5)

    @app.errorhandler(OSError)
    def _disk_error(exc: OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _outage(
                exc, 507, "INSUFFICIENT_STORAGE", "Недостаточно места для приема файла", 60
            )
        return _unexpected(exc)

    @app.errorhandler(passwords_busy())
    def _password_work_busy(_exc: Exception):
        return error_response(
            503,
            "BUSY",
            "Сервер занят проверкой паролей, повторите позже",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(StorageUnavailable)
    def _storage_down(exc: StorageUnavailable):
        return _outage(exc, 503, "STORAGE_UNAVAILABLE", "Object Storage недоступен", 5)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return _database_down(exc)
        log.exception("unhandled error")
        return error_response(500, *INTERNAL_ERROR)
