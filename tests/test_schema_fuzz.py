"""Schema fuzzing: schemathesis generates requests from /openapi.json against the running stack
(a real worker behind the app); no response may be a 500, and every response must match the
document (status code documented, body valid against its schema, JSON content type)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

EXAMPLES = 25
#: What a schema cannot say, so schema-valid data may still be refused: an upload's filename
#: must carry an allowed extension (415), and its bytes must be a well-formed multipart part.
CONTENT_RULES = {"POST /files/upload"}


def operations(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_conforms_to_the_document(app):
    checked = []
    for operation in operations(app):

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            excluded = [positive_data_acceptance] if case.operation.label in CONTENT_RULES else []
            response = case.call_and_validate(excluded_checks=excluded)
            assert response.status_code < 500

        run()
        checked.append(operation.label)
    assert len(checked) >= 9, checked
