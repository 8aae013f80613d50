"""Prints how many requests each operation got in a fuzz.sh run, per phase, from the NDJSON
event reports schemathesis wrote (one per run).

Usage: fuzz_summary.py REPORT.ndjson...
"""

import collections
import json
import sys


def main(paths):
    counts = collections.defaultdict(collections.Counter)
    modes = collections.Counter()
    for path in paths:
        try:
            lines = open(path, encoding="utf-8").readlines()
        except OSError as error:
            print(f"  (no report {path}: {error})")
            continue
        for line in lines:
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            phase = finished["phase"]
            for case in finished["recorder"].get("cases", {}).values():
                value = case["value"]
                counts[f'{value["method"]} {value["path"]}'][phase] += 1
                mode = value.get("meta", {}).get("generation", {}).get("mode", "?")
                modes[mode] += 1
    phases = ["examples", "coverage", "fuzzing", "stateful"]
    print("== requests per operation and phase")
    print(f'  {"operation":<46}' + "".join(f"{phase:>10}" for phase in phases) + f'{"total":>10}')
    for operation in sorted(counts):
        row = counts[operation]
        print(f"  {operation:<46}" + "".join(f"{row[phase]:>10}" for phase in phases) + f"{sum(row.values()):>10}")
    total = sum(sum(row.values()) for row in counts.values())
    print(f"  {'all':<46}" + "".join(f"{sum(row[p] for row in counts.values()):>10}" for p in phases) + f"{total:>10}")
    print("  by generation mode: " + ", ".join(f"{mode} {count}" for mode, count in sorted(modes.items())))


if __name__ == "__main__":
    main(sys.argv[1:])
