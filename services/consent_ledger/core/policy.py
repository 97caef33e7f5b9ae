"""The policy file of CONTRACT §3: which purposes exist, on what basis, for whom,
and to which recipients data may go; and its versions, each in force from its
``effective_from``.

:func:`load_policy` refuses a file that does not parse or breaks the shape, with
an error naming the file, the key path and the problem, e.g.
``policy.yaml: purposes.marketing.basis: 'consnet' is not one of consent, ...``.
A policy may name its clauses in the privacy statement's own words
(``clauses``: :class:`Clause`), so that a rule, a violation or a report can say
which promise it is about in words a reader knows, not only by a letter.
:func:`load_policy_versions` reads a file (one version) or a folder whose
``*.yaml`` files are the versions, and refuses versions that clash.
:class:`PolicyVersions` answers which version is in force at an instant.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from consent_ledger.core.timestamps import format_micros, parse_instant
from consent_ledger.core.vocabulary import SUBJECT_ROLES

BASES = ("consent", "contract", "legitimate_interest", "legal_obligation")
REFERENCE_POLICY = "reference.yaml"

# Which rule key has an effect for which recipient kind (CONTRACT §4, step 5);
# ``purposes`` and ``clause`` apply to every kind.
_KIND_KEYS: dict[str, str] = {
    "group_company": "allowed",
    "partner": "certified",
    "public_authority": "requires_legal_basis",
    "acquirer": "requires_legal_basis",
    "public_forum": "data_categories",
}
_RULE_KEYS = (
    "allowed",
    "certified",
    "requires_legal_basis",
    "data_categories",
    "purposes",
    "clause",
    "dpv",
)
# A W3C Data Privacy Vocabulary concept (CONTRACT §9): `dpv:Marketing`, or the
# full IRI https://w3id.org/dpv#Marketing; kept as written.
DPV_NAMESPACE = "https://w3id.org/dpv#"
_DPV_CONCEPT = re.compile(r"(?:dpv:|https://w3id\.org/dpv#)[A-Z][A-Za-z0-9]*", re.ASCII)


# A language tag (BCP 47's shape, lower-case primary subtag): `en`, `no`, `nb`, `pt-BR`.
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*", re.ASCII)
# The language a title is shown in when the statement has it in several.
DISPLAY_LANGUAGE = "en"


class PolicyError(ValueError):
    """The policy file cannot be used; the message names file, key and problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Purpose:
    """Why data is processed, the legal basis, and the roles it may be used for."""

    id: str
    clause: str
    basis: str
    roles: frozenset[str]
    dpv: str | None = None  # the W3C DPV purpose it is, e.g. dpv:Marketing

    @property
    def needs_consent(self) -> bool:
        return self.basis == "consent"


@dataclass(frozen=True, slots=True)
class RecipientRule:
    """What a disclosure to one kind of recipient requires."""

    kind: str
    clause: str
    allowed: frozenset[str] | None = None
    certified: frozenset[str] | None = None
    requires_legal_basis: frozenset[str] | None = None
    data_categories: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    dpv: str | None = None  # the W3C DPV entity or recipient concept, e.g. dpv:ThirdParty


