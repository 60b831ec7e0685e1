"""The domain's facts as data, without a service: the status table, the kinds of failure, the
listing's filters and prefix, the catalogue of API errors, signed cursors."""

from __future__ import annotations

import importlib.util
import re
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy.dialects import postgresql, sqlite

from api import cursors, errors
from common.files import labels, queries
from common.files.states import TRANSITIONS, sources
from common.models import Failure, FileStatus
from testkit.processes import ROOT

S = FileStatus


def test_deleted_is_final_and_every_status_can_be_deleted():
    assert TRANSITIONS[S.DELETED] == frozenset()
    assert set(sources(S.DELETED)) == set(FileStatus) - {S.DELETED}


def test_every_status_is_reachable_from_an_upload():
    reached, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(FileStatus)


def test_finished_files_move_only_to_deleted_and_failed_ones_back():
    assert TRANSITIONS[S.STORED] == TRANSITIONS[S.REJECTED] == {S.DELETED}
    assert S.PENDING in TRANSITIONS[S.FAILED]  # requeued
    assert S.STORED in TRANSITIONS[S.FAILED]  # a push that outlived its give-up
    assert set(sources(S.PROCESSING)) == {S.PENDING, S.PROCESSING}


def _migration(name: str):
    path = next((ROOT / "migrations" / "versions").glob(f"*_{name}.py"))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("failure", list(Failure))
def test_each_failure_has_a_message_and_old_messages_map_to_their_kind(failure):
    message = failure.describe("S3 unreachable")
    assert message and "{}" not in message
    # Migration 0011 gave failures recorded before the column existed their kind by message.
    pattern = _migration("failure_kinds").MESSAGES[failure.value]
    regex = re.escape(pattern).replace("%", ".*")
    assert re.fullmatch(regex, failure.describe(7))


SQLITE = sqlite.dialect()


def _sql(condition, dialect=SQLITE) -> str:
    return str(condition.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def test_the_name_prefix_is_literal_and_only_of_name_characters():
    assert _sql(queries.name_prefix("2026_a")) == "files.name LIKE '2026\\_a%' ESCAPE '\\'"
    assert _sql(queries.name_prefix("")) == "1"  # true
    for foreign in ("%", "A", "é", "a/b", "a b"):
        assert _sql(queries.name_prefix(foreign)) == "0"  # false


def test_contains_and_starts_with_take_wildcards_literally():
    from common.models import File

    assert _sql(queries.contains(File.search_name, "50%_off")) == (
        "files.search_name LIKE '%50\\%\\_off%' ESCAPE '\\'"
    )
    assert _sql(queries.starts_with(File.content_type, "image/")) == (
        "files.content_type LIKE 'image/%' ESCAPE '\\'"
    )


def test_live_files_are_those_not_deleted():
    assert _sql(queries.live_files()) == "files.status != 'deleted'"
    assert S.DELETED not in queries.LIVE_STATUSES
    assert set(queries.LIVE_STATUSES) == set(FileStatus) - {S.DELETED}


def test_filters_are_kept_in_normal_form_and_bound_as_given():
    moment = datetime(2026, 11, 30, tzinfo=UTC)
    filters = queries.Filters.normal(
        tags=["Работа", "работа", "A"],
        category="Отчёты",
        q="ОТЧЁТ",
        content_type="Image/*",
        uploaded_after=moment,
    )
    assert filters.tags == ["a", "работа"]
    assert filters.category == "отчёты"
    assert filters.q == "отчёт"
    assert filters.statuses == [s.value for s in queries.LIVE_STATUSES]
    assert filters.binding() == {
        "status": filters.statuses,
        "tag": ["a", "работа"],
        "category": "отчёты",
        "q": "отчёт",
        "content_type": "image/*",
        "uploaded_after": moment.isoformat(),
    }
    compiled = " AND ".join(_sql(c, postgresql.dialect()) for c in filters.conditions())
    assert "files.content_type LIKE 'image/%%'" in compiled


def test_a_bad_label_in_a_filter_is_refused():
    with pytest.raises(labels.InvalidLabel):
        queries.Filters.normal(tags=["no spaces allowed"])


CATALOGUE = {
    name: value for name, value in vars(errors).items() if isinstance(value, errors.Problem)
}


def test_the_catalogue_names_each_error_once_and_docs_list_every_code():
    assert len(CATALOGUE) >= 20
    pairs = [(p.code, p.message) for p in CATALOGUE.values()]
    assert len(pairs) == len(set(pairs))
    api_md = (ROOT / "docs" / "API.md").read_text()
    assert [p.code for p in CATALOGUE.values() if p.code not in api_md] == []


def test_a_problem_raised_by_name_carries_its_details_and_headers():
    raised = errors.VALIDATION_ERROR.at("original_name", "the extension must stay .pdf")
    assert (raised.http_status, raised.code, raised.message) == (
        400,
        "VALIDATION_ERROR",
        "Неверные данные",
    )
    assert raised.details == {"original_name": "the extension must stay .pdf"}
    challenged = errors.UNAUTHORIZED(headers={"WWW-Authenticate": "Bearer"})
    assert challenged.headers == {"WWW-Authenticate": "Bearer"} and challenged.http_status == 401


def test_a_cursor_comes_back_only_to_its_own_listing():
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "k" * 32
    binding = {"caller": 1, "sort": "-uploaded_at", "tag": ["a"]}
    with app.app_context():
        cursor = cursors.encode(["2026-11-30T00:00:00+00:00", 41], binding)
        assert cursors.decode(cursor, binding, 2) == ["2026-11-30T00:00:00+00:00", 41]
        for other in ({**binding, "caller": 2}, {**binding, "tag": ["b"]}):
            with pytest.raises(errors.ApiError) as refused:
                cursors.decode(cursor, other, 2)
            assert refused.value.code == "INVALID_CURSOR"
        with pytest.raises(errors.ApiError):
            cursors.decode(cursor[:-2] + "xx", binding, 2)


def test_a_file_changes_only_through_the_state_table():
    """A file's row is written by ``common.files.states`` (create, transition, change: each
    records its event) and, for its lease alone, by the worker renewing its claim."""
    writers = {}
    for path in sorted((ROOT / "common").rglob("*.py")) + sorted((ROOT / "api").rglob("*.py")):
        text = path.read_text()
        found = len(re.findall(r"update\(File\)|insert\(File\)|session\.add\(file\)", text))
        if found:
            writers[str(path.relative_to(ROOT))] = found
    assert writers == {"common/files/states.py": 5, "common/files/pipeline/ingest.py": 1}
    renewal = (ROOT / "common/files/pipeline/ingest.py").read_text()
    assert re.search(r"update\(File\)\s*\.where\([^)]*\)\s*\.values\(lease_until=", renewal)
