"""Checks that schemathesis can load shared/openapi.yaml and generate requests from it.

No server is needed: every operation must load, yield positive and negative cases, and
every positive request body must validate against its own schema (a schema that
schemathesis reads differently from a JSON Schema validator would make fuzzing report
false failures). The links that drive the stateful phase must resolve too.
"""

import sys
import warnings

import jsonschema
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.reporting import with_reporter
from schemathesis.core import NOT_SET
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

CASES = 30


def main(path):
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    schema = schemathesis.openapi.from_path(path)
    failures = []
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            operations.append(result.ok())
        else:
            failures.append(f"operation does not load: {result.err()}")

    for op in operations:
        body_schema = None
        for body in op.body:
            if body.media_type == "application/json":
                body_schema = {"components": doc["components"], **body.raw_schema}
        validator = jsonschema.Draft202012Validator(body_schema) if body_schema else None
        # Nothing to make invalid without a body or parameters.
        mutable = bool(op.body or op.path_parameters or op.query or op.headers)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if mutable else (GenerationMode.POSITIVE,):

            @settings(
                max_examples=CASES,
                suppress_health_check=list(HealthCheck),
                deadline=None,
                database=None,
                print_blob=False,
            )
            @given(op.as_strategy(generation_mode=mode))
            def draw(case):
                if (
                    mode is GenerationMode.POSITIVE
                    and validator is not None
                    and case.media_type == "application/json"
                    and case.body is not NOT_SET  # join's body is optional
                ):
                    errors = list(validator.iter_errors(case.body))
                    if errors:
                        failures.append(f"{op.label}: generated body violates its schema: {errors[0].message[:200]}")

            try:
                # Hypothesis would print a reproduction seed for the expected Unsatisfiable.
                with warnings.catch_warnings(), with_reporter(lambda _: None):
                    warnings.simplefilter("ignore")
                    draw()
            except Unsatisfiable:
                # Only optional free-form strings (the preflight headers): nothing is invalid.
                if mode is GenerationMode.NEGATIVE:
                    continue
                failures.append(f"{op.label}: no valid request can be generated")
            except Exception as exc:
                failures.append(f"{op.label} ({mode.value}): cannot generate cases: {exc!r}"[:300])
                continue
        print(f"  {op.label}: ok")

    stats = schema.statistic
    print(f"== schemathesis: {stats.operations.total} operations, {stats.transitions.total} link transitions")
    if stats.transitions.total == 0:
        failures.append("no links: the stateful phase would have nothing to follow")
    try:
        schema.as_state_machine()
    except Exception as exc:
        failures.append(f"state machine does not build: {exc!r}")

    for failure in failures:
        print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
