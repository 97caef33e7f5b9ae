"""The webhooks file, the signature a receiver checks, the retry schedule, and
what of a URL may be shown (consent_ledger/webhooks.py)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from consent_ledger.webhooks import (
    WebhooksError,
    load_webhooks,
    parse_webhooks,
    public_label,
    retry_delay,
    signature,
    signed_headers,
)

pytestmark = [pytest.mark.unit]


def no_files(key: str, name: str) -> bytes:
    raise AssertionError(f"read {name} for {key}")


def parsed(*hooks: dict[str, Any]) -> Any:
    return parse_webhooks({"webhooks": list(hooks)}, "hooks.yaml", no_files)


def test_a_receiver_verifies_the_signature_as_the_guide_shows() -> None:
    body, secret = b'{"type":"ViolationOpened"}', b"s3cret"
    headers = signed_headers(secret, body, "d-1", 1_700_000_000.9)
    # The receiver's check, as README and deploy/README.md print it.
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["X-Ledger-Signature"])
    assert headers["X-Ledger-Timestamp"] == "1700000000"
    assert headers["X-Ledger-Delivery"] == "d-1"
    # RFC 4231-style known answer: nothing but the body is signed.
    assert signature(b"key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_filters_take_the_alerts_they_name() -> None:
    (every, critical, withdrawn) = parsed(
        {"url": "https://a.example/hook", "secret": "x"},
        {"url": "https://b.example/hook", "secret": "x", "severity": "critical"},
        {"url": "https://c.example/hook", "secret": "x", "rule": ["consent-withdrawn"]},
    )
    missing = {"violation": {"rule": "consent-missing", "severity": "high"}}
    gone = {"violation": {"rule": "consent-withdrawn", "severity": "critical"}}
    assert [every.takes(missing), critical.takes(missing), withdrawn.takes(missing)] == [
        True, False, False,
    ]  # fmt: skip
    assert [every.takes(gone), critical.takes(gone), withdrawn.takes(gone)] == [True, True, True]
    assert not every.takes({"type": "not an alert"})


@pytest.mark.parametrize(
    ("document", "key", "problem"),
    [
        ([], "", "must be a mapping with one key, webhooks"),
        ({"webhooks": {}}, "webhooks", "must be a list"),
        ({"webhooks": [{"url": "ftp://x/", "secret": "s"}]}, "webhooks[0].url", "'ftp://...'"),
        ({"webhooks": [{"secret": "s"}]}, "webhooks[0].url", "missing is not an http"),
        ({"webhooks": [{"url": "http://x:port/", "secret": "s"}]}, "webhooks[0].url", "not an"),
        ({"webhooks": [{"url": "http://x/"}]}, "webhooks[0]", "exactly one of secret_file"),
        (
            {"webhooks": [{"url": "http://x/", "secret": "s", "secret_file": "f"}]},
            "webhooks[0]", "exactly one",
        ),
        ({"webhooks": [{"url": "http://x/", "secret": ""}]}, "webhooks[0]", "the secret is empty"),
        ({"webhooks": [{"url": "http://x/", "secret": 5}]}, "webhooks[0].secret", "a string"),
        (
            {"webhooks": [{"url": "http://x/", "secret": "s", "rule": ["consent-misssing"]}]},
            "webhooks[0].rule", "'consent-misssing' is not one of",
        ),
        (
            {"webhooks": [{"url": "http://x/", "secret": "s", "severity": []}]},
            "webhooks[0].severity", "non-empty list",
        ),
        (
            {"webhooks": [{"url": "http://x/", "secret": "s", "retries": 3}]},
            "webhooks[0].retries", "unknown key",
        ),
        (
            {"webhooks": [{"url": "http://u:p@x/", "secret": "s"}, {"url": "http://u:p@x/", "secret": "t"}]},
            "webhooks[1].url", "'http://x/' is named twice",
        ),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_key_and_the_problem(
    document: Any, key: str, problem: str
) -> None:
    with pytest.raises(WebhooksError) as refused:
        parse_webhooks(document, "hooks.yaml", no_files)
    assert refused.value.key == key
    assert problem in refused.value.problem
    assert str(refused.value).startswith(f"hooks.yaml: {key}: " if key else "hooks.yaml: ")
    assert "u:p" not in str(refused.value)


def test_the_file_reads_secret_files_beside_it_and_shows_no_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"from-a-file\n")
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(
        "webhooks:\n"
        "  - url: https://user:pw@alerts.example:8443/ledger?token=t0k#x\n"
        "    secret_file: secret\n"
        "  - {url: 'http://127.0.0.1:9/hook', secret: inline, name: pager}\n"
    )
    first, second = load_webhooks(hooks)
    assert (first.secret, second.secret) == (b"from-a-file", b"inline")
    assert (first.name, second.name) == ("https://alerts.example:8443/...", "pager")
    assert "from-a-file" not in repr(first) and "pw" not in repr(first)

    (tmp_path / "missing.yaml").write_text("webhooks: [{url: 'http://x/', secret_file: nope}]")
    with pytest.raises(WebhooksError, match=r"webhooks\[0\].secret_file: cannot read nope"):
        load_webhooks(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("webhooks: [")
    with pytest.raises(WebhooksError, match="not YAML or JSON"):
        load_webhooks(tmp_path / "broken.yaml")


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    low = [retry_delay(n, 5.0, 3_600.0, lambda: 0.0) for n in range(1, 12)]
    high = [retry_delay(n, 5.0, 3_600.0, lambda: 1.0) for n in range(1, 12)]
    assert low[:4] == [2.5, 5.0, 10.0, 20.0]  # half fixed ...
    assert high[:4] == [5.0, 10.0, 20.0, 40.0]  # ... half drawn
    assert max(high) == 3_600.0 and high[-1] == 3_600.0
    assert retry_delay(10_000, 5.0, 3_600.0, lambda: 0.5) == 2_700.0


def test_a_label_drops_credentials_path_query_and_fragment() -> None:
    assert public_label("https://u:p@h.example/a/b?k=v#f") == "https://h.example/..."
    assert public_label("http://[::1]:8080/x") == "http://[::1]:8080/..."
    assert public_label("https://h.example/") == "https://h.example/"
    assert public_label("https://h.example") == "https://h.example"
    # Slack's and Discord's incoming webhooks: the credential is the path.
    slack = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert public_label(slack) == "https://hooks.slack.com/..."
    assert "XXXX" not in repr(
        parse_webhooks({"webhooks": [{"url": slack, "secret": "s"}]}, "f", no_files)
    )


def test_hooks_shown_alike_need_a_name_each() -> None:
    two = [
        {"url": "http://h.example/a", "secret": "s"},
        {"url": "http://h.example/b", "secret": "t"},
    ]
    with pytest.raises(
        WebhooksError,
        match=r"webhooks\[1\]\.name: 'http://h.example/...' is named twice .*give hooks that share them a name each",
    ):
        parse_webhooks({"webhooks": two}, "hooks.yaml", no_files)
    named = [dict(two[0], name="a"), dict(two[1], name="b")]
    assert [hook.name for hook in parse_webhooks({"webhooks": named}, "hooks.yaml", no_files)] == [
        "a",
        "b",
    ]


def test_the_worker_and_dev_refuse_a_bad_file_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from consent_ledger import cli
    from consent_ledger.settings import Settings
    from consent_ledger.worker.app import WorkerNotReady, configured_webhooks

    hooks = tmp_path / "hooks.yaml"
    hooks.write_text("webhooks:\n  - {url: 'https://x.example/', secret: s, severity: urgent}\n")
    with pytest.raises(
        WorkerNotReady, match=r"LEDGER_WEBHOOKS: .*webhooks\[0\].severity: 'urgent'"
    ):
        configured_webhooks(Settings(webhooks=hooks))
    assert configured_webhooks(Settings()) == ()

    monkeypatch.setenv("LEDGER_WEBHOOKS", str(hooks))
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["dev"]) == 2
    assert "webhooks[0].severity: 'urgent' is not one of" in capsys.readouterr().err


def test_dev_hands_the_file_to_its_workers(tmp_path: Path) -> None:
    from consent_ledger.devtools.dev import _child_env
    from consent_ledger.settings import Settings

    hooks = tmp_path / "hooks.yaml"
    assert _child_env(Settings(webhooks=hooks))["LEDGER_WEBHOOKS"] == str(hooks)
