#!/usr/bin/env python3
"""Prints the yes/no questions `sam deploy --guided` will ask about infra/template.yaml's routes.

    python3 infra/guided_questions.py     # with aws-sam-cli installed (pip install aws-sam-cli)

Runs SAM CLI's own check (the one its guided deploy calls) offline: every HttpApi route
without an authorizer gets "<Function> has no authentication. Is this okay? [y/N]", whose
default N aborts the deploy. No AWS call is made.
"""

import os
from pathlib import Path

os.environ.setdefault("SAM_CLI_TELEMETRY", "0")
from samcli.commands.deploy.auth_utils import auth_per_resource  # noqa: E402
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider  # noqa: E402

template = Path(__file__).resolve().parent / "template.yaml"
stacks, _ = SamLocalStackProvider.get_stacks(str(template), parameter_overrides={},
                                            global_parameter_overrides={"AWS::Region": "us-east-1"})
questions = [f"{resource} has no authentication. Is this okay? [y/N]"
             for resource, authorized in auth_per_resource(stacks) if not authorized]
print("\n".join(questions))
print(f"{len(questions)} questions: answer y to each")
