"""Kafka transport (CONTRACT §7): the LEDGER_KAFKA_* settings, the combinations
refused in one line, and the TLS and SASL configuration every client gets from
them: producers, the admin client, the API's probes and faust's worker.

The embedded broker (Tansu 0.6) cannot be used to test TLS or SASL for real:
its TLS listener closes every handshake ("early eof"), and with
``--authentication`` a memory-only broker refuses the very request that would
create a SCRAM user. So these tests check the client configuration that the
settings build, down to the objects aiokafka connects with."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from consent_ledger.cli import main
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.kafka import KafkaSecurity, kafka_security, make_producer
from consent_ledger.settings import Settings, SettingsError
from consent_ledger.worker.app import create_app, faust_credentials
from tests.transport import make_ca

pytestmark = pytest.mark.unit

BASE = {"LEDGER_KAFKA_BOOTSTRAP": "kafka-1:9093", "LEDGER_DATABASE_URL": "postgresql://db/ledger"}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text("correct horse battery\n")  # as `echo` or a secret mount writes it
    return path


def sasl_ssl(password_file: Path, ca_file: Path, mechanism: str = "SCRAM-SHA-512") -> Settings:
    return Settings.from_env(
        BASE
        | {
            "LEDGER_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "LEDGER_KAFKA_SASL_MECHANISM": mechanism.lower(),
            "LEDGER_KAFKA_SASL_USERNAME": "ledger-worker",
            "LEDGER_KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "LEDGER_KAFKA_CA_FILE": str(ca_file),
        }
    )


def trusted_subjects(context: ssl.SSLContext) -> set[str]:
    return {
        value
        for certificate in context.get_ca_certs()
        for rdn in certificate["subject"]  # type: ignore[union-attr]
        for key, value in rdn  # type: ignore[misc]
        if key == "commonName"
    }


def test_plaintext_by_default_and_nothing_else_is_sent() -> None:
    settings = Settings.from_env(BASE)
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_security(settings).client_options() == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(kafka_security(settings)) is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"LEDGER_KAFKA_SECURITY_PROTOCOL": "TLS"}, "is not one of PLAINTEXT, SSL"),
        (
            {"LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LEDGER_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "LEDGER_KAFKA_SASL_MECHANISM='GSSAPI' is not one of PLAIN, SCRAM-SHA-256",
        ),
        (
            {"LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LEDGER_KAFKA_SASL_MECHANISM": "PLAIN"},
            "SASL_SSL needs LEDGER_KAFKA_SASL_USERNAME, LEDGER_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {"LEDGER_KAFKA_SECURITY_PROTOCOL": "SSL", "LEDGER_KAFKA_SASL_USERNAME": "worker"},
            "LEDGER_KAFKA_SASL_USERNAME set, but LEDGER_KAFKA_SECURITY_PROTOCOL=SSL sends no "
            "credentials: use SASL_SSL",
        ),
        (
            {"LEDGER_KAFKA_SASL_MECHANISM": "PLAIN"},
            "PLAINTEXT sends no credentials: use SASL_SSL or SASL_PLAINTEXT",
        ),
        (
            {"LEDGER_KAFKA_CA_FILE": "/etc/kafka/ca.pem"},
            "LEDGER_KAFKA_CA_FILE set, but LEDGER_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS",
        ),
        (
            {
                "LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "LEDGER_KAFKA_SASL_MECHANISM": "PLAIN",
                "LEDGER_KAFKA_SASL_USERNAME": "worker",
                "LEDGER_KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka",
            },
            "would send the password unencrypted over SASL_PLAINTEXT",
        ),
    ],
)
def test_combinations_that_cannot_work_are_one_line_errors(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=r"^[^\n]+$") as refused:
        Settings.from_env(BASE | variables)
    assert message in str(refused.value)


async def test_sasl_ssl_with_scram_reaches_the_producer_with_the_ca_loaded(
    tmp_path: Path, password_file: Path
) -> None:
    ca = make_ca(tmp_path)
    settings = sasl_ssl(password_file, ca.ca_file)
    producer = make_producer(settings)
    client = producer.client  # what the producer connects with
    await producer.stop()

    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert client._sasl_plain_username == "ledger-worker"
    assert client._sasl_plain_password == "correct horse battery"  # the file, less its newline
    context = client._ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert trusted_subjects(context) == {"consent-ledger test CA"}
    assert "correct horse" not in repr(kafka_security(settings))  # kept out of logs


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_worker_hands_faust_the_same_transport(
    tmp_path: Path, password_file: Path, mechanism: str
) -> None:
    ca = make_ca(tmp_path)
    settings = sasl_ssl(password_file, ca.ca_file, mechanism)
    app, _ = create_app(settings, load_reference_policy())

    # faust turns its broker_credentials into aiokafka's options, with this
    # function, for every client it makes (its consumer, producer and admin).
    options = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert options == kafka_security(settings).client_options()
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_SSL", mechanism)
    assert options["sasl_plain_password"] == "correct horse battery"
    assert trusted_subjects(options["ssl_context"]) == {"consent-ledger test CA"}


def test_ssl_alone_and_scram_without_tls(tmp_path: Path, password_file: Path) -> None:
    ca = make_ca(tmp_path)
    tls = Settings.from_env(
        BASE | {"LEDGER_KAFKA_SECURITY_PROTOCOL": "SSL", "LEDGER_KAFKA_CA_FILE": str(ca.ca_file)}
    )
    options = kafka_security(tls).client_options()
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert trusted_subjects(options["ssl_context"]) == {"consent-ledger test CA"}
    assert credentials_to_aiokafka_auth(faust_credentials(kafka_security(tls))) == options

    scram = Settings.from_env(
        BASE
        | {
            "LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "LEDGER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "LEDGER_KAFKA_SASL_USERNAME": "worker",
            "LEDGER_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        }
    )
    security = kafka_security(scram)
    assert security == KafkaSecurity(
        "SASL_PLAINTEXT", "SCRAM-SHA-256", "worker", "correct horse battery", None
    )
    assert credentials_to_aiokafka_auth(faust_credentials(security)) == {
        **security.client_options(),
        "ssl_context": None,
    }


def test_unreadable_secrets_are_one_line_errors_before_anything_starts(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match=r"LEDGER_KAFKA_CA_FILE=.*cannot load it"):
        kafka_security(sasl_ssl(password_file, not_pem))
    with pytest.raises(SettingsError, match=r"LEDGER_KAFKA_SASL_PASSWORD_FILE=.*cannot read it"):
        kafka_security(sasl_ssl(tmp_path / "missing", make_ca(tmp_path).ca_file))

    events = tmp_path / "events.jsonl"
    events.write_text("")
    for name, value in (BASE | {
        "LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LEDGER_KAFKA_SASL_MECHANISM": "PLAIN",
        "LEDGER_KAFKA_SASL_USERNAME": "u", "LEDGER_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "no"),
    }).items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert main(["publish", str(events)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("consent-ledger publish: LEDGER_KAFKA_SASL_PASSWORD_FILE=")
