#!/usr/bin/env python3
"""Checks the Grafana dashboard deploy/observability/grafana/ridesaga.json (scripts/check-observability).

Usage: check_dashboard.py DASHBOARD [--metrics FILE ...] [--prometheus URL]

Always: the file is well-formed JSON with a title and uid; every panel has a unique id, sits
inside the 24-column grid without overlapping another, and every panel but a row has a data
source and at least one target whose expression names at least one metric; every template
variable's query names a metric too.
--metrics FILE ...: every metric an expression names (but `up`, which Prometheus makes) is a
  series of those /metrics texts (histograms by their _bucket, _sum and _count series).
--prometheus URL: every expression, with the dashboard's variables given values, is accepted
  by that server's query API, and every metric it names has series of job ridesaga-workers
  there.
Prints one line per problem; exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

METRIC = re.compile(r"\b(ridesaga_[a-z0-9_]+|up)\b")
# The dashboard's variables, as the checks query with them.
VARIABLES = {
    "$__rate_interval": "1m",
    '"$service"': '".+"',
    "${datasource}": "prometheus",
}
JOB = "ridesaga-workers"


def panels_of(panels: list[Any]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from panels_of(panel.get("panels", []))


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and template variable query."""
    for panel in panels_of(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target.get('refId')}", target.get("expr", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            yield f"variable {variable.get('name')!r}", text


def check_static(dashboard: Any) -> list[str]:
    problems = []
    if not isinstance(dashboard, dict):
        return ["the dashboard is not a JSON object"]
    for key in ("title", "uid"):
        if not dashboard.get(key):
            problems.append(f"no {key}")
    seen_ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    for panel in panels_of(dashboard.get("panels", [])):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if not isinstance(pid, int) or pid in seen_ids:
            problems.append(f"panel {title!r}: id {pid!r} missing or not unique")
        seen_ids.add(pid)
        grid = panel.get("gridPos", {})
        x, y, w, h = (grid.get(k) for k in ("x", "y", "w", "h"))
        if not all(isinstance(v, int) for v in (x, y, w, h)) or x < 0 or w < 1 or h < 1 or x + w > 24:
            problems.append(f"panel {title!r}: gridPos {grid} is outside the 24-column grid")
            continue
        for cx in range(x, x + w):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    problems.append(f"panel {title!r} overlaps {cells[(cx, cy)]!r}")
                    break
                cells[(cx, cy)] = title
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        if not panel.get("datasource"):
            problems.append(f"panel {title!r}: no data source")
        if not panel.get("targets"):
            problems.append(f"panel {title!r}: no targets")
    for where, expr in expressions(dashboard):
        if not expr.strip():
            problems.append(f"{where}: empty expression")
        elif not METRIC.search(expr):
            problems.append(f"{where}: names no Ridesaga metric: {expr}")
    return problems


def exposed_series(files: list[Path]) -> set[str]:
    names = set()
    for file in files:
        for line in file.read_text().splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def check_metrics(dashboard: dict[str, Any], files: list[Path]) -> list[str]:
    exposed = exposed_series(files)
    problems = []
    for where, expr in expressions(dashboard):
        for name in set(METRIC.findall(expr)) - {"up"}:
            if name not in exposed:
                problems.append(f"{where}: {name} is not exposed by any worker's /metrics")
    return problems


def query(url: str, promql: str) -> dict[str, Any]:
    address = f"{url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:  # 400: the server refused the expression
        return json.load(e)


def with_values(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def check_prometheus(dashboard: dict[str, Any], url: str) -> list[str]:
    problems = []
    names: set[str] = set()
    for where, expr in expressions(dashboard):
        names |= set(METRIC.findall(expr))
        if where.startswith("variable"):
            continue  # label_values() is Grafana's, not PromQL
        answer = query(url, with_values(expr))
        if answer.get("status") != "success":
            problems.append(f"{where}: Prometheus refused it ({answer.get('error')}): {expr}")
    for name in sorted(names):
        answer = query(url, f'count({{__name__="{name}",job="{JOB}"}})')
        if answer.get("status") != "success" or not answer["data"]["result"]:
            problems.append(f"{name}: no series of job {JOB} in Prometheus")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard", type=Path)
    parser.add_argument("--metrics", type=Path, nargs="*", default=[])
    parser.add_argument("--prometheus")
    args = parser.parse_args()
    try:
        dashboard = json.loads(args.dashboard.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"{args.dashboard}: {e}")
        return 1
    problems = check_static(dashboard)
    if not problems and args.metrics:
        problems += check_metrics(dashboard, args.metrics)
    if not problems and args.prometheus:
        problems += check_prometheus(dashboard, args.prometheus)
    for problem in problems:
        print(f"{args.dashboard}: {problem}")
    if not problems:
        count = sum(1 for _ in expressions(dashboard))
        checks = "well-formed" + (", metrics exposed" if args.metrics else "")
        checks += ", answered by Prometheus" if args.prometheus else ""
        print(f"{args.dashboard}: {count} expressions ({checks})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