@dataclass(frozen=True, slots=True)
class Clause:
    """A clause of the privacy statement, in the statement's own words.

    ``title`` and ``text`` map a language tag to the words the statement uses in
    that language; a clause the statement has in one language only has one.
    ``translated_title`` and ``translated_text`` hold translations someone made,
    kept apart so that they are never shown as the statement's words.
    """

    id: str
    title: Mapping[str, str]
    text: Mapping[str, str] = field(default_factory=dict)
    translated_title: Mapping[str, str] = field(default_factory=dict)
    translated_text: Mapping[str, str] = field(default_factory=dict)

    def title_in(self, language: str) -> str | None:
        """The statement's title in ``language``, or None when it has none there."""
        return self.title.get(language)

    def text_in(self, language: str) -> str | None:
        """The statement's words in ``language``, or None when it has none there."""
        return self.text.get(language)

    @property
    def display_title(self) -> str:
        """The title to show a reader: the statement's English title, else its
        title in the first language the policy gives (Norwegian, for a clause
        that only the Norwegian statement has). Never a translation."""
        english = self.title.get(DISPLAY_LANGUAGE)
        if english is not None:
            return english
        # A clause read from a file has a title in one language at least.
        return next(iter(self.title.values()), self.id)


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded policy: the privacy statement's promises, in checkable form."""

    name: str
    version: str
    purposes: Mapping[str, Purpose]
    recipients: Mapping[str, RecipientRule]
    require_rights_notice: bool = True
    visitors_clause: str = "visitors"
    roles: frozenset[str] = field(default_factory=lambda: frozenset(SUBJECT_ROLES))
    # Microseconds since the epoch; None: in force since always (a file without one).
    effective_from: int | None = None
    # The file it was read from, for error messages; not part of what it says.
    source: str = field(default="<policy>", compare=False)
    # Clause id -> its words, in the order of the file; empty when it gives none.
    clauses: Mapping[str, Clause] = field(default_factory=dict)

    def clause(self, clause_id: str) -> Clause | None:
        """The clause ``clause_id`` in the statement's words, or None when the
        policy gives no words for it."""
        return self.clauses.get(clause_id)

    def clause_title(self, clause_id: str) -> str | None:
        """The title to show for ``clause_id`` (:attr:`Clause.display_title`), or
        None when the policy gives no words for it."""
        clause = self.clauses.get(clause_id)
        return None if clause is None else clause.display_title


# Where a version without ``effective_from`` starts: before every instant an
# event can carry (years 1..9999).
SINCE_ALWAYS = -(2**63)


def _start(policy: Policy) -> int:
    return SINCE_ALWAYS if policy.effective_from is None else policy.effective_from


class PolicyVersions:
    """The versions of a policy, each in force from its ``effective_from`` until
    the next one's (CONTRACT §3).

    Immutable: a version published later makes a new set (:meth:`with_version`),
    so that everything judged in one batch is judged under one set.
    """

    def __init__(self, versions: Iterable[Policy]) -> None:
        """Refuses an empty set, and two versions with the same ``version`` or
        ``effective_from`` (the error names both files)."""
        ordered = sorted(versions, key=_start)
        if not ordered:
            raise PolicyError("<policy versions>", "", "no version")
        seen: dict[str, Policy] = {}
        for index, policy in enumerate(ordered):
            earlier = seen.get(policy.version)
            if earlier is not None:
                raise PolicyError(
                    f"{earlier.source} and {policy.source}",
                    "version",
                    f"both are {policy.version!r}; each version needs its own",
                )
            seen[policy.version] = policy
            if index and _start(ordered[index - 1]) == _start(policy):
                when = (
                    "missing from both: only one version can be in force since always"
                    if policy.effective_from is None
                    else f"both are {format_micros(policy.effective_from)}; "
                    "two versions cannot come into force at the same instant"
                )
                raise PolicyError(
                    f"{ordered[index - 1].source} and {policy.source}", "effective_from", when
                )
        self.versions: tuple[Policy, ...] = tuple(ordered)  # by effective_from
        self._starts: list[int] = [_start(policy) for policy in ordered]

    def in_force_at(self, instant: int) -> Policy:
        """The version in force at ``instant`` (microseconds since the epoch): the
        one with the latest ``effective_from`` at or before it; before every
        version, the earliest."""
        versions = self.versions
        if len(versions) == 1:
            return versions[0]
        index = bisect_right(self._starts, instant)
        return versions[index - 1] if index else versions[0]

    def with_version(self, policy: Policy) -> PolicyVersions:
        """A new set with ``policy`` added; refused if it clashes with a version."""
        return PolicyVersions((*self.versions, policy))

    def clause_title(self, clause_id: str, version: str | None = None) -> str | None:
        """The title to show for ``clause_id`` of a violation judged under
        ``version``: that version's words when it gives them, else the latest
        version's that does; None when no version gives words for it."""
        for policy in self.versions:
            if policy.version == version and clause_id in policy.clauses:
                return policy.clause_title(clause_id)
        for policy in reversed(self.versions):
            if clause_id in policy.clauses:
                return policy.clause_title(clause_id)
        return None

    def __len__(self) -> int:
        return len(self.versions)

    def __repr__(self) -> str:
        return f"PolicyVersions({', '.join(repr(policy.version) for policy in self.versions)})"


