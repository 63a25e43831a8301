"""Tests of access-rule evaluation: deny by default, exact subjects, global groups."""

from __future__ import annotations

import pytest

from xchange.access import AccessRule, AccessRules
from xchange.errors import AccessDeniedError
from xchange.identifiers import ClientId, GlobalGroupId, ServiceId

PROVIDER = ClientId("EE", "GOV", "5678", "provider")
GET_PERSON = ServiceId(PROVIDER, "getPerson")
GET_OTHER = ServiceId(PROVIDER, "getOther")

MEMBER = ClientId("EE", "GOV", "1234")
SUB_A = MEMBER.subsystem_of("a")
SUB_B = MEMBER.subsystem_of("b")
STRANGER = ClientId("EE", "COM", "9999", "x")

ADMINS = GlobalGroupId("EE", "admins")
EMPTY_GROUP = GlobalGroupId("EE", "empty")
GROUPS: dict[GlobalGroupId, frozenset[ClientId]] = {
    ADMINS: frozenset({SUB_B, STRANGER}),
    EMPTY_GROUP: frozenset(),
}


class GroupDirectory:
    """An in-memory stand-in for global configuration's group lookup; records its calls."""

    def __init__(self, groups: dict[GlobalGroupId, frozenset[ClientId]]) -> None:
        self.groups = groups
        self.asked: list[GlobalGroupId] = []

    def __call__(self, group: GlobalGroupId) -> frozenset[ClientId]:
        self.asked.append(group)
        return self.groups.get(group, frozenset())


def check(rules: list[AccessRule], client: ClientId, service: ServiceId) -> bool:
    """True when allowed; AccessDeniedError is turned into False for table-driven tests."""
    try:
        AccessRules(rules).check(client, service, GroupDirectory(GROUPS))
    except AccessDeniedError as exc:
        assert exc.code == "server.serverproxy.access_denied"
        assert exc.status == 403
        return False
    return True


@pytest.mark.parametrize(
    ("rules", "client", "service", "allowed"),
    [
        # deny by default
        ([], SUB_A, GET_PERSON, False),
        ([], MEMBER, GET_PERSON, False),
        # grant by subsystem: exactly that subsystem, exactly that service
        ([AccessRule(GET_PERSON, SUB_A)], SUB_A, GET_PERSON, True),
        ([AccessRule(GET_PERSON, SUB_A)], SUB_B, GET_PERSON, False),
        ([AccessRule(GET_PERSON, SUB_A)], MEMBER, GET_PERSON, False),
        ([AccessRule(GET_PERSON, SUB_A)], SUB_A, GET_OTHER, False),
        ([AccessRule(GET_PERSON, SUB_A)], SUB_A,
         ServiceId(PROVIDER.subsystem_of("other"), "getPerson"), False),
        ([AccessRule(GET_PERSON, SUB_A)], SUB_A, ServiceId(PROVIDER.member, "getPerson"), False),
        # a member grant does not cover the member's subsystems
        ([AccessRule(GET_PERSON, MEMBER)], MEMBER, GET_PERSON, True),
        ([AccessRule(GET_PERSON, MEMBER)], SUB_A, GET_PERSON, False),
        # nor does a subsystem grant cover a same-named subsystem of another member
        ([AccessRule(GET_PERSON, SUB_A)], ClientId("EE", "GOV", "4321", "a"), GET_PERSON, False),
        ([AccessRule(GET_PERSON, SUB_A)], ClientId("FI", "GOV", "1234", "a"), GET_PERSON, False),
        # versions are ignored, in the rule and in the request
        ([AccessRule(ServiceId(PROVIDER, "getPerson", "v1"), SUB_A)], SUB_A, GET_PERSON, True),
        ([AccessRule(GET_PERSON, SUB_A)], SUB_A, ServiceId(PROVIDER, "getPerson", "v2"), True),
        ([AccessRule(ServiceId(PROVIDER, "getPerson", "v1"), SUB_A)], SUB_A,
         ServiceId(PROVIDER, "getPerson", "v9"), True),
        ([AccessRule(ServiceId(PROVIDER, "getPerson", "v1"), SUB_A)], SUB_A,
         ServiceId(PROVIDER, "getOther", "v1"), False),
        # global groups, resolved through the callback
        ([AccessRule(GET_PERSON, ADMINS)], SUB_B, GET_PERSON, True),
        ([AccessRule(GET_PERSON, ADMINS)], STRANGER, GET_PERSON, True),
        ([AccessRule(GET_PERSON, ADMINS)], SUB_A, GET_PERSON, False),
        ([AccessRule(GET_PERSON, ADMINS)], MEMBER, GET_PERSON, False),
        ([AccessRule(GET_PERSON, ADMINS)], SUB_B, GET_OTHER, False),
        ([AccessRule(GET_PERSON, EMPTY_GROUP)], SUB_A, GET_PERSON, False),
        ([AccessRule(GET_PERSON, GlobalGroupId("EE", "unknown"))], SUB_A, GET_PERSON, False),
        # a group of the same code in another instance is another group
        ([AccessRule(GET_PERSON, GlobalGroupId("FI", "admins"))], SUB_B, GET_PERSON, False),
        # several rules: any one grant suffices
        ([AccessRule(GET_PERSON, EMPTY_GROUP), AccessRule(GET_PERSON, ADMINS),
          AccessRule(GET_OTHER, SUB_A)], SUB_B, GET_PERSON, True),
        ([AccessRule(GET_PERSON, EMPTY_GROUP), AccessRule(GET_PERSON, ADMINS),
          AccessRule(GET_OTHER, SUB_A)], SUB_A, GET_PERSON, False),
        ([AccessRule(GET_PERSON, SUB_A), AccessRule(GET_PERSON, SUB_A)], SUB_A, GET_PERSON, True),
    ],
)
def test_access_decisions(
    rules: list[AccessRule], client: ClientId, service: ServiceId, allowed: bool
) -> None:
    assert check(rules, client, service) is allowed


def test_denial_names_client_and_service() -> None:
    with pytest.raises(AccessDeniedError, match=r"EE/GOV/1234/a .*EE/GOV/5678/provider/getPerson"):
        AccessRules([]).check(SUB_A, GET_PERSON, GroupDirectory(GROUPS))


def test_group_callback_asked_only_for_groups_of_that_service() -> None:
    directory = GroupDirectory(GROUPS)
    rules = AccessRules(
        [AccessRule(GET_PERSON, SUB_A), AccessRule(GET_OTHER, ADMINS), AccessRule(GET_OTHER, SUB_B)]
    )
    rules.check(SUB_A, GET_PERSON, directory)
    rules.check(SUB_B, GET_OTHER, directory)  # a direct grant needs no group lookup
    assert directory.asked == []
    rules.check(STRANGER, GET_OTHER, directory)
    assert directory.asked == [ADMINS]


def test_rules_are_a_snapshot_of_their_input() -> None:
    source = [AccessRule(GET_PERSON, SUB_A)]
    rules = AccessRules(source)
    source.append(AccessRule(GET_PERSON, SUB_B))
    rules.check(SUB_A, GET_PERSON, GroupDirectory(GROUPS))
    with pytest.raises(AccessDeniedError):
        rules.check(SUB_B, GET_PERSON, GroupDirectory(GROUPS))


def test_rules_accept_any_iterable() -> None:
    rules = AccessRules(AccessRule(GET_PERSON, c) for c in (SUB_A, SUB_B))
    for client in (SUB_A, SUB_B):
        rules.check(client, GET_PERSON, GroupDirectory(GROUPS))
