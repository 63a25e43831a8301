"""Tests of the error hierarchy, the code registry and the handling of peers' codes."""

from __future__ import annotations

import re

import pytest

from xchange import errors
from xchange.errors import (
    ERROR_CODES,
    AccessDeniedError,
    AdapterError,
    AdminError,
    AdminForbiddenError,
    AdminUnauthorizedError,
    BadRequestError,
    CertificateValidationError,
    ChainBrokenError,
    ClientError,
    ClientProxyError,
    ClientProxyLoggingError,
    EvidenceError,
    Fault,
    GlobalConfOutdatedError,
    InvalidGlobalConfError,
    InvalidSignatureError,
    ManagementRequestError,
    ServerProxyError,
    ServerProxyLoggingError,
    ServiceFailedError,
    SoapFaultError,
    StampInvalidError,
    TimestampingFailedError,
    UnknownMemberError,
    UnknownServiceError,
    XRoadError,
    error_for_code,
    normalize_code,
)

_CODE_SHAPE = re.compile(r"^[a-z]+(\.[a-z0-9]+(_[a-z0-9]+)*)+$")
_FAULT_OF_PREFIX = {
    "client.": Fault.CLIENT,
    "admin.": Fault.CLIENT,
    "registry.": Fault.CLIENT,
    "server.clientproxy.": Fault.CONSUMER_SERVER,
    "server.serverproxy.": Fault.PROVIDER_SERVER,
}


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_registered_code_is_sane(code: str) -> None:
    entry = ERROR_CODES[code]
    assert entry.code == code
    assert _CODE_SHAPE.match(code), code
    assert normalize_code(code) == code
    assert isinstance(entry.fault, Fault)
    assert 400 <= entry.status <= 599
    assert entry.description.strip()
    for prefix, fault in _FAULT_OF_PREFIX.items():
        if code.startswith(prefix):
            assert entry.fault is fault
    if entry.fault is Fault.CLIENT:
        assert 400 <= entry.status <= 499, "a client's mistake is a 4xx"

    err = XRoadError("boom", code=code, detail="why")
    assert (err.code, err.fault, err.status) == (code, entry.fault, entry.status)
    assert err.to_json() == {"type": code, "message": "boom", "detail": "why"}


def test_a_code_defined_twice_is_refused() -> None:
    """Both admin APIs (registry and security server) share the ``admin.*`` codes; a second
    definition would silently replace the first one's description and status."""
    entry = ERROR_CODES["admin.not_found"]
    with pytest.raises(ValueError, match=r"admin\.not_found"):
        errors._codes(entry, ERROR_CODES["admin.conflict"], entry)


_HIERARCHY: list[tuple[type[XRoadError], type, str]] = [
    (XRoadError, Exception, "server.clientproxy.internal_error"),
    (ClientError, XRoadError, "client.bad_request"),
    (BadRequestError, ClientError, "client.bad_request"),
    (InvalidSignatureError, XRoadError, "server.serverproxy.invalid_signature"),
    (ClientProxyError, XRoadError, "server.clientproxy.internal_error"),
    (UnknownMemberError, ClientProxyError, "server.clientproxy.unknown_member"),
    (GlobalConfOutdatedError, ClientProxyError, "server.clientproxy.global_conf_outdated"),
    (InvalidGlobalConfError, ClientProxyError, "server.clientproxy.invalid_global_conf"),
    (ClientProxyLoggingError, ClientProxyError, "server.clientproxy.logging_failed"),
    (ServerProxyError, XRoadError, "server.serverproxy.internal_error"),
    (CertificateValidationError, XRoadError, "server.serverproxy.cert_validation"),
    (TimestampingFailedError, XRoadError, "server.clientproxy.timestamping_failed"),
    (AccessDeniedError, ServerProxyError, "server.serverproxy.access_denied"),
    (UnknownServiceError, ServerProxyError, "server.serverproxy.unknown_service"),
    (ServiceFailedError, ServerProxyError, "server.serverproxy.service_failed"),
    (ServerProxyLoggingError, ServerProxyError, "server.serverproxy.logging_failed"),
    (AdminError, XRoadError, "admin.unauthorized"),
    (AdminUnauthorizedError, AdminError, "admin.unauthorized"),
    (AdminForbiddenError, AdminError, "admin.forbidden"),
    (ManagementRequestError, XRoadError, "registry.management.bad_request"),
    (AdapterError, XRoadError, "adapter.backend_failed"),
]


@pytest.mark.parametrize(("cls", "base", "code"), _HIERARCHY)
def test_hierarchy_and_default_codes(cls: type[XRoadError], base: type, code: str) -> None:
    assert issubclass(cls, base)
    assert cls.default_code in ERROR_CODES
    err = cls("message")
    assert err.code == code
    assert err.detail is None
    assert str(err) == "message"
    assert repr(err) == f"{cls.__name__}({code!r}, 'message')"


@pytest.mark.parametrize(("cls", "code"), [
    (ChainBrokenError, "server.messagelog.chain_broken"),
    (StampInvalidError, "server.messagelog.timestamp_invalid"),
])
def test_record_errors(cls: type[ChainBrokenError | StampInvalidError], code: str) -> None:
    err = cls(7, "record hash differs")
    assert isinstance(err, XRoadError)
    assert err.code == code
    assert (err.sequence, err.reason) == (7, "record hash differs")
    assert "record 7" in err.message
    assert "record hash differs" in err.message


