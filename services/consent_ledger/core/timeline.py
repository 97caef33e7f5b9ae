"""A subject's file: its consent timeline, disclosures, erasure and open violations.

:meth:`SubjectFile.record` takes one accepted fact at a time, in arrival order,
and returns the violation changes it causes: the fact's own verdicts, and those
of every earlier-arrived disclosure whose verdict it changes (a late consent
event re-judges the disclosures of its purpose dated at or after it). The
offline ``check`` keeps one file per subject in memory; the stream worker loads
the files of a batch's subjects from PostgreSQL, records the batch, and stores
the changes. Both get the same answers because both run this code.

Each event is judged under the policy version in force at its own time
(CONTRACT §3), also when a late consent event re-judges it, and each violation
names that version.

Erasure (CONTRACT §4): disclosures dated after the erasure become
``shared-after-erasure`` and nothing else; then the subject's consent timeline
and disclosures are forgotten (they are personal data), verdicts already
reached stay, and facts that arrive later are judged on what remains: a
disclosure dated after the erasure is ``shared-after-erasure``, one dated
before it is judged against an empty consent timeline, and consent events
change nothing.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from consent_ledger.core.facts import (
    ConsentChange,
    Disclosure,
    Erasure,
    Fact,
    VisitorRegistration,
)
from consent_ledger.core.policy import PolicyVersions
from consent_ledger.core.timestamps import format_micros
from consent_ledger.core.verdicts import Breach, Rule, Severity, judge_disclosure, judge_visitor


class Status(StrEnum):
    OPEN = "open"
    RETRACTED = "retracted"


class Violation(NamedTuple):
    """A rule broken by one event, identified by (event_id, rule)."""

    event_id: str
    rule: Rule
    subject: str
    severity: Severity
    clause: str
    explanation: str
    occurred_at: int  # the event's time, microseconds since the epoch
    # The policy version that judged it; None only for violations stored before
    # versions were recorded.
    policy_version: str | None

    # A StrEnum's str() is its value, without the interpreted property .value is.

    @property
    def key(self) -> tuple[str, str]:
        return (self.event_id, str(self.rule))

    def to_document(self) -> dict[str, str | None]:
        """The JSON form ``check --json`` prints and alerts carry."""
        return {
            "event_id": self.event_id,
            "rule": str(self.rule),
            "subject": self.subject,
            "severity": str(self.severity),
            "clause": self.clause,
            "explanation": self.explanation,
            "occurred_at": format_micros(self.occurred_at),
            "policy_version": self.policy_version,
        }


class ViolationChange(NamedTuple):
    """A violation opened, or retracted because a late event cleared it."""

    status: Status
    violation: Violation


def _order(change: ConsentChange) -> tuple[int, int]:
    return (change.instant, change.seq)


@dataclass(slots=True)
class SubjectFile:
    """Everything the verdicts about one subject depend on."""

    subject: str
    consents: dict[str, list[ConsentChange]] = field(default_factory=dict)
    disclosures: dict[str, list[Disclosure]] = field(default_factory=dict)  # by purpose
    erased_at: int | None = None
    open: dict[str, dict[Rule, Violation]] = field(default_factory=dict)

    def record(self, fact: Fact, policies: PolicyVersions) -> list[ViolationChange]:
        """Take in one accepted fact; return the violations it opens and retracts."""
        if isinstance(fact, Disclosure):
            if self.erased_at is None:
                self.disclosures.setdefault(fact.purpose, []).append(fact)
            return self._rejudge([fact], policies)
        if isinstance(fact, ConsentChange):
            if self.erased_at is not None:
                return []  # nothing remains to change: verdicts reached before stay
            timeline = self.consents.setdefault(fact.purpose, [])
            if timeline and _order(fact) < _order(timeline[-1]):
                insort(timeline, fact, key=_order)
            else:  # in time order, as events mostly come: no search, no key calls
                timeline.append(fact)
            affected = [
                shared
                for shared in self.disclosures.get(fact.purpose, ())
                if shared.instant >= fact.instant
            ]
            return self._rejudge(affected, policies)
        if isinstance(fact, VisitorRegistration):
            policy = policies.in_force_at(fact.instant)
            return self._settle(
                fact.event_id, fact.instant, judge_visitor(policy, fact), policy.version
            )
        return self._erase(fact, policies)

    def rejudge_since(
        self,
        since: int,
        policies: PolicyVersions,
        registrations: Iterable[VisitorRegistration] = (),
    ) -> tuple[list[ViolationChange], list[Violation]]:
        """Judge again, under ``policies``, every disclosure held and each of
        ``registrations`` dated at or after ``since``: what a version published
        with that ``effective_from`` asks (CONTRACT §9). Returns the violations
        opened and retracted, as a late event's, and those that stay open but are
        now judged under another version (relabelled: no alert, a new
        ``policy_version``). An erased subject's facts are gone: nothing changes."""
        if self.erased_at is not None:
            return [], []
        changes: list[ViolationChange] = []
        relabelled: list[Violation] = []
        shared = sorted(
            (d for same in self.disclosures.values() for d in same if d.instant >= since),
            key=lambda d: (d.instant, d.seq),
        )
        for disclosure in shared:
            changes.extend(self._rejudge([disclosure], policies))
            relabelled.extend(self._relabel(disclosure.event_id, disclosure.instant, policies))
        for registration in registrations:
            if registration.instant < since:
                continue
            policy = policies.in_force_at(registration.instant)
            breaches = judge_visitor(policy, registration)
            changes.extend(
                self._settle(registration.event_id, registration.instant, breaches, policy.version)
            )
            relabelled.extend(self._relabel(registration.event_id, registration.instant, policies))
        return changes, relabelled

    def _relabel(self, event_id: str, instant: int, policies: PolicyVersions) -> list[Violation]:
        """The event's open violations that another version than the one in force
        at ``instant`` judged, now naming that one."""
        still_open = self.open.get(event_id)
        if not still_open:
            return []
        version = policies.in_force_at(instant).version
        relabelled = []
        for rule, violation in still_open.items():
            if violation.policy_version != version:
                still_open[rule] = violation = violation._replace(policy_version=version)
                relabelled.append(violation)
        return relabelled

    def _erase(self, erasure: Erasure, policies: PolicyVersions) -> list[ViolationChange]:
        if self.erased_at is not None and self.erased_at <= erasure.instant:
            return []
        self.erased_at = erasure.instant
        self.consents.clear()
        after = [
            shared
            for same_purpose in self.disclosures.values()
            for shared in same_purpose
            if shared.instant > erasure.instant
        ]
        changes = self._rejudge(after, policies)
        self.disclosures.clear()
        return changes

    def _rejudge(
        self, disclosures: list[Disclosure], policies: PolicyVersions
    ) -> list[ViolationChange]:
        """Judge each disclosure again, each under the version in force at its time."""
        changes: list[ViolationChange] = []
        for shared in disclosures:
            policy = policies.in_force_at(shared.instant)
            consent = self.consents.get(shared.purpose, [])
            breaches = judge_disclosure(policy, shared, consent, self.erased_at)
            changes.extend(self._settle(shared.event_id, shared.instant, breaches, policy.version))
        return changes

    def _settle(
        self, event_id: str, instant: int, breaches: list[Breach], policy_version: str
    ) -> list[ViolationChange]:
        """Make the event's open violations exactly ``breaches`` (found under
        ``policy_version``); return what changed. A violation still open keeps
        what it was opened with."""
        was_open = self.open.get(event_id)
        if was_open is None:
            if not breaches:
                return []
            was_open = {}
        now_open: dict[Rule, Violation] = {}
        changes: list[ViolationChange] = []
        for breach in breaches:
            violation = was_open.get(breach.rule)
            if violation is None:
                violation = Violation(
                    event_id,
                    breach.rule,
                    self.subject,
                    breach.severity,
                    breach.clause,
                    breach.explanation,
                    instant,
                    policy_version,
                )
                changes.append(ViolationChange(Status.OPEN, violation))
            now_open[breach.rule] = violation
        changes.extend(
            ViolationChange(Status.RETRACTED, violation)
            for rule, violation in was_open.items()
            if rule not in now_open
        )
        if now_open:
            self.open[event_id] = now_open
        else:
            self.open.pop(event_id, None)
        return changes
