"""Tests of access-rule evaluation: deny by default, exact subjects, global and local groups,
endpoints, and request paths that try to be read two ways."""

from __future__ import annotations

import pytest

from xchange.access import (
    ALL_ENDPOINTS,
    AccessRule,
    AccessRules,
    EndpointPattern,
    LocalGroupId,
    parse_subject,
    request_segments,
)
from xchange.errors import AccessDeniedError, BadRequestError
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
        AccessRules(rules).check(client, service, "GET", "/x", GroupDirectory(GROUPS))
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
        AccessRules([]).check(SUB_A, GET_PERSON, "GET", "", GroupDirectory(GROUPS))


def test_group_callback_asked_only_for_groups_of_that_service() -> None:
    directory = GroupDirectory(GROUPS)
    rules = AccessRules(
        [AccessRule(GET_PERSON, SUB_A), AccessRule(GET_OTHER, ADMINS), AccessRule(GET_OTHER, SUB_B)]
    )
    rules.check(SUB_A, GET_PERSON, "GET", "", directory)
    rules.check(SUB_B, GET_OTHER, "GET", "", directory)  # a direct grant needs no group lookup
    assert directory.asked == []
    rules.check(STRANGER, GET_OTHER, "GET", "", directory)
    assert directory.asked == [ADMINS]


def test_rules_are_a_snapshot_of_their_input() -> None:
    source = [AccessRule(GET_PERSON, SUB_A)]
    rules = AccessRules(source)
    source.append(AccessRule(GET_PERSON, SUB_B))
    rules.check(SUB_A, GET_PERSON, "GET", "", GroupDirectory(GROUPS))
    with pytest.raises(AccessDeniedError):
        rules.check(SUB_B, GET_PERSON, "GET", "", GroupDirectory(GROUPS))


def test_rules_accept_any_iterable() -> None:
    rules = AccessRules(AccessRule(GET_PERSON, c) for c in (SUB_A, SUB_B))
    for client in (SUB_A, SUB_B):
        rules.check(client, GET_PERSON, "GET", "/", GroupDirectory(GROUPS))


# -- endpoints ------------------------------------------------------------------------------


def E(method: str, path: str) -> EndpointPattern:
    return EndpointPattern(method, path)


def allowed(endpoint: EndpointPattern, method: str, path: str) -> bool:
    """Is ``method path`` of GET_PERSON allowed to SUB_A under a grant of ``endpoint``?"""
    try:
        AccessRules([AccessRule(GET_PERSON, SUB_A, endpoint)]).check(
            SUB_A, GET_PERSON, method, path, GroupDirectory(GROUPS))
    except AccessDeniedError as exc:
        assert exc.code == "server.serverproxy.access_denied"
        return False
    return True


@pytest.mark.parametrize(
    ("endpoint", "method", "path", "expected"),
    [
        # the whole service
        (ALL_ENDPOINTS, "GET", "", True),
        (ALL_ENDPOINTS, "DELETE", "/a/b/c", True),
        (E("*", "**"), "POST", "/a", True),
        # exact method and path
        (E("GET", "/persons"), "GET", "/persons", True),
        (E("GET", "/persons"), "POST", "/persons", False),
        (E("GET", "/persons"), "get", "/persons", False),
        (E("GET", "/persons"), "GET", "/persons/1", False),
        (E("GET", "/persons"), "GET", "/person", False),
        (E("GET", "/persons"), "GET", "/personsx", False),
        (E("GET", "/persons"), "GET", "", False),
        (E("*", "/persons"), "PATCH", "/persons", True),
        # the service root
        (E("GET", "/"), "GET", "", True),
        (E("GET", "/"), "GET", "/", True),
        (E("GET", "/"), "GET", "/a", False),
        # '*' is exactly one segment
        (E("GET", "/persons/*"), "GET", "/persons/1", True),
        (E("GET", "/persons/*"), "GET", "/persons", False),
        (E("GET", "/persons/*"), "GET", "/persons/", False),
        (E("GET", "/persons/*"), "GET", "/persons/1/2", False),
        (E("GET", "/persons/*/cars"), "GET", "/persons/1/cars", True),
        (E("GET", "/persons/*/cars"), "GET", "/persons/1/2/cars", False),
        (E("GET", "/persons/*/cars"), "GET", "/persons//cars", False),
        # '**' is any suffix, none included
        (E("GET", "/persons/**"), "GET", "/persons", True),
        (E("GET", "/persons/**"), "GET", "/persons/1/2/3", True),
        (E("GET", "/persons/**"), "GET", "/personsx/1", False),
        (E("GET", "/persons/**"), "GET", "/other/persons/1", False),
    ],
)
def test_endpoint_matching(endpoint: EndpointPattern, method: str, path: str,
                           expected: bool) -> None:
    assert allowed(endpoint, method, path) is expected