def test_evidence_error_names_the_record_or_the_archive() -> None:
    err = EvidenceError(12, "OCSP: revoked")
    assert err.code == "server.messagelog.evidence_invalid"
    assert (err.sequence, err.reason) == (12, "OCSP: revoked")
    assert err.message == "evidence of record 12 does not verify: OCSP: revoked"
    assert "evidence of archive does not verify" in EvidenceError(None, "link").message


def test_every_exported_error_class_is_tested() -> None:
    exported = {
        obj for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, XRoadError)
    }
    assert exported == {cls for cls, _, _ in _HIERARCHY} | {ChainBrokenError, EvidenceError,
                                                             StampInvalidError, SoapFaultError}


def test_a_soap_fault_keeps_its_code_and_string() -> None:
    err = SoapFaultError("soap:Client.NotFound", "no such person", detail="<detail/>")
    assert isinstance(err, AdapterError)
    assert (err.code, err.status) == ("adapter.soap_fault", 502)
    assert (err.faultcode, err.faultstring, err.detail) == (
        "soap:Client.NotFound", "no such person", "<detail/>")
    assert err.message == ("the SOAP service answered with a fault: soap:Client.NotFound: "
                           "no such person")


def test_code_can_be_overridden_per_instance() -> None:
    err = InvalidSignatureError("bad", code="server.clientproxy.invalid_signature")
    assert err.fault is Fault.CONSUMER_SERVER
    assert err.status == 502


@pytest.mark.parametrize(
    "code", ["nope", "client.no_such_thing", "Server.ServerProxy.AccessDenied"]
)
def test_unregistered_code_refused(code: str) -> None:
    with pytest.raises(ValueError, match="unregistered error code"):
        XRoadError("boom", code=code)


def test_to_json_detail_argument_overrides() -> None:
    err = AccessDeniedError("no", detail="stored")
    assert err.to_json()["detail"] == "stored"
    assert err.to_json("given")["detail"] == "given"
    assert AccessDeniedError("no").to_json() == {
        "type": "server.serverproxy.access_denied", "message": "no", "detail": None,
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Server.ServerProxy.AccessDenied", "server.serverproxy.access_denied"),
        ("Server.ServerProxy.UnknownService", "server.serverproxy.unknown_service"),
        ("Server.ServerProxy.ServiceFailed", "server.serverproxy.service_failed"),
        ("Server.ServerProxy.DatabaseError", "server.serverproxy.database_error"),
        ("Server.ClientProxy.SslAuthenticationFailed",
         "server.clientproxy.ssl_authentication_failed"),
        ("Server.ClientProxy.NetworkError", "server.clientproxy.network_error"),
        ("Client.BadRequest", "client.bad_request"),
        ("Client.InvalidClientIdentifier", "client.invalid_client_identifier"),
        ("Client.MissingHeader", "client.missing_header"),
        ("  Client.BadRequest\n", "client.bad_request"),
        ("Server.ServerProxy.Http2Error", "server.serverproxy.http2_error"),
        ("server.serverproxy.access_denied", "server.serverproxy.access_denied"),
        ("client.bad_request", "client.bad_request"),
    ],
)
def test_normalize_code(old: str, new: str) -> None:
    assert normalize_code(old) == new
    assert normalize_code(new) == new


@pytest.mark.parametrize("bad", ["", "   ", ".", "a..b", ".client", "client."])
def test_normalize_code_refuses_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed error code"):
        normalize_code(bad)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("server.serverproxy.access_denied", "server.serverproxy.access_denied"),
        ("Server.ServerProxy.AccessDenied", "server.serverproxy.access_denied"),
        ("Client.BadRequest", "client.bad_request"),
        ("Server.ClientProxy.GlobalConfOutdated", "server.clientproxy.global_conf_outdated"),
    ],
)
def test_error_for_known_code(code: str, expected: str) -> None:
    err = error_for_code(code, "peer said no", "details")
    assert isinstance(err, XRoadError)
    assert (err.code, err.message, err.detail) == (expected, "peer said no", "details")


@pytest.mark.parametrize(
    ("code", "detail", "expected_code", "expected_detail"),
    [
        ("Server.ServerProxy.DatabaseError", None,
         "server.serverproxy.internal_error", "Server.ServerProxy.DatabaseError"),
        ("server.serverproxy.something_new", None,
         "server.serverproxy.internal_error", "server.serverproxy.something_new"),
        ("Server.ClientProxy.Weird", None,
         "server.clientproxy.internal_error", "Server.ClientProxy.Weird"),
        ("Client.SomethingElse", None,
         "server.clientproxy.internal_error", "Client.SomethingElse"),
        ("totally-unknown", None, "server.clientproxy.internal_error", "totally-unknown"),
        # a detail from the peer must not push the original code out
        ("Server.ServerProxy.DatabaseError", "db down",
         "server.serverproxy.internal_error", "Server.ServerProxy.DatabaseError: db down"),
        # malformed codes are the peer's input, never a crash
        ("", None, "server.clientproxy.internal_error", ""),
        ("a..b", "x", "server.clientproxy.internal_error", "a..b: x"),
        ("...", None, "server.clientproxy.internal_error", "..."),
    ],
)
def test_error_for_unknown_code_keeps_the_original(
    code: str, detail: str | None, expected_code: str, expected_detail: str
) -> None:
    err = error_for_code(code, "peer failed", detail)
    assert err.code == expected_code
    assert err.message == "peer failed"
    assert err.detail == expected_detail
