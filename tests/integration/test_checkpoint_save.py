"""``consent-ledger checkpoint save`` against a real local HTTP server playing the API.

The server answers what the API answers (a stored checkpoint, 404 before the
first one, 401 without a token); the command must keep only a checkpoint
whose signature holds under the pinned key, never replace a kept file, and
send ``LEDGER_TOKEN`` as a bearer token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from consent_ledger.cli import main
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.integrity.checkpoints import (
    Checkpoint,
    TreeHead,
    generate_signing_key,
    public_key_pem,
    sign_checkpoint,
)
from consent_ledger.integrity.merkle import EMPTY_ROOT
from consent_ledger.integrity.trust import parse_trusted_checkpoint

pytestmark = [pytest.mark.integration]

KEY = generate_signing_key()
CHECKPOINT = Checkpoint(
    "consent-ledger/test", datetime(2026, 3, 1, 8, tzinfo=UTC), (TreeHead(0, 0, EMPTY_ROOT),)
)


@dataclass
class FakeApi:
    url: str
    status: int = 200
    body: bytes = b""
    authorizations: list[str | None] = field(default_factory=list)


@contextmanager
def api() -> Iterator[FakeApi]:
    port = find_free_port()
    answer = FakeApi(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert self.path == "/v1/ledger/checkpoints/latest"
            answer.authorizations.append(self.headers.get("Authorization"))
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def public_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LEDGER_TOKEN", "LEDGER_API_URL", "LEDGER_PUBLIC_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "ledger.pub"
    path.write_text(public_key_pem(KEY))
    return path


def save(api_url: str, target: Path, public_key: Path) -> int:
    return main(
        ["checkpoint", "save", str(target), "--api", api_url, "--public-key", str(public_key)]
    )


def stored(signed_by: object = KEY, number: int = 7) -> bytes:
    signed = sign_checkpoint(CHECKPOINT, signed_by)  # type: ignore[arg-type]
    return orjson.dumps({"id": number, "checkpoint": signed.to_json_dict()})


def test_a_checkpoint_that_verifies_is_kept_once_with_the_token_sent(
    public_key: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LEDGER_TOKEN", "s3cret")
    target = tmp_path / "kept" / "2026-03-01.json"
    target.parent.mkdir()
    with api() as fake:
        fake.body = stored()
        assert save(fake.url, target, public_key) == 0
        assert capsys.readouterr().out.startswith(
            f"saved checkpoint 7 of log 'consent-ledger/test' to {target}"
        )
        kept = parse_trusted_checkpoint(target.read_bytes(), str(target))
        assert kept.stored_id == 7 and kept.signed == sign_checkpoint(CHECKPOINT, KEY)
        assert target.read_bytes().endswith(b"}\n")
        assert list(target.parent.iterdir()) == [target]  # no temporary file left

        fake.body = stored(number=8)
        assert save(fake.url, target, public_key) == 2
        assert "never replaced" in capsys.readouterr().err
        assert parse_trusted_checkpoint(target.read_bytes(), "").stored_id == 7
    assert fake.authorizations == ["Bearer s3cret"]  # the second run asked nothing


def test_a_checkpoint_signed_by_another_key_is_not_kept(
    public_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "kept.json"
    with api() as fake:
        fake.body = stored(signed_by=generate_signing_key())
        assert save(fake.url, target, public_key) == 1
        assert capsys.readouterr().out.startswith("NOT SAVED: the checkpoint names signing key ")
        document = orjson.loads(stored())
        document["checkpoint"]["issued_at"] = "2026-03-01T09:00:00.000000Z"
        fake.body = orjson.dumps(document)
        assert save(fake.url, target, public_key) == 1
        assert "forged or altered" in capsys.readouterr().out
    assert not target.exists()
    assert fake.authorizations == [None, None]


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (404, b'{"error": {"code": "no-checkpoint", "message": "no checkpoint has been signed yet"}}',
         "answered 404: no checkpoint has been signed yet"),
        (401, b'{"error": {"code": "unauthenticated", "message": "a bearer token is required"}}',
         "set LEDGER_TOKEN to a token with the auditor role"),
        (200, b'{"items": []}', "is not a signed checkpoint"),
    ],
)  # fmt: skip
def test_an_answer_that_is_no_checkpoint_is_a_usage_error(
    public_key: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: bytes,
    words: str,
) -> None:
    with api() as fake:
        fake.status, fake.body = status, body
        assert save(fake.url, tmp_path / "kept.json", public_key) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "kept.json").exists()


def test_an_api_that_does_not_answer_is_a_usage_error(
    public_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{find_free_port()}"
    assert save(url, tmp_path / "kept.json", public_key) == 2
    assert f"cannot reach {url}/v1/ledger/checkpoints/latest" in capsys.readouterr().err