# Every tricky spelling of a path: matched as intended, or denied.  The grant is
# GET /persons/* and GET /public/** (and nothing under /admin).
TRICKY_RULES = [E("GET", "/persons/*"), E("GET", "/public/**")]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # percent-decoding once: an encoded ordinary character is that character
        ("/p%65rsons/1", True),
        ("/persons/%31", True),
        ("/persons/J%C3%BCri", True),
        ("/persons/%E2%82", False),          # not UTF-8 once decoded
        # an encoded '/' or '\' cannot hide a segment boundary: ambiguous, denied
        ("/persons/1%2F2", False),
        ("/persons/1%2f2", False),
        ("/persons%2F1", False),
        ("/persons/1%5C2", False),
        ("/persons/1\\2", False),
        # double encoding is ambiguous: denied
        ("/persons/%252F", False),
        ("/persons/%2541", False),
        # dot segments, plain, encoded, mixed, with ;params: denied, never resolved
        ("/persons/..", False),
        ("/persons/.", False),
        ("/persons/%2E%2E", False),
        ("/persons/%2e.", False),
        ("/public/../admin", False),
        ("/public/%2e%2e/admin", False),
        ("/public/..;/admin", False),
        ("/public/.;x/admin", False),
        ("/public/./x", False),
        ("/admin/../public/x", False),
        # dots that are not dot segments are names
        ("/persons/...", True),
        ("/persons/.hidden", True),
        ("/persons/a..b", True),
        # duplicate slashes: denied; one trailing slash: ignored
        ("//persons/1", False),
        ("/persons//1", False),
        ("/public//x", False),
        ("/persons/1/", True),
        ("/persons/1//", False),
        ("/public/", True),
        # case: paths are case-sensitive, a grant does not widen by case
        ("/Persons/1", False),
        ("/PERSONS/1", False),
        ("/%50ersons/1", False),          # %50 is 'P'
        ("/Public/x", False),
        # control characters, even encoded, are not path characters
        ("/persons/1%00", False),
        ("/persons/%0A", False),
        # query strings and fragments are not part of a path
        ("/persons/1?x=/admin", False),
        ("/persons/1#frag", False),
        # no other prefix reaches /admin
        ("/admin", False),
        ("/admin/x", False),
        ("/public/x/../../admin", False),
        ("/persons", False),
        ("", False),
        ("/", False),
        ("persons/1", False),
    ],
)
def test_tricky_paths(path: str, expected: bool) -> None:
    rules = AccessRules(AccessRule(GET_PERSON, SUB_A, e) for e in TRICKY_RULES)
    try:
        rules.check(SUB_A, GET_PERSON, "GET", path, GroupDirectory(GROUPS))
    except AccessDeniedError as exc:
        assert exc.status == 403
        assert not expected, exc.message
        return
    assert expected, f"{path!r} passed"


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("", ()),
        ("/", ()),
        ("/a", ("a",)),
        ("/a/", ("a",)),
        ("/a/b%20c", ("a", "b c")),
        ("/%61", ("a",)),
        ("/a;v=1", ("a;v=1",)),
    ],
)
def test_request_segments(path: str, segments: tuple[str, ...]) -> None:
    assert request_segments(path) == segments


@pytest.mark.parametrize(
    "path",
    ["a", "/a//b", "/a/%2F", "/a/%", "/a/%zz", "/..", "/a/..%3B", "/a?b", "/a#b"],
)
def test_request_segments_refuse(path: str) -> None:
    # '%' alone and '%zz' are left as they are by a single decode: they hold '%', ambiguous
    with pytest.raises(AccessDeniedError):
        request_segments(path)