def as_versions(policy: Policy | PolicyVersions) -> PolicyVersions:
    """A set of versions as it is; a single policy as the one version, in force always."""
    return policy if isinstance(policy, PolicyVersions) else PolicyVersions((policy,))


def load_policy_versions(path: str | Path | None) -> PolicyVersions:
    """The versions at ``path``: a policy file is one version; in a folder each
    ``*.yaml`` file is one (other files are left alone). Without a path, the
    reference policy, as one version in force always."""
    if path is None:
        return PolicyVersions((load_reference_policy(),))
    folder = Path(path)
    if not folder.is_dir():
        return PolicyVersions((load_policy(folder),))
    files = sorted(item for item in folder.glob("*.yaml") if item.is_file())
    if not files:
        raise PolicyError(
            str(folder), "", "no *.yaml file in the folder; each one is a version of the policy"
        )
    return PolicyVersions(load_policy(file) for file in files)


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    return parse_policy(text, source)


def load_reference_policy() -> Policy:
    """The policy shipped with the package, written from the two privacy statements."""
    text = resources.files("consent_ledger.policies").joinpath(REFERENCE_POLICY).read_text("utf-8")
    return parse_policy(text, f"<package>/policies/{REFERENCE_POLICY}")


# libyaml's safe loader where PyYAML was built with it: a tenth of check's start-up.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_TIMESTAMP = "tag:yaml.org,2002:timestamp"
# The safe loader without YAML's own timestamps: an unquoted `effective_from:
# 2026-04-01T00:00:00Z` stays the text written, checked as RFC 3339 like an
# event's `time` (YAML's timestamps also take forms RFC 3339 does not, such as
# a space for the `T`, and lose what was written). Built with type(): a class
# statement deriving from the C loader would not compile with mypyc.
_POLICY_LOADER = type(
    "_PolicyLoader",
    (_SAFE_LOADER,),
    {
        "yaml_implicit_resolvers": {
            first: [(tag, pattern) for tag, pattern in resolvers if tag != _YAML_TIMESTAMP]
            for first, resolvers in _SAFE_LOADER.yaml_implicit_resolvers.items()
        }
    },
)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse policy YAML; ``source`` names the file in error messages."""
    try:
        document = yaml.load(text, Loader=_POLICY_LOADER)  # noqa: S506 - it is a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(source, "", f"not valid YAML: {where}{problem}") from None
    return _Reader(source).policy(document)


class _Reader:
    """Walks the YAML document, raising PolicyError with the key path on the first problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> PolicyError:
        return PolicyError(self.source, key, problem)

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {_yaml_kind(value)}")
        for name in value:
            if not isinstance(name, str) or not name.strip():
                raise self.fail(key, f"keys must be non-empty strings, got {name!r}")
        return value

    def text(self, value: Any, key: str) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # `clause: 1` or `version: 2` mean the obvious thing
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {_yaml_kind(value)}")
        return value

    def names(self, value: Any, key: str) -> frozenset[str]:
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {_yaml_kind(value)}")
        # `allowed: [2024]` lists the id "2024": the ids it is compared with are strings.
        return frozenset(self.text(item, f"{key}[{index}]") for index, item in enumerate(value))

    def unknown_keys(self, mapping: Mapping[str, Any], allowed: tuple[str, ...], key: str) -> None:
        for name in mapping:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key; expected one of {', '.join(allowed)}")

    def policy(self, document: Any) -> Policy:
        if document is None:
            raise self.fail("", "the file is empty")
        top = self.mapping(document, "(top level)")
        self.unknown_keys(
            top,
            (
                "policy",
                "version",
                "effective_from",
                "roles",
                "purposes",
                "recipients",
                "visitors",
                "clauses",
            ),
            "",
        )
        roles = frozenset(SUBJECT_ROLES)
        if "roles" in top:
            roles = self.names(top["roles"], "roles")
            for index, role in enumerate(top["roles"]):
                if role not in SUBJECT_ROLES:
                    raise self.fail(
                        f"roles[{index}]", f"{role!r} is none of {', '.join(SUBJECT_ROLES)}"
                    )
        if "purposes" not in top:
            raise self.fail("purposes", "missing; the policy must list its purposes")
        purposes = {
            name: self.purpose(name, spec, roles)
            for name, spec in self.mapping(top["purposes"], "purposes").items()
        }
        recipients = {
            kind: self.recipient(kind, spec, purposes)
            for kind, spec in self.mapping(top.get("recipients", {}), "recipients").items()
        }
        visitors = self.mapping(top.get("visitors", {}) or {}, "visitors")
        self.unknown_keys(visitors, ("require_rights_notice", "clause"), "visitors")
        require_notice = visitors.get("require_rights_notice", True)
        if not isinstance(require_notice, bool):
            raise self.fail(
                "visitors.require_rights_notice", f"must be true or false, got {require_notice!r}"
            )
        visitors_clause = self.text(visitors.get("clause", "visitors"), "visitors.clause")
        clauses: dict[str, Clause] = {}
        if "clauses" in top:
            clauses = self.clauses(top["clauses"])
            self.clauses_named(
                clauses, purposes, recipients, visitors_clause if require_notice else None
            )
        return Policy(
            name=self.text(top.get("policy", "unnamed"), "policy"),
            version=self.text(top.get("version", "1"), "version"),
            purposes=purposes,
            recipients=recipients,
            require_rights_notice=require_notice,
            visitors_clause=visitors_clause,
            roles=roles,
            effective_from=self.instant(top["effective_from"], "effective_from")
            if "effective_from" in top
            else None,
            source=self.source,
            clauses=clauses,
        )

    def clauses(self, value: Any) -> dict[str, Clause]:
        """``clauses``: clause id -> ``{title, text, translation}``, each of the
        first two a map of language to the statement's words."""
        if isinstance(value, dict):
            # `clauses: {1: ...}` names clause "1", as `clause: 1` does in a purpose.
            value = {
                str(name) if isinstance(name, int) and not isinstance(name, bool) else name: spec
                for name, spec in value.items()
            }
        found: dict[str, Clause] = {}
        for clause_id, spec in self.mapping(value, "clauses").items():
            key = f"clauses.{clause_id}"
            spec = self.mapping(spec, key)
            self.unknown_keys(spec, ("title", "text", "translation"), key)
            if "title" not in spec:
                raise self.fail(
                    f"{key}.title", "missing; a clause needs its title in the statement's words"
                )
            title = self.words(spec["title"], f"{key}.title")
            text = self.words(spec["text"], f"{key}.text") if "text" in spec else {}
            translated_title: dict[str, str] = {}
            translated_text: dict[str, str] = {}
            if "translation" in spec:
                where = f"{key}.translation"
                translation = self.mapping(spec["translation"], where)
                self.unknown_keys(translation, ("title", "text"), where)
                if "title" in translation:
                    translated_title = self.translated(
                        translation["title"], f"{where}.title", title
                    )
                if "text" in translation:
                    translated_text = self.translated(translation["text"], f"{where}.text", text)
            found[clause_id] = Clause(clause_id, title, text, translated_title, translated_text)
        return found

    def words(self, value: Any, key: str) -> dict[str, str]:
        """A map of language tag to words, with one language at least."""
        if not isinstance(value, dict):
            raise self.fail(
                key,
                f"must be a mapping of language to the statement's words (e.g. en: ...), "
                f"got {_yaml_kind(value)}",
            )
        if not value:
            raise self.fail(key, "names no language; give the words in one at least")
        words: dict[str, str] = {}
        for language, text in value.items():
            if isinstance(language, bool):
                raise self.fail(
                    key,
                    f"{language!r} is not a language tag: YAML reads an unquoted no (or yes, "
                    'on, off) as a boolean; write Norwegian\'s tag quoted, "no"',
                )
            if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
                raise self.fail(
                    key, f"{language!r} is not a language tag (such as en, no, nb or pt-BR)"
                )
            if not isinstance(text, str) or not text.strip():
                raise self.fail(
                    f"{key}.{language}", f"must be a non-empty string, got {_yaml_kind(text)}"
                )
            words[language] = text
        return words

    def translated(self, value: Any, key: str, statement: Mapping[str, str]) -> dict[str, str]:
        """Translations of the statement's words, into languages it does not have."""
        words = self.words(value, key)
        for language in words:
            if language in statement:
                raise self.fail(
                    f"{key}.{language}",
                    "the statement has its own words in this language; a translation is "
                    "for a language it lacks",
                )
        return words

    def clauses_named(
        self,
        clauses: Mapping[str, Clause],
        purposes: Mapping[str, Purpose],
        recipients: Mapping[str, RecipientRule],
        visitors_clause: str | None,
    ) -> None:
        """A policy that gives its clauses' words gives them for every clause its
        rules name, so that no rule is shown without its words (a typo in a
        ``clause`` would otherwise go unnoticed)."""
        named = [(f"purposes.{name}.clause", p.clause) for name, p in purposes.items()]
        named += [(f"recipients.{kind}.clause", r.clause) for kind, r in recipients.items()]
        if visitors_clause is not None:  # the notice rule is on
            named.append(("visitors.clause", visitors_clause))
        for key, clause in named:
            if clause not in clauses:
                raise self.fail(key, f"{clause!r} is not a clause of `clauses`; add it there")

    def instant(self, value: Any, key: str) -> int:
        try:
            return parse_instant(value)
        except ValueError:  # InvalidTimestamp, or an instant out of range
            raise self.fail(
                key,
                f"{value!r} is not an RFC 3339 timestamp with an offset "
                "(e.g. 2026-04-01T00:00:00Z or 2026-04-01T02:00:00+02:00)",
            ) from None

    def purpose(self, name: str, spec: Any, roles: frozenset[str]) -> Purpose:
        key = f"purposes.{name}"
        spec = self.mapping(spec, key)
        self.unknown_keys(spec, ("clause", "basis", "roles", "dpv"), key)
        for required in ("clause", "basis", "roles"):
            if required not in spec:
                raise self.fail(f"{key}.{required}", "missing")
        basis = spec["basis"]
        if basis not in BASES:
            raise self.fail(f"{key}.basis", f"{basis!r} is not one of {', '.join(BASES)}")
        purpose_roles = self.names(spec["roles"], f"{key}.roles")
        for index, role in enumerate(spec["roles"]):
            if role not in roles:
                raise self.fail(
                    f"{key}.roles[{index}]",
                    f"{role!r} is not a known role ({', '.join(sorted(roles))})",
                )
        return Purpose(
            name, self.text(spec["clause"], f"{key}.clause"), basis, purpose_roles,
            self.dpv(spec, key),
        )  # fmt: skip

    def recipient(self, kind: str, spec: Any, purposes: Mapping[str, Purpose]) -> RecipientRule:
        key = f"recipients.{kind}"
        spec = self.mapping(spec if spec is not None else {}, key)
        self.unknown_keys(spec, _RULE_KEYS, key)
        for name in ("allowed", "certified", "requires_legal_basis", "data_categories"):
            if name in spec and _KIND_KEYS.get(kind) != name:
                used_by = sorted(k for k, v in _KIND_KEYS.items() if v == name)
                raise self.fail(
                    f"{key}.{name}", f"has no effect here; it applies to {' and '.join(used_by)}"
                )
        needed = _KIND_KEYS.get(kind)
        if needed is not None and needed not in spec:
            raise self.fail(f"{key}.{needed}", f"missing; a {kind} rule must list it")
        lists = {
            name: self.names(spec[name], f"{key}.{name}")
            for name in (
                "allowed",
                "certified",
                "requires_legal_basis",
                "data_categories",
                "purposes",
            )
            if name in spec
        }
        for index, purpose in enumerate(spec.get("purposes", [])):
            if purpose not in purposes:
                raise self.fail(
                    f"{key}.purposes[{index}]", f"{purpose!r} is not a purpose of this policy"
                )
        clause = self.text(spec.get("clause", key), f"{key}.clause")
        return RecipientRule(kind=kind, clause=clause, dpv=self.dpv(spec, key), **lists)

    def dpv(self, spec: Mapping[str, Any], key: str) -> str | None:
        if "dpv" not in spec:
            return None
        concept = self.text(spec["dpv"], f"{key}.dpv")
        if not _DPV_CONCEPT.fullmatch(concept):
            raise self.fail(
                f"{key}.dpv",
                f"{concept!r} is not a W3C DPV concept; write dpv:Name (e.g. dpv:Marketing) "
                f"or {DPV_NAMESPACE}Name",
            )
        return concept


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), repr(value)
    )
