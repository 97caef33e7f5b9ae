"""``consent-ledger check`` (CONTRACT §5): exit status, the JSON document, the summary."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import consent_ledger
from consent_ledger import cli

pytestmark = pytest.mark.unit

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"


@pytest.fixture(autouse=True)
def _keep_the_garbage_collector() -> Iterator[None]:
    """``check`` switches the cyclic collector off for speed; the test process keeps it on."""
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()


def event(
    event_id: str, event_type: str, data: dict[str, Any], **attributes: Any
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:system:test",
        "type": event_type,
        "subject": attributes.pop("subject", "ola"),
        "time": attributes.pop("time", "2026-03-01T08:00:00Z"),
        "data": data,
        **attributes,
    }


def shared(
    event_id: str,
    purpose: str = "delivery",
    kind: str = "group_company",
    recipient: str = "visma-spcs-ab",
    **attributes: Any,
) -> dict[str, Any]:
    return event(
        event_id,
        "DataShared",
        {
            "purpose": purpose,
            "subject_role": "customer_contact",
            "controller": "visma-software-as",
            "recipient": {"kind": kind, "id": recipient},
            "data_categories": ["contact_details"],
        },
        **attributes,
    )


CLEAN = [
    event(
        "c-1",
        "ConsentGiven",
        {"purpose": "marketing", "subject_role": "user", "controller": "visma-software-as"},
    ),
    shared("c-2", time="2026-03-01T09:00:00Z"),
    event("c-3", "VisitorRegistered", {"site": "oslo", "rights_notice": "v3"}, subject="guest"),
]


def write_lines(path: Path, lines: list[Any]) -> Path:
    """Write events (dicts) or raw lines (str) as JSON Lines."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def check_json(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any]:
    status, out, _ = run(["check", str(path), "--json", *extra], capsys)
    return status, json.loads(out)


# -- exit status ---------------------------------------------------------------


def test_a_clean_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, document = check_json(write_lines(tmp_path / "clean.jsonl", CLEAN), capsys)
    assert status == 0
    assert document["violations"] == []
    assert document["counts"] == {"accepted": 3, "duplicates": 0, "rejected": 0, "violations": 0}


def test_an_empty_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    status, document = check_json(path, capsys)
    assert status == 0
    assert document == {
        "violations": [],
        "rejected": [],
        "counts": {"accepted": 0, "duplicates": 0, "rejected": 0, "violations": 0},
    }


def test_rejected_lines_alone_do_not_fail_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [*CLEAN, "not json", "[]"])
    status, document = check_json(path, capsys)
    assert status == 0
    assert document["counts"]["rejected"] == 2


def test_open_violations_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [*CLEAN, shared("v-1", purpose="profiling")])
    assert run(["check", str(path)], capsys)[0] == 1
    assert run(["check", str(path), "--json"], capsys)[0] == 1


def test_a_missing_events_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.jsonl"
    status, out, err = run(["check", str(missing)], capsys)
    assert status == 2
    assert out == ""
    assert str(missing) in err


def test_a_folder_as_events_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["check", str(tmp_path), "--json"], capsys)
    assert status == 2
    assert str(tmp_path) in err


def test_a_missing_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write_lines(tmp_path / "e.jsonl", CLEAN)
    policy = tmp_path / "policy.yaml"
    status, out, err = run(["check", str(events), "--policy", str(policy)], capsys)
    assert status == 2
    assert out == ""
    assert str(policy) in err


def test_an_unreadable_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write_lines(tmp_path / "e.jsonl", CLEAN)
    status, _, err = run(["check", str(events), "--policy", str(tmp_path)], capsys)
    assert status == 2
    assert str(tmp_path) in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_a_policy_without_read_permission_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_lines(tmp_path / "e.jsonl", CLEAN)
    policy = tmp_path / "policy.yaml"
    policy.write_text((SCENARIOS / "policy.yaml").read_text("utf-8"), encoding="utf-8")
    policy.chmod(0)
    try:
        assert run(["check", str(events), "--policy", str(policy)], capsys)[0] == 2
    finally:
        policy.chmod(0o600)


