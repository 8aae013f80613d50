"""Prints how many requests each documented operation got in a fuzz.sh run, per phase, from
the NDJSON event reports schemathesis wrote (one per run). Requests with methods the document
does not list (schemathesis' 405 probes) are summed on one line.

Usage: fuzz_summary.py OPENAPI.yaml REPORT.ndjson...
"""

import collections
import json
import sys

import yaml

PHASES = ["examples", "coverage", "fuzzing", "stateful"]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def main(document, reports):
    doc = yaml.safe_load(open(document, encoding="utf-8"))
    documented = {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    counts = collections.defaultdict(collections.Counter)
    modes = collections.Counter()
    for path in reports:
        try:
            lines = open(path, encoding="utf-8").readlines()
        except OSError as error:
            print(f"  (no report {path}: {error})")
            continue
        for line in lines:
            finished = json.loads(line).get("ScenarioFinished")
            if not finished:
                continue
            for case in finished["recorder"].get("cases", {}).values():
                value = case["value"]
                label = f'{value["method"]} {value["path"]}'
                if label not in documented:
                    label = "other methods (405 checks)"
                counts[label][finished["phase"]] += 1
                modes[value.get("meta", {}).get("generation", {}).get("mode", "?")] += 1

    def row(label, counter):
        cells = "".join(f"{counter[phase]:>10}" for phase in PHASES)
        return f"  {label:<46}{cells}{sum(counter.values()):>10}"

    print("== requests per operation and phase")
    print(f'  {"operation":<46}' + "".join(f"{phase:>10}" for phase in PHASES) + f'{"total":>10}')
    for label in sorted(counts, key=lambda label: (label.startswith("other"), label)):
        print(row(label, counts[label]))
    total = collections.Counter()
    for counter in counts.values():
        total.update(counter)
    print(row("all", total))
    print("  by generation mode: " + ", ".join(f"{mode} {count}" for mode, count in sorted(modes.items())))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
