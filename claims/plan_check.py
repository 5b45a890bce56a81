"""PROTOCOL.md section 14, pre-registration, checked again for claim 8 from the files alone: plan.json, store.json,
runs/*.json and report.html, read as JSON and text. It imports nothing from `benchmark`, so the claim does not
trust the code that wrote the plan, stamped the runs and listed the deviations.

A plan's sha256 is that of {"created_at", "plan"} as JSON with sorted keys and no spaces (UTF-8). A store follows
its plan when store.json names that plan; every stored run carries its hash and time and was made by the plan's
code version; every run's configuration, under each name it was declared by, has the planned content sha256 (the
configuration without name, role, tier and candidate, as canonical JSON); the declared run ids, the cohort hashes,
the settings and the test sets' cases are the planned ones; and the report's first screen says "pre-registered:
<hash>, <time>" with no deviation. A store without a plan says "not pre-registered" and holds no stamped run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

NOT_TRAINED = ("name", "role", "tier", "candidate")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def plan_sha256(plan_file: dict[str, Any]) -> str:
    """The sha256 a plan file's content gives, whatever it states."""
    return hashlib.sha256(_canonical({"created_at": plan_file["created_at"], "plan": plan_file["plan"]})).hexdigest()


def content_sha256(configuration: dict[str, Any]) -> str:
    """What a configuration trains, as the plan hashes it."""
    return hashlib.sha256(_canonical({k: v for k, v in configuration.items() if k not in NOT_TRAINED})).hexdigest()


def _first_screen_line(report_html: str) -> str:
    match = re.search(r'<span id="preregistration"[^>]*>(.*?)</span>', report_html, flags=re.S)
    return re.sub(r"<[^>]+>", "", match.group(1)).strip() if match else ""


def plan_problems(root: Path, report_html: str) -> list[str]:
    """Every way the store at `root` departs from its plan (or misstates having none), each named."""
    store = json.loads((root / "store.json").read_text(encoding="utf-8"))
    declared = set(store["run_ids"])
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((root / "runs").glob("*.json"))]
    runs = [r for r in runs if r["spec"]["run_id"] in declared]
    line = _first_screen_line(report_html)
    stamp = store.get("plan")
    if stamp is None:
        problems = [f"run {r['spec']['run_id']} carries plan {r['plan']['sha256'][:12]}... the store does not name"
                    for r in runs if r.get("plan")]
        if not line.startswith("not pre-registered"):
            problems.append(f"the store has no plan, but the report's first screen says {line!r}")
        return problems
    path = root / "plan.json"
    if not path.is_file():
        return [f"store.json names plan {stamp['sha256'][:12]}..., and {path} is missing"]
    plan_file = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    actual = plan_sha256(plan_file)
    if actual != plan_file["sha256"] or actual != stamp["sha256"]:
        problems.append(f"plan.json's content hashes to {actual[:12]}..., it states {plan_file['sha256'][:12]}..., "
                        f"store.json names {stamp['sha256'][:12]}...")
    if plan_file["created_at"] != stamp["created_at"]:
        problems.append(f"plan.json was written {plan_file['created_at']}, store.json says {stamp['created_at']}")
    plan = plan_file["plan"]
    planned = {c["name"]: c["content_sha256"] for c in plan["configurations"]}
    for run in runs:
        rid = run["spec"]["run_id"]
        if run.get("plan") != {"sha256": stamp["sha256"], "created_at": stamp["created_at"]}:
            problems.append(f"run {rid} was not made under the plan (its stamp: {run.get('plan')})")
        if run["code_version"] != plan["code_version"]:
            problems.append(f"run {rid} was made by code {run['code_version']}, the plan fixed {plan['code_version']}")
        trained = content_sha256(run["spec"]["configuration"])
        for declaration in run["spec"]["declarations"]:
            name = declaration["name"]
            if planned.get(name) != trained:
                problems.append(f"configuration {name} (run {rid}) trains content {trained[:12]}..., the plan "
                                f"fixed {str(planned.get(name))[:12]}...")
    if sorted(store["run_ids"]) != sorted(plan["run_ids"]):
        problems.append(f"the store declares {len(set(store['run_ids']) - set(plan['run_ids']))} run(s) the plan does "
                        f"not and lacks {len(set(plan['run_ids']) - set(store['run_ids']))} it does")
    cohort = {"source": store["data"].get("source", "collection"), "table_sha256": store["data"]["metadata_sha256"],
              "image_list_sha256": store["data"]["image_list_sha256"]}
    if cohort != plan["cohort"]:
        problems.append(f"the store's cohort {cohort} is not the planned {plan['cohort']}")
    if store["settings"] != plan["settings"]:
        keys = sorted(k for k in set(store["settings"]) | set(plan["settings"])
                      if store["settings"].get(k) != plan["settings"].get(k))
        problems.append(f"settings {keys} differ from the plan")
    cases = {t["name"]: t["cases_sha256"] for t in store.get("test_sets", [])}
    if cases != {t["name"]: t["cases_sha256"] for t in plan["test_sets"]}:
        problems.append(f"test sets {sorted(cases)} are not the planned {[t['name'] for t in plan['test_sets']]}")
    expected = f"pre-registered: {stamp['sha256']}, {stamp['created_at']}, no deviation."
    if problems and "deviation(s)" not in line:
        problems.append(f"the report's first screen says {line!r} and lists no deviation")
    elif not problems and line != expected:
        problems.append(f"the report's first screen says {line!r}, not {expected!r}")
    return problems
