#!/usr/bin/env python3
"""Run every acceptance scenario through `consent-ledger check --json` and compare.

usage: check_scenarios.py CONSENT_LEDGER_COMMAND [SCENARIOS_DIR]

(SCENARIOS_DIR defaults to tests/data/scenarios; `make scenarios` runs it. A copy
of the shared checker, so that a clone of the repository needs nothing beside it.)

A scenario's policy is its policy.yaml, or its policies/ folder of versions.
Prints "all scenarios match", or one line per scenario that differs; exits 0
when all match, 1 otherwise. Compares open violations as (event_id, rule) pairs
and rejected input as (line, reason) pairs.
"""

import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    cli = sys.argv[1]
    root = (
        Path(sys.argv[2])
        if len(sys.argv) > 2
        else Path(__file__).resolve().parent.parent / "data" / "scenarios"
    )
    bad = []
    for d in sorted(p for p in root.iterdir() if (p / "expected.json").exists()):
        exp = json.loads((d / "expected.json").read_text())
        # A folder of policy versions (docs/CONTRACT.md §3) where the scenario has one.
        policy = d / "policies" if (d / "policies").is_dir() else d / "policy.yaml"
        cmd = [cli, "check", str(d / "events.jsonl"), "--policy", str(policy), "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        try:
            got = json.loads(r.stdout)
        except ValueError:
            bad.append(
                f"{d.name}: no JSON on stdout (exit {r.returncode}): {r.stderr.strip()[-300:]}"
            )
            continue
        gv = {(v["event_id"], v["rule"]) for v in got.get("violations", [])}
        ev = {(v["event_id"], v["rule"]) for v in exp["violations"]}
        gr = sorted((x.get("line"), x.get("reason")) for x in got.get("rejected", []))
        er = sorted((x["line"], x["reason"]) for x in exp["rejected"])
        want_exit = 1 if ev else 0
        if gv != ev or gr != er or r.returncode != want_exit:
            bad.append(
                f"{d.name}: {len(ev - gv)} violations missing, {len(gv - ev)} extra, "
                f"rejected {'differ' if gr != er else 'match'}, exit {r.returncode} (want {want_exit}); "
                f"e.g. missing {sorted(ev - gv)[:3]} extra {sorted(gv - ev)[:3]} "
                f"rejected diff {sorted(set(er) ^ set(gr))[:3]}"
            )
    print("\n".join(bad) if bad else "all scenarios match")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
