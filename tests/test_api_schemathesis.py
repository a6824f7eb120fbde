"""Property-based robustness: schemathesis drives every operation of the OpenAPI spec; no 5xx allowed."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from citytwin.api.app import create_app
from citytwin.config import Settings
from citytwin.db import make_engine

EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def api_schema(demo_twin):
    url, data_dir = demo_twin
    engine = make_engine(url)
    app = create_app(Settings(database_url=url, data_dir=data_dir, tiles_dir=data_dir / "tiles"), engine=engine)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    engine.dispose()


def test_no_operation_answers_with_a_server_error(api_schema) -> None:
    failures: list[str] = []
    operations = 0
    statuses: list[int] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case) -> None:
            response = case.call()
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query or ''} -> "
                                f"{response.status_code}: {response.text[:200]}")

        exercise()
    assert operations >= 30  # every router is in the spec
    assert len(statuses) >= 3 * operations
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert not failures, "\n".join(sorted(set(failures))[:20])