@pytest.mark.parametrize(
    ("policy_text", "mentioned"),
    [
        ("purposes: {delivery: [\n", "not valid YAML"),
        ("", "empty"),
        (
            "purposes:\n  delivery: {clause: c, basis: consnet, roles: [user]}\n",
            "purposes.delivery.basis",
        ),
        (
            "purposes: {}\nrecipients:\n  partner:\n    certifed: [x]\n",
            "recipients.partner.certifed",
        ),
    ],
)
def test_a_bad_policy_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy_text: str, mentioned: str
) -> None:
    events = write_lines(tmp_path / "e.jsonl", CLEAN)
    policy = tmp_path / "bad-policy.yaml"
    policy.write_text(policy_text, encoding="utf-8")
    status, out, err = run(["check", str(events), "--policy", str(policy), "--json"], capsys)
    assert status == 2
    assert out == ""
    assert str(policy) in err
    assert mentioned in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["check", "events.jsonl", "--bogus"], id="unknown flag"),
        pytest.param(["check"], id="no file"),
        pytest.param(["check", "a.jsonl", "b.jsonl"], id="two files"),
        pytest.param(["check", "events.jsonl", "--policy"], id="flag without value"),
        pytest.param([], id="no command"),
        pytest.param(["judge", "events.jsonl"], id="unknown command"),
        pytest.param(["check", "events.jsonl", "--jsn"], id="misspelt flag"),
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["check", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--policy" in out
    assert "--json" in out


# -- the JSON document ---------------------------------------------------------

MANY = [
    shared("e-2", purpose="profiling"),
    shared("e-10", purpose="support", kind="partner", recipient="acme-consulting"),
    shared("e-1", purpose="marketing", kind="data_broker", recipient="acme-leads", subject="bo"),
    event("e-3", "VisitorRegistered", {"site": "oslo"}, subject="guest"),
    shared("e-4"),
]


def test_the_json_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(
        tmp_path / "many.jsonl",
        [
            *MANY,
            "{oops",
            MANY[4],
            shared("e-4", recipient="visma-finland-oy"),
            event("e-5", "Nope", {}),
        ],
    )
    status, document = check_json(path, capsys)

    assert status == 1
    assert set(document) == {"violations", "rejected", "counts"}
    violations = document["violations"]
    keys = [(v["event_id"], v["rule"]) for v in violations]
    assert keys == sorted(keys)
    assert keys == [
        ("e-1", "consent-missing"),
        ("e-1", "recipient-not-permitted"),
        ("e-10", "partner-not-certified"),
        ("e-10", "recipient-purpose-mismatch"),
        ("e-2", "unknown-purpose"),
        ("e-3", "visitor-not-informed"),
    ]
    for violation in violations:
        assert {"event_id", "rule", "subject", "severity", "clause"} <= set(violation)
        assert violation["severity"] in {"critical", "high", "medium"}
        assert violation["clause"]
    by_key = {(v["event_id"], v["rule"]): v for v in violations}
    assert by_key["e-1", "consent-missing"]["subject"] == "bo"
    assert by_key["e-1", "consent-missing"]["severity"] == "high"
    assert by_key["e-1", "consent-missing"]["clause"] == "l"
    assert by_key["e-2", "unknown-purpose"]["severity"] == "medium"
    assert by_key["e-3", "visitor-not-informed"]["subject"] == "guest"
    assert by_key["e-10", "partner-not-certified"]["clause"] == "Visma partnere"

    assert [(r["line"], r["reason"]) for r in document["rejected"]] == [
        (6, "invalid-json"),
        (8, "id-conflict"),
        (9, "unknown-type"),
    ]
    assert all({"line", "reason"} <= set(r) for r in document["rejected"])
    assert document["counts"] == {"accepted": 5, "duplicates": 1, "rejected": 3, "violations": 6}


def test_an_id_conflict_is_reported_on_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_lines(
        tmp_path / "conflict.jsonl",
        [shared("e-1"), shared("e-1", recipient="visma-finland-oy")],
    )
    status, document = check_json(path, capsys)
    assert status == 0
    assert [(r["line"], r["reason"]) for r in document["rejected"]] == [(2, "id-conflict")]


def test_blank_lines_are_skipped_but_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "blanks.jsonl"
    body = "\n".join(
        [
            "",
            json.dumps(CLEAN[0]),
            "   ",
            "\t",
            json.dumps(shared("b-1", purpose="profiling")),
            "",
            "not json",
            json.dumps(CLEAN[1]),
            "[1]",
            "",
        ]
    )
    path.write_text(body, encoding="utf-8")
    status, document = check_json(path, capsys)
    assert status == 1
    assert [(r["line"], r["reason"]) for r in document["rejected"]] == [
        (7, "invalid-json"),
        (9, "invalid-json"),
    ]
    assert document["counts"] == {"accepted": 3, "duplicates": 0, "rejected": 2, "violations": 1}


def test_crlf_line_endings_and_no_final_newline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes("\r\n".join(json.dumps(e) for e in CLEAN).encode() + b"\r\n\r\n" + b"oops")
    status, document = check_json(path, capsys)
    assert status == 0
    assert document["counts"]["accepted"] == 3
    assert [(r["line"], r["reason"]) for r in document["rejected"]] == [(5, "invalid-json")]


def test_invalid_utf8_is_one_rejected_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.jsonl"
    lines = [json.dumps(e).encode() for e in CLEAN]
    lines.insert(1, json.dumps(shared("x-1", subject="Åse"), ensure_ascii=False).encode("latin-1"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    status, document = check_json(path, capsys)
    assert status == 0
    assert [(r["line"], r["reason"]) for r in document["rejected"]] == [(2, "invalid-json")]
    assert document["counts"]["accepted"] == 3


def test_the_policy_flag_changes_the_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_lines(tmp_path / "e.jsonl", [event("v-1", "VisitorRegistered", {"site": "x"})])
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("purposes: {}\nvisitors: {require_rights_notice: false}\n", encoding="utf-8")
    assert check_json(events, capsys)[0] == 1
    assert check_json(events, capsys, "--policy", str(lenient))[0] == 0


def test_the_policy_comes_from_ledger_policy_when_no_flag_names_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = write_lines(tmp_path / "e.jsonl", [event("v-1", "VisitorRegistered", {"site": "x"})])
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("purposes: {}\nvisitors: {require_rights_notice: false}\n", encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("purposes: [a, b]\n", encoding="utf-8")

    monkeypatch.setenv("LEDGER_POLICY", str(lenient))
    assert check_json(events, capsys)[0] == 0
    monkeypatch.setenv("LEDGER_POLICY", str(broken))
    assert check_json(events, capsys, "--policy", str(lenient))[0] == 0  # the flag wins
    status, _, err = run(["check", str(events)], capsys)
    assert status == 2
    assert str(broken) in err and "purposes" in err


# -- the human summary ---------------------------------------------------------


def test_the_summary_mentions_counts_and_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_lines(tmp_path / "many.jsonl", [*MANY, MANY[0], "{oops"])
    status, out, err = run(["check", str(path)], capsys)
    assert status == 1
    assert err == ""
    assert "5 accepted" in out
    assert "1 duplicates" in out
    assert "1 rejected" in out
    assert "6 open violations" in out
    for rule in (
        "consent-missing",
        "recipient-not-permitted",
        "partner-not-certified",
        "recipient-purpose-mismatch",
        "unknown-purpose",
        "visitor-not-informed",
    ):
        assert rule in out
    assert "line 7" in out
    assert "invalid-json" in out


def test_the_summary_names_every_clause_a_rule_was_broken_under(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """consent-withdrawn breaks the clause of the purpose concerned: in the
    late-arrivals scenario, clauses k and l."""
    path = SCENARIOS / "late-arrivals" / "events.jsonl"
    clauses = {
        v["clause"] for v in check_json(path, capsys)[1]["violations"]
        if v["rule"] == "consent-withdrawn"
    }  # fmt: skip
    status, out, _ = run(["check", str(path)], capsys)
    assert status == 1
    assert len(clauses) > 1
    assert f"consent-withdrawn (critical, clauses {', '.join(sorted(clauses))}):" in out


def test_the_summary_of_a_clean_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "clean.jsonl", CLEAN)
    status, out, _ = run(["check", str(path)], capsys)
    assert status == 0
    assert "3 accepted" in out
    assert "0 open violations" in out


# -- the installed console script ----------------------------------------------


def test_the_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "consent-ledger"
    assert script.exists(), f"{script}: install the package (pip install -e .)"
    folder = SCENARIOS / "consent-lifecycle"
    expected = json.loads((folder / "expected.json").read_text("utf-8"))

    done = subprocess.run(
        [
            str(script),
            "check",
            str(folder / "events.jsonl"),
            "--policy",
            str(folder / "policy.yaml"),
            "--json",
        ],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    assert document["counts"] == expected["counts"]
    assert [(v["event_id"], v["rule"]) for v in document["violations"]] == sorted(
        (v["event_id"], v["rule"]) for v in expected["violations"]
    )

    missing = subprocess.run(
        [str(script), "check", str(tmp_path / "missing.jsonl")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert b"missing.jsonl" in missing.stderr

    bad_flag = subprocess.run(
        [str(script), "check", "--nope"], capture_output=True, timeout=60, check=False
    )
    assert bad_flag.returncode == 2


def test_check_starts_without_the_service_libraries() -> None:
    # check is run on files by hand and in pipelines: start-up time counts, and
    # pydantic, structlog and cryptography add a tenth of a second before line one.
    probe = (
        "import sys, consent_ledger.cli; "
        "print(sorted({'pydantic', 'structlog', 'cryptography', 'faust'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"consent-ledger {consent_ledger.__version__}"


@pytest.mark.parametrize(
    "command",
    ["check", "dev", "worker", "api", "publish", "migrate", "verify", "verify-proof", "report"],
)
def test_every_command_says_what_it_does_reads_and_exits_with(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "environment:" in out and "exit status:" in out
    assert command == "verify-proof" or "LEDGER_" in out


def test_every_registered_command_names_what_runs_it() -> None:
    # A subcommand is a module's add_NAME plus a line in COMMANDS; one that forgot
    # set_defaults(run=...) would fail only when someone runs it.
    import argparse

    def leaves(parser: argparse.ArgumentParser, path: str, run: Any) -> Iterator[tuple[str, Any]]:
        run = parser.get_default("run") or run  # keys and token set it on the group
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            yield path, run
        for action in actions:
            for name, child in action.choices.items():
                yield from leaves(child, f"{path} {name}".strip(), run)

    found = dict(leaves(cli._parser(), "", None))
    assert len(found) >= 20  # check ... token revoke
    assert [path for path, run in found.items() if not callable(run)] == []


def test_checkpoint_save_says_what_it_does_reads_and_exits_with(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["checkpoint", "save", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "environment:" in out and "exit status:" in out
    assert "LEDGER_API_URL" in out and "LEDGER_TOKEN" in out


def test_a_malformed_database_url_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://ledger:s3cret@db:port/ledger")
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LEDGER_DATABASE_URL" in err
    assert "s3cret" not in err  # the URL may hold a password
