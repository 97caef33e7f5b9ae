"""Policy versions published to the running service (CONTRACT §9), end to end:
two worker processes and the API, the scenario `policy-versions` published
under its first version alone, then `consent-ledger policy publish` of the
other two while the workers run; the open violations converge to what `check`
gives with the three versions present from the start (the other half of the
promise, versions present from the start, is test_service's scenario test)."""

from __future__ import annotations

import subprocess

import pytest

from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy_versions
from tests.e2e.conftest import CLI, SCENARIOS, LedgerService

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = SCENARIOS / "policy-versions"
FOLDER = SCENARIO / "policies"


def publish_policy(service: LedgerService, version: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "policy", "publish", str(FOLDER / f"v{version}.yaml"), "--publisher", "dpo"],
        env=service.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_versions_published_while_two_workers_run_converge_to_check(
    ledger_service: LedgerService,
) -> None:
    service = ledger_service
    service.env["LEDGER_POLICY"] = str(FOLDER / "v1.yaml")
    lines = [line for line in (SCENARIO / "events.jsonl").read_bytes().splitlines() if line]
    judged = OfflineLedger(load_policy_versions(FOLDER))
    judged.ingest_lines(lines)
    want = {v.key: v.policy_version for v in judged.open_violations()}
    under_v1 = OfflineLedger(load_policy_versions(FOLDER / "v1.yaml"))
    under_v1.ingest_lines(lines)
    assert {v.key for v in under_v1.open_violations()} != set(want)  # publishing matters

    service.start_worker()
    service.start_worker()
    published = service.publish(SCENARIO / "events.jsonl")
    assert published.returncode == 0, published.stderr
    for version in (2, 3):  # while the workers run
        result = publish_policy(service, version)
        assert result.returncode == 0, result.stderr
        assert f"published version {version}" in result.stdout
    await service.wait_counted(len(lines))

    async def converged() -> bool:
        listed = await service.pages("/v1/violations", status="open")
        return {(v["event_id"], v["rule"]): v["policy_version"] for v in listed} == want

    await service.wait_for(converged, "the open violations to converge to check's")
    versions = (await service.client.get("/v1/policy/versions")).json()["items"]
    assert [(v["version"], v["origin"], v["publisher"]) for v in versions] == [
        ("1", "configured", None),
        ("2", "published", "dpo"),
        ("3", "published", "dpo"),
    ]
    clash = publish_policy(service, 3)
    assert clash.returncode == 2 and "version" in clash.stderr
