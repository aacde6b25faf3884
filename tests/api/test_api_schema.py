"""Schemathesis against the API's own OpenAPI schema, signed in as a party, on a real chain:
whatever it generates, valid or not (bounded: a few examples per operation), the API never answers 5xx.

The operations are driven through Hypothesis directly (`operation.as_strategy()`), not through
Schemathesis' pytest plugin, which does not run under pytest 9 (it reads `Function._nodeid`)."""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from api_fixtures import BANK

STREAM = "/v1/alarms/stream"
MAX_EXAMPLES = 8  # per operation and mode (valid / invalid data): bounded, the run stays around a minute


def test_no_operation_answers_a_server_error(api):
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.http.app)
    headers = api.token(BANK)
    # the alarm stream never ends by itself (tests/api/test_alarm_stream.py drives it over real HTTP)
    operations = [op for op in (result.ok() for result in schema.get_all_operations()) if op.path != STREAM]
    statuses: Counter[int] = Counter()
    assert len(operations) >= 20
    for operation, mode in [(op, mode) for op in operations for mode in GenerationMode]:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            statuses[case.call_and_validate(headers=headers, checks=[not_a_server_error]).status_code] += 1

        try:
            run()
        except Unsatisfiable:  # no invalid input exists for an operation without parameters
            assert mode is GenerationMode.NEGATIVE and not operation.query and not operation.path_parameters
    # the run reached past authentication and validation as well as being refused by them
    assert statuses[200] > 0 and statuses[422] > 0 and max(statuses) < 500, statuses
