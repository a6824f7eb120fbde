"""Property-based robustness: schemathesis drives every operation of the OpenAPI spec; no 5xx allowed.

Two passes: every operation without a key (reads answer, writes are refused with 401), then every write
operation with a valid admin key, so that request bodies get past authentication and are fuzzed too.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from citytwin.api.auth import HEADER, create_key

EXAMPLES_PER_OPERATION = 15
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Starting a storm scenario queues a flood simulation in the background per accepted case: far too heavy
# to fuzz. tests/test_api_scenarios.py covers it (202, polling, results, bad input).
NOT_FUZZED_WITH_KEY = {("POST", "/api/scenarios")}


@pytest.fixture(scope="module")
def engine(demo_engine):
    return demo_engine


@pytest.fixture(scope="module")
def api_schema(demo_app):
    return schemathesis.openapi.from_asgi("/openapi.json", demo_app)


@pytest.fixture(scope="module")
def admin_key(engine) -> str:
    with engine.begin() as conn:
        return create_key(conn, "schemathesis", ["admin"])


def _exercise(operation, failures: list[str], statuses: list[int], headers: dict[str, str] | None = None) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def exercise(case) -> None:
        if headers:
            case.headers = {**(case.headers or {}), **headers}
        response = case.call()
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.query or ''} {str(case.body)[:200]} -> "
                            f"{response.status_code}: {response.text[:200]}")

    exercise()


def test_no_operation_answers_with_a_server_error(api_schema) -> None:
    failures: list[str] = []
    operations = 0
    statuses: list[int] = []
    for result in api_schema.get_all_operations():
        operations += 1
        _exercise(result.ok(), failures, statuses)
    assert operations >= 30  # every router is in the spec
    assert len(statuses) >= 3 * operations
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert not failures, "\n".join(sorted(set(failures))[:20])


def test_the_spec_declares_the_api_key(api_schema) -> None:
    spec = api_schema.raw_schema
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", HEADER)
    assert spec["paths"]["/api/od-events"]["post"]["security"] == [{"ApiKey": []}]
    assert "requestBody" in spec["paths"]["/api/od-events"]["post"]
    items = spec["paths"]["/ogc/collections/{collection_id}/items"]["get"]
    assert {"bbox", "bbox-crs", "limit", "datetime", "after"} <= {p["name"] for p in items["parameters"]}


def test_write_operations_with_a_valid_key_never_answer_5xx(api_schema, admin_key) -> None:
    failures: list[str] = []
    statuses: list[int] = []
    written = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() not in WRITE_METHODS or (operation.method.upper(), operation.path) in \
                NOT_FUZZED_WITH_KEY:
            continue
        written += 1
        _exercise(operation, failures, statuses, headers={HEADER: admin_key})
    assert written >= 8
    # With the key, requests get past authentication: the bodies themselves are judged (400/404/422 naming
    # what is wrong; random URLs, meters and ids rarely exist), never 401/403.
    assert statuses and not {401, 403} & set(statuses)
    assert any(s in (400, 404) for s in statuses)  # past the body model, into the domain checks
    assert not failures, "\n".join(sorted(set(failures))[:20])
