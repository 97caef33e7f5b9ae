"""Both keys rotate while the service runs a stream (CONTRACT §7): worker and
API processes, events published before, during and after `keys rotate-master
--generate` and `keys rotate-signing`; `verify` passes before and after with
the keys the API lists, names the old key's checkpoints when given only the
new key, every subject's payload still opens, and the old master key, retired,
can leave the key file."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.integrity.checkpoints import generate_signing_key, key_id, save_signing_key
from tests.e2e.conftest import CLI, SCENARIOS, LedgerService
from tests.e2e.test_service import assert_exactly_expected, expected

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # about a minute: three publishes and rotations

EVENTS = SCENARIOS / "random-3000" / "events.jsonl"


def run(service: LedgerService, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *arguments], env=service.env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


async def latest_checkpoint_covers(service: LedgerService, entries: int, signer: str) -> bool:
    response = await service.client.get("/v1/ledger/checkpoints/latest")
    if response.status_code != 200:
        return False
    latest = response.json()["checkpoint"]
    covered = sum(head["size"] for head in latest["tree_heads"])
    return bool(latest["key_id"] == signer and covered >= entries)


async def test_both_keys_rotate_during_a_stream_and_verify_passes_before_and_after(
    kafka_bootstrap: str, database_url: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("rot")
    topics = {f"{prefix}.events": 4, f"{prefix}.rejected": 1, f"{prefix}.violations": 1,
              f"{prefix}.checkpoints": 1, f"{prefix}.checkpoints.history": 1}  # fmt: skip
    await ensure_topics(kafka_bootstrap, topics)
    master_keys = tmp_path / "master-keys"
    master_keys.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    master_keys.chmod(0o600)
    signing_key_file = tmp_path / "signing-key.pem"
    first_signer = generate_signing_key()
    save_signing_key(first_signer, signing_key_file)
    env = {
        name: value for name, value in os.environ.items() if name != "LEDGER_MASTER_KEY"
    } | {
        "LEDGER_KAFKA_BOOTSTRAP": kafka_bootstrap, "LEDGER_DATABASE_URL": database_url,
        "LEDGER_EVENTS_TOPIC": f"{prefix}.events", "LEDGER_REJECTED_TOPIC": f"{prefix}.rejected",
        "LEDGER_VIOLATIONS_TOPIC": f"{prefix}.violations",
        "LEDGER_CHECKPOINTS_TOPIC": f"{prefix}.checkpoints",
        "LEDGER_CHECKPOINT_HISTORY_TOPIC": f"{prefix}.checkpoints.history",
        "LEDGER_CONSUMER_GROUP": f"{prefix}-workers", "LEDGER_PARTITIONS": "4",
        "LEDGER_MASTER_KEY_FILE": str(master_keys),
        "LEDGER_SIGNING_KEY_FILE": str(signing_key_file),
        "LEDGER_CHECKPOINT_INTERVAL_S": "1", "LEDGER_KAFKA_IDEMPOTENCE": "false",
        "LEDGER_SESSION_TIMEOUT_S": "6",
        "LEDGER_FETCH_MAX_WAIT_MS": str(EmbeddedBroker.FETCH_MAX_WAIT_MS),
        "LEDGER_API_PORT": str(find_free_port()),
    }  # fmt: skip
    lines = [line for line in EVENTS.read_bytes().splitlines() if line.strip()]
    parts = [lines[:1000], lines[1000:2000], lines[2000:]]
    files = []
    for number, part in enumerate(parts):
        path = tmp_path / f"part-{number}.jsonl"
        path.write_bytes(b"\n".join(part) + b"\n")
        files.append(path)

    service = LedgerService(env, tmp_path)
    try:
        await service.start_api()
        service.start_worker()
        service.start_worker()
        assert service.publish(files[0]).returncode == 0
        first = await service.wait_counted(len(parts[0]))
        await service.wait_for(
            lambda: latest_checkpoint_covers(service, first["accepted"], key_id(first_signer)),
            "a checkpoint over the first part",
        )
        before = run(service, "verify")  # the configured key: the only one so far
        assert before.returncode == 0, before.stdout + before.stderr

        # The second part streams while both keys rotate.
        publishing = asyncio.create_task(asyncio.to_thread(service.publish, files[1]))
        master = await asyncio.to_thread(run, service, "keys", "rotate-master", "--generate",
                                         "--batch-size", "50")  # fmt: skip
        signing = await asyncio.to_thread(run, service, "keys", "rotate-signing")
        assert (await publishing).returncode == 0
        assert master.returncode == 0, master.stderr
        assert signing.returncode == 0, signing.stderr
        assert "retired" in master.stdout
        new_signer = signing.stdout.split()[2]
        assert new_signer != key_id(first_signer)

        assert service.publish(files[2]).returncode == 0
        stats = await service.wait_counted(len(lines))
        # Nothing lost to the rotation: exactly the scenario's counts, and its verdicts.
        want = expected("random-3000")
        await assert_exactly_expected(service, want, stats)
        await service.wait_for(
            lambda: latest_checkpoint_covers(service, stats["accepted"], new_signer),
            "a checkpoint over everything, signed by the new key",
        )

        listed = (await service.client.get("/v1/ledger/public-key")).json()
        assert [key["key_id"] for key in listed["keys"]] == [key_id(first_signer), new_signer]
        assert listed["key_id"] == new_signer and listed["keys"][1]["current"]
        assert all(key["first_signed"] and key["last_signed"] for key in listed["keys"])
        keys_json = tmp_path / "ledger-keys.json"
        keys_json.write_text((await service.client.get("/v1/ledger/public-key")).text)
        after = run(service, "verify", "--public-key", str(keys_json))
        assert after.returncode == 0, after.stdout + after.stderr
        new_public = tmp_path / "new-public-key.pem"
        new_public.write_text(listed["keys"][1]["public_key_pem"])
        only_new = run(service, "verify", "--public-key", str(new_public))
        assert only_new.returncode == 1
        assert f"signed by key {key_id(first_signer)}, which was not given" in only_new.stdout

        # Every subject key is wrapped by the new master key: the old one may go.
        master_keys.write_text(master_keys.read_text().splitlines()[-1] + "\n")
        subjects = {orjson.loads(line)["subject"] for line in lines[:40] + lines[-40:]}
        for subject in sorted(subjects):
            response = await service.client.get(f"/v1/subjects/{subject}/events")
            assert response.status_code in (200, 410), response.text  # 410: erased
            if response.status_code == 200:
                items = response.json()["items"]
                assert items and all(item["event"] is not None for item in items)
        listing = run(service, "keys", "list")
        assert listing.stdout.count("retired") == 1 and listing.stdout.count("in use") == 1
    except httpx.HTTPError:
        pytest.fail(f"the API failed:\n{service.logs()}")
    finally:
        await service.stop()
