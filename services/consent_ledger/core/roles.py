"""Who may do what: CONTRACT §7's table of roles, as data.

Every endpoint declares one :class:`Permission`; :data:`GRANTS` says which
roles hold it. An endpoint's roles are therefore read here, in one table, and
a role added to a token never reaches further than this table says. Pure: no
web framework, no database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final, NamedTuple


class Role(StrEnum):
    """The roles of CONTRACT §7; a token holds one or several."""

    PUBLISHER = "publisher"
    ERASER = "eraser"
    ANALYST = "analyst"
    AUDITOR = "auditor"
    PRIVACY_OFFICER = "privacy-officer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Permission(StrEnum):
    """What one endpoint needs. Named after what it reads or changes, not after a role."""

    PUBLISH_EVENTS = "publish-events"
    READ_VIOLATIONS = "read-violations"
    READ_STATS = "read-stats"
    READ_REPORTS = "read-reports"
    READ_POLICY = "read-policy"
    READ_CONSENTS = "read-consents"
    READ_LEDGER = "read-ledger"  # checkpoints, proofs, public key: no personal data
    READ_SUBJECT_EVENTS = "read-subject-events"
    READ_REJECTED = "read-rejected"
    READ_SUBJECT_REPORT = "read-subject-report"
    READ_ACCESS_LOG = "read-access-log"
    READ_METRICS = "read-metrics"
    MANAGE_TOKENS = "manage-tokens"
    PUBLISH_POLICY = "publish-policy"  # add a policy version to the running service


_ANALYST: Final = frozenset(
    {
        Permission.READ_VIOLATIONS,
        Permission.READ_STATS,
        Permission.READ_REPORTS,
        Permission.READ_POLICY,
        Permission.READ_CONSENTS,
    }
)
_AUDITOR: Final = frozenset({Permission.READ_LEDGER})
_OPERATOR: Final = frozenset({Permission.READ_METRICS, Permission.READ_STATS})
# "All reads": what analysts, auditors and operators see, and the personal data they don't.
_PRIVACY_OFFICER: Final = (
    _ANALYST
    | _AUDITOR
    | _OPERATOR
    | {
        Permission.READ_SUBJECT_EVENTS,
        Permission.READ_REJECTED,
        Permission.READ_SUBJECT_REPORT,
        Permission.READ_ACCESS_LOG,
    }
)

GRANTS: Final[Mapping[Role, frozenset[Permission]]] = {
    Role.PUBLISHER: frozenset({Permission.PUBLISH_EVENTS}),
    # Eraser alone grants nothing: it widens what a publisher may publish.
    Role.ERASER: frozenset(),
    Role.ANALYST: _ANALYST,
    Role.AUDITOR: _AUDITOR,
    Role.PRIVACY_OFFICER: _PRIVACY_OFFICER,
    Role.OPERATOR: _OPERATOR,
    # "All of the above but publishing", and the tokens.
    Role.ADMIN: _PRIVACY_OFFICER | {Permission.MANAGE_TOKENS, Permission.PUBLISH_POLICY},
}

ERASURE_TYPE: Final = "ErasureRequested"


def roles_granting(permission: Permission) -> tuple[Role, ...]:
    """The roles that hold ``permission``, in the table's order."""
    return tuple(role for role, granted in GRANTS.items() if permission in granted)


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Roles from their names; unknown names raise ValueError naming them."""
    known = {role.value for role in Role}
    unknown = sorted({name for name in names if name not in known})
    if unknown:
        raise ValueError(
            f"unknown role {', '.join(unknown)}; roles are {', '.join(role.value for role in Role)}"
        )
    return frozenset(Role(name) for name in names)


def known_roles(names: Iterable[str]) -> frozenset[Role]:
    """The names that are roles, others ignored: what an identity provider's claim
    may hold beside the ledger's roles (groups of other applications)."""
    known = {role.value for role in Role}
    return frozenset(Role(name) for name in names if name in known)


class Caller(NamedTuple):
    """Who sent a request: the token's name, its roles, and for a publisher the
    ``source`` values it may publish."""

    name: str
    roles: frozenset[Role]
    sources: frozenset[str]
    kind: str  # "token" (opaque, issued by the ledger) or "oidc" (a JWT)

    def granting_role(self, permission: Permission) -> Role | None:
        """The first of the caller's roles (in the table's order) that holds
        ``permission``: the role an access is recorded under."""
        for role in roles_granting(permission):
            if role in self.roles:
                return role
        return None


class PublicationRefused(NamedTuple):
    """Why a publisher may not publish a request's events: the whole request is refused."""

    position: int  # of the event in the request
    event_id: str
    reason: str


def refused_publication(
    caller: Caller, events: Iterable[tuple[str, str, str]]
) -> PublicationRefused | None:
    """The first of ``events`` (id, type, source) that ``caller`` may not publish.

    A publisher publishes only with the ``source`` values its token lists, and an
    ``ErasureRequested`` only if it also holds ``eraser`` (CONTRACT §7).
    """
    for index, (event_id, kind, source) in enumerate(events):
        if source not in caller.sources:
            allowed = ", ".join(sorted(caller.sources)) or "none"
            return PublicationRefused(
                index,
                event_id,
                f"event {index} ({event_id!r}) has source {source!r}; this token may publish "
                f"only with the sources it lists ({allowed})",
            )
        if kind == ERASURE_TYPE and Role.ERASER not in caller.roles:
            return PublicationRefused(
                index,
                event_id,
                f"event {index} ({event_id!r}) is an ErasureRequested; publishing one needs "
                "the role eraser as well as publisher",
            )
    return None
