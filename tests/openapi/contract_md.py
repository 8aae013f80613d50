"""Reads the prose contract, shared/API.md, into the facts the OpenAPI document must match.

The contract is written for people, so this reads only what it states in fixed forms:
- route headings: `### Title — `METHOD /v1/path`` with ` (Bearer)` right after a route that
  needs the peer's token (several routes may share a heading);
- the status codes a route section names in backticks (`201 Created`, `404`, ...);
- the conventions table of problem codes: `| 409 | `room-full` | ... |`.
"""

import re
from dataclasses import dataclass, field

ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/v1/[^`?\s]+)[^`]*`( \(Bearer\))?")
STATUS = re.compile(r"`([1-5]\d\d)(?: [A-Za-z][A-Za-z ]*)?`")
CODE_ROW = re.compile(r"^\s*\|\s*([1-5]\d\d)\s*\|\s*`([a-z-]+)`\s*\|")


@dataclass
class Section:
    """One `###` section that names routes: the routes, which need a token, its statuses."""

    title: str
    routes: list = field(default_factory=list)  # [(path, method)], method lower case
    bearer: set = field(default_factory=set)  # the (path, method) pairs marked (Bearer)
    statuses: set = field(default_factory=set)  # every status code the section names


@dataclass
class Contract:
    sections: list
    codes: dict  # status ("409") -> problem code ("room-full")

    @property
    def routes(self):
        return {route for section in self.sections for route in section.routes}

    @property
    def bearer(self):
        return {route for section in self.sections for route in section.bearer}


def read_contract(path):
    sections, codes, current = [], {}, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            current = None
            if line.startswith("### "):
                routes = ROUTE.findall(line)
                if routes:
                    current = Section(title=line[4:].strip())
                    for method, route, bearer in routes:
                        current.routes.append((route, method.lower()))
                        if bearer:
                            current.bearer.add((route, method.lower()))
                    sections.append(current)
            continue
        row = CODE_ROW.match(line)
        if row:
            codes[row.group(1)] = row.group(2)
        if current is not None:
            current.statuses.update(STATUS.findall(line))
    return Contract(sections=sections, codes=codes)