@pytest.mark.parametrize(
    ("method", "path", "normal"),
    [
        ("*", "**", "/**"),
        ("*", "/**", "/**"),
        ("GET", "/", "/"),
        ("GET", "/a/", "/a"),
        ("GET", "/a/*/b/**", "/a/*/b/**"),
        ("POST", "/a b", "/a b"),
    ],
)
def test_endpoint_normal_form(method: str, path: str, normal: str) -> None:
    assert EndpointPattern(method, path).path == normal


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/a"), ("", "/a"), ("G*", "/a"), ("GET", "a"), ("GET", ""),
        ("GET", "/**/a"), ("GET", "/a*"), ("GET", "/a/*b"), ("GET", "/a/../b"),
        ("GET", "/a/%2Fb"), ("GET", "/a/%61"), ("GET", "/a//b"), ("GET", "/a/."),
    ],
)
def test_endpoint_refuses_bad_patterns(method: str, path: str) -> None:
    with pytest.raises(BadRequestError):
        EndpointPattern(method, path)


def test_endpoint_and_subject_combine() -> None:
    """A client granted one endpoint and a group granted another gets both, nothing else."""
    rules = AccessRules([
        AccessRule(GET_PERSON, SUB_B, E("GET", "/persons/*")),
        AccessRule(GET_PERSON, ADMINS, E("DELETE", "/persons/*")),
    ])
    directory = GroupDirectory(GROUPS)
    assert rules.check(SUB_B, GET_PERSON, "GET", "/persons/1", directory) == E("GET",
                                                                                  "/persons/*")
    assert directory.asked == []
    rules.check(SUB_B, GET_PERSON, "DELETE", "/persons/1", directory)
    with pytest.raises(AccessDeniedError):
        rules.check(SUB_B, GET_PERSON, "POST", "/persons/1", directory)
    with pytest.raises(AccessDeniedError):
        rules.check(STRANGER, GET_PERSON, "GET", "/persons/1", directory)
    assert rules.allowed_endpoints(SUB_B, GET_PERSON, directory) == {
        E("GET", "/persons/*"), E("DELETE", "/persons/*")}
    assert rules.allowed_endpoints(SUB_A, GET_PERSON, directory) == set()


# -- local groups ------------------------------------------------------------------------------

LOCAL = LocalGroupId(PROVIDER, "friends")


def locals_of(group: LocalGroupId) -> frozenset[ClientId]:
    return frozenset({SUB_A}) if group == LOCAL else frozenset()


def test_local_group_grants_its_members() -> None:
    rules = AccessRules([AccessRule(GET_PERSON, LOCAL)])
    rules.check(SUB_A, GET_PERSON, "GET", "", GroupDirectory(GROUPS), locals_of)
    with pytest.raises(AccessDeniedError):
        rules.check(SUB_B, GET_PERSON, "GET", "", GroupDirectory(GROUPS), locals_of)
    # without a lookup, local groups are empty
    with pytest.raises(AccessDeniedError):
        rules.check(SUB_A, GET_PERSON, "GET", "", GroupDirectory(GROUPS))


def test_local_group_counts_only_for_its_owners_services() -> None:
    foreign = LocalGroupId(PROVIDER.subsystem_of("other"), "friends")
    rules = AccessRules([AccessRule(GET_PERSON, foreign)])
    with pytest.raises(AccessDeniedError):
        rules.check(SUB_A, GET_PERSON, "GET", "", GroupDirectory(GROUPS),
                    lambda _g: frozenset({SUB_A}))


@pytest.mark.parametrize(
    ("text", "subject"),
    [
        ("EE/admins", ADMINS),
        ("EE/GOV/1234", MEMBER),
        ("EE/GOV/1234/a", SUB_A),
        ("local:EE/GOV/5678/provider:friends", LOCAL),
    ],
)
def test_parse_subject(text: str, subject: object) -> None:
    assert parse_subject(text) == subject
    assert str(subject) == text


@pytest.mark.parametrize("text", ["local:friends", "local:EE/GOV:x", "EE", "local:EE/GOV/1:"])
def test_parse_subject_refuses(text: str) -> None:
    with pytest.raises(BadRequestError):
        parse_subject(text)
