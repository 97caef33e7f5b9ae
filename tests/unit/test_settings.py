"""Settings come from LEDGER_* variables, read once; a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ledger.settings import Settings, SettingsError

pytestmark = pytest.mark.unit


def test_defaults_without_any_variable() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.kafka_bootstrap is None and settings.database_url is None
    assert settings.events_topic == "ledger.events"
    assert settings.fetch_max_wait_ms == 500  # Kafka's own default: it answers on arrival
    assert settings.kafka_idempotence is None  # on, unless dev turns it off


def test_each_kind_of_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "LEDGER_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
            "LEDGER_API_PORT": "9000",
            "LEDGER_SESSION_TIMEOUT_S": "6.5",
            "LEDGER_FETCH_MAX_WAIT_MS": "50",
            "LEDGER_KAFKA_IDEMPOTENCE": "false",
            "LEDGER_INTEGRITY": "yes",
            "LEDGER_POLICY": "/etc/ledger/policy.yaml",  # CONTRACT §5's spelling
            "LEDGER_DATA_DIR": "",  # empty counts as unset
            "UNRELATED": "ignored",
        }
    )
    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.api_port == 9000
    assert settings.session_timeout_s == 6.5
    assert settings.fetch_max_wait_ms == 50
    assert settings.kafka_idempotence is False
    assert settings.integrity is True
    assert settings.policy_path == Path("/etc/ledger/policy.yaml")
    assert settings.data_dir == Path(".ledger-data")


def test_the_field_name_wins_over_the_contract_alias() -> None:
    settings = Settings.from_env({"LEDGER_POLICY": "a.yaml", "LEDGER_POLICY_PATH": "b.yaml"})
    assert settings.policy_path == Path("b.yaml")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEDGER_API_PORT", "eighty"),
        ("LEDGER_FETCH_MAX_WAIT_MS", "0.5"),
        ("LEDGER_KAFKA_IDEMPOTENCE", "maybe"),
        ("LEDGER_SESSION_TIMEOUT_S", "soon"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable}='{value}' is not a valid"):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(
    "url", ["nonsense", "mysql://db/ledger", "postgresql://db:port/ledger", "postgresql://[::1/x"]
)
def test_a_database_url_the_driver_cannot_parse_is_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(SettingsError, match="LEDGER_DATABASE_URL"):
        Settings.from_env({"LEDGER_DATABASE_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ledger:secret@db:5432/consent_ledger?sslmode=require",
        "postgres://db/ledger",
        "postgresql://postgres:@/consent_ledger?host=/data/postgres",  # the embedded server's
    ],
)
def test_postgresql_urls_are_accepted(url: str) -> None:
    assert Settings.from_env({"LEDGER_DATABASE_URL": url}).database_url == url
