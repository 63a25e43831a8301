"""The one exception hierarchy of xchange, with X-Road-style error codes.

Every error that can reach a client carries:

* ``code``   -- an X-Road 7.8-style code (``server.serverproxy.access_denied``), taken from
  :data:`ERROR_CODES`, the one registry of codes;
* ``fault``  -- who is at fault: the client information system, the consumer security server
  (client proxy) or the provider security server (server proxy);
* ``status`` -- the HTTP status a server should answer with.

The tree::

    XRoadError                          any error with an X-Road code
    ├── ClientError                     the caller's request is wrong      (client.*)
    │   └── BadRequestError             malformed message, header or identifier
    ├── InvalidSignatureError           a signature, certificate or hash binding does not
    │                                   verify (code says which side found it)
    ├── CertificateValidationError      a certificate is revoked or of unknown status, or its
    │                                   OCSP response is missing, invalid or stale
    ├── TimestampingFailedError         no time-stamp could be obtained or verified
    ├── ChainBrokenError                a message log's hash chain does not verify
    ├── EvidenceError                   a logged message's evidence or an archive link does
    │                                   not verify
    ├── StampInvalidError               a logged record's time-stamp (token or Merkle path)
    │                                   does not verify
    ├── AdminError                      an admin API refuses a call              (admin.*)
    │   ├── AdminUnauthorizedError      no valid bearer token
    │   └── AdminForbiddenError         the token's roles lack the permission
    ├── ManagementRequestError          a security server's management request is refused
    │                                   (registry.management.*)
    ├── AdapterError                    an adapter (a bridge to a data silo) refuses a
    │                                   request or its silo fails          (adapter.*)
    │   └── SoapFaultError              a legacy SOAP service answered with a fault
    ├── ClientProxyError                the consumer security server refuses or fails
    │   │                               (server.clientproxy.*)
    │   ├── UnknownMemberError          client not registered on this security server
    │   ├── GlobalConfOutdatedError     global configuration expired or not yet loaded
    │   ├── InvalidGlobalConfError      a global configuration document is not acceptable
    │   └── ClientProxyLoggingError     the message log could not be written
    └── ServerProxyError                the provider security server refuses or fails
        │                               (server.serverproxy.*)
        ├── AccessDeniedError           the client has no right to the service
        ├── UnknownServiceError         no such service on the provider
        ├── ServiceFailedError          the provider system is down, slow or broken
        └── ServerProxyLoggingError     the message log could not be written

A module that wraps a foreign library (cryptography, lxml, jsonschema, aiohttp, SQLAlchemy)
catches its exceptions at the boundary and raises one of these ``from`` them; nothing else
ever reaches a client.  Servers turn an :class:`XRoadError` into the wire form in one place
(the JSON body ``{"type", "message", "detail"}`` and the ``X-Road-Error`` header for REST).

Codes are written in X-Road 7.8 style.  :func:`normalize_code` also accepts the older
``Server.ServerProxy.AccessDenied`` style on input.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass

__all__ = [
    "ERROR_CODES",
    "AccessDeniedError",
    "AdapterError",
    "AdminError",
    "AdminForbiddenError",
    "AdminUnauthorizedError",
    "BadRequestError",
    "CertificateValidationError",
    "ChainBrokenError",
    "ClientError",
    "ClientProxyError",
    "ClientProxyLoggingError",
    "ErrorCode",
    "EvidenceError",
    "Fault",
    "GlobalConfOutdatedError",
    "InvalidGlobalConfError",
    "InvalidSignatureError",
    "ManagementRequestError",
    "ServerProxyError",
    "ServerProxyLoggingError",
    "ServiceFailedError",
    "SoapFaultError",
    "StampInvalidError",
    "TimestampingFailedError",
    "UnknownMemberError",
    "UnknownServiceError",
    "XRoadError",
    "error_for_code",
    "normalize_code",
]


class Fault(enum.Enum):
    """Who caused an error."""

    CLIENT = "client"
    """The client information system sent something wrong."""
    CONSUMER_SERVER = "consumer_server"
    """The consumer security server (client proxy)."""
    PROVIDER_SERVER = "provider_server"
    """The provider security server (server proxy) or the provider system behind it."""


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One entry of the code registry."""

    code: str
    fault: Fault
    status: int
    description: str


def _codes(*entries: ErrorCode) -> dict[str, ErrorCode]:
    # A code defined twice would silently keep only its last entry: refused at import.
    twice = sorted(c for c, n in Counter(e.code for e in entries).items() if n > 1)
    if twice:
        raise ValueError(f"error code(s) defined twice: {', '.join(twice)}")
    return {e.code: e for e in entries}


_C, _CP, _SP = Fault.CLIENT, Fault.CONSUMER_SERVER, Fault.PROVIDER_SERVER

ERROR_CODES: dict[str, ErrorCode] = _codes(
    # -- the client information system's mistakes
    ErrorCode("client.bad_request", _C, 400, "The request does not follow the protocol."),
    ErrorCode("client.invalid_client_identifier", _C, 400, "Malformed client identifier."),
    ErrorCode("client.invalid_service_identifier", _C, 400, "Malformed service identifier."),
    ErrorCode("client.missing_header", _C, 400, "A mandatory X-Road header is missing."),
    ErrorCode("client.unsupported_method", _C, 405, "HTTP method not supported here."),
    ErrorCode("client.payload_too_large", _C, 413, "The message exceeds the size limit."),
    # -- the client information system's SOAP mistakes (X-Road Message Protocol 4.0)
    ErrorCode("client.invalid_soap", _C, 400,
              "The SOAP message is not well-formed, not a SOAP 1.1 envelope, or holds what "
              "is refused outright: a DOCTYPE or entity, processing instructions, nesting "
              "too deep."),
    ErrorCode("client.invalid_content_type", _C, 415,
              "The SOAP message's Content-Type is not text/xml or multipart/related with the "
              "SOAP part first, or its charset is not UTF-8."),
    ErrorCode("client.duplicate_header", _C, 400, "An X-Road SOAP header field appears twice."),
    ErrorCode("client.invalid_header", _C, 400,
              "An X-Road SOAP header field does not match its XML Schema "
              "(schemas/xroad-soap-4.0.xsd) or is not supported."),
    ErrorCode("client.invalid_protocol_version", _C, 400,
              "The protocolVersion header is not 4.x."),
    ErrorCode("client.invalid_body", _C, 400,
              "The SOAP body does not hold exactly one element named after the service code."),
    ErrorCode("client.invalid_soap_action", _C, 400,
              "The SOAPAction HTTP header is not a quoted string."),
    # -- consumer security server
    ErrorCode("server.clientproxy.unknown_member", _CP, 400,
              "The client is not registered on this security server."),
    ErrorCode("server.clientproxy.unknown_service", _CP, 404,
              "The service's provider is not known in global configuration."),
    ErrorCode("server.clientproxy.global_conf_outdated", _CP, 503,
              "Global configuration is expired or was never loaded."),
    ErrorCode("server.clientproxy.invalid_global_conf", _CP, 502,
              "A downloaded global configuration failed verification; the last good copy "
              "is kept."),
    ErrorCode("server.clientproxy.logging_failed", _CP, 500,
              "The message log could not be written; the message was not sent."),
    ErrorCode("server.clientproxy.network_error", _CP, 502,
              "The provider security server could not be reached."),
    ErrorCode("server.clientproxy.ssl_authentication_failed", _CP, 502,
              "The provider security server's TLS certificate is not the registered one."),
    ErrorCode("server.clientproxy.invalid_signature", _CP, 502,
              "The response's signature does not verify."),
    ErrorCode("server.clientproxy.invalid_request_hash", _CP, 502,
              "The response is not bound to the request that was sent."),
    ErrorCode("server.clientproxy.inconsistent_response", _CP, 502,
              "The SOAP response's X-Road header fields do not say what the request's said."),
    ErrorCode("server.clientproxy.cert_validation", _CP, 502,
              "A certificate of the provider security server (or of this server) is revoked "
              "or of unknown status, or its OCSP response is missing, invalid or stale."),
    ErrorCode("server.clientproxy.timestamping_failed", _CP, 503,
              "Time-stamping has failed for longer than allowed; messages are refused until "
              "it recovers."),
    ErrorCode("server.clientproxy.cannot_create_signature", _CP, 500,
              "The client's signing key (a key file or a PKCS#11 token) could not sign; the "
              "request was not sent."),
    ErrorCode("server.clientproxy.internal_error", _CP, 500, "Internal error."),
    # -- provider security server
    ErrorCode("server.serverproxy.access_denied", _SP, 403,
              "The client has no right to call this service."),
    ErrorCode("server.serverproxy.unknown_service", _SP, 404,
              "The service is not provided by this security server."),
    ErrorCode("server.serverproxy.unknown_member", _SP, 404,
              "The service's provider is not hosted on this security server."),
    ErrorCode("server.serverproxy.service_failed", _SP, 502,
              "The provider system failed, timed out or could not be reached."),
    ErrorCode("server.serverproxy.inconsistent_response", _SP, 502,
              "The provider system's SOAP response does not copy the request's X-Road header "
              "fields in the same order with the same values, or is not a SOAP message."),
    ErrorCode("server.serverproxy.ssl_authentication_failed", _SP, 401,
              "The calling security server's TLS certificate is not registered."),
    ErrorCode("server.serverproxy.invalid_signature", _SP, 400,
              "The request's signature does not verify."),
    ErrorCode("server.serverproxy.duplicate_message_id", _SP, 409,
              "This request (its signature's one-time value, jti) was already received."),
    ErrorCode("server.serverproxy.stale_message", _SP, 400,
              "The request was signed too long ago (or in the future)."),
    ErrorCode("server.serverproxy.global_conf_outdated", _SP, 503,
              "Global configuration is expired or was never loaded."),
    ErrorCode("server.serverproxy.logging_failed", _SP, 500,
              "The message log could not be written; the message was not passed on."),
    ErrorCode("server.serverproxy.bad_request", _SP, 400,
              "The message between security servers does not follow the protocol."),
    ErrorCode("server.serverproxy.cert_validation", _SP, 401,
              "A certificate of the calling security server or member is revoked or of "
              "unknown status, or its OCSP response is missing, invalid or stale."),
    ErrorCode("server.serverproxy.timestamping_failed", _SP, 503,
              "Time-stamping has failed for longer than allowed; messages are refused until "
              "it recovers."),
    ErrorCode("server.serverproxy.cannot_create_signature", _SP, 500,
              "The provider's signing key (a key file or a PKCS#11 token) could not sign the "
              "response."),
    ErrorCode("server.serverproxy.internal_error", _SP, 500, "Internal error."),
    # -- admin APIs (registry and security server); the caller is the administrator
    ErrorCode("admin.unauthorized", _C, 401,
              "No valid admin bearer token: missing, malformed, expired, for another server, "
              "or not signed by this server's admin-token key."),
    ErrorCode("admin.forbidden", _C, 403,
              "The token is valid but none of its roles grants this operation."),
    ErrorCode("admin.bad_request", _C, 400,
              "The admin request is malformed, does not match the API's schema, or breaks a "
              "rule of the data it changes."),
    ErrorCode("admin.not_found", _C, 404, "No such object on this server."),
    ErrorCode("admin.conflict", _C, 409,
              "The change conflicts with what the server holds: the object already exists, is "
              "still in use, or is in the wrong state."),
    ErrorCode("admin.invalid_description", _C, 422,
              "A service description (OpenAPI 3 or WSDL) cannot be read or is not acceptable."),
    ErrorCode("admin.description_unreachable", _C, 422,
              "The service description could not be downloaded from its URL."),
    ErrorCode("admin.publication_failed", _C, 424,
              "The service catalogue could not be published: the registry was not reached or "
              "refused the update (the reason follows); the security server tries again."),
    ErrorCode("admin.unregistration_failed", _C, 424,
              "The client's deletion request could not be sent to the registry, or the "
              "registry refused it (the reason follows); the client was not deleted."),
    ErrorCode("admin.invalid_backup", _C, 422,
              "A configuration backup does not decrypt with the key given, was altered, or "
              "does not match the backup schema; nothing was restored."),
    # -- management requests from security servers to the registry
    ErrorCode("registry.management.bad_request", _C, 400,
              "The management request is malformed or names unknown objects."),
    ErrorCode("registry.management.invalid_signature", _C, 400,
              "A signature of the management request is missing or does not verify, or is "
              "not by the member (or auth key) the request needs."),
    ErrorCode("registry.management.not_allowed", _C, 403,
              "The signer may not ask for this (for example another member's subsystem)."),
    ErrorCode("registry.management.duplicate_request", _C, 409,
              "A request with this id was already received (replay refused)."),
    ErrorCode("registry.management.stale_request", _C, 400,
              "The request was made too long ago or in the future."),
    # -- security-server administration's effect on traffic
    ErrorCode("server.clientproxy.is_authentication_failed", _CP, 401,
              "The information system did not connect the way its client's connection type "
              "requires: HTTPS, or HTTPS with a TLS certificate registered for the client."),
    ErrorCode("server.serverproxy.service_disabled", _SP, 503,
              "The service exists but its administrator has disabled it."),
    # -- message log audit (either server's own log; Fault has no "this server" value)
    ErrorCode("server.messagelog.chain_broken", _SP, 500,
              "The message log's hash chain does not verify."),
    ErrorCode("server.messagelog.timestamp_invalid", _SP, 500,
              "A logged record's time-stamp token or Merkle path does not verify."),
    ErrorCode("server.messagelog.bad_container", _SP, 400,
              "An archive file or ASiC-E container is malformed or unsafe to open."),
    ErrorCode("server.messagelog.evidence_invalid", _SP, 500,
              "A logged message's evidence (signature, OCSP response, time-stamp, Merkle path "
              "or archive link) does not verify."),
    ErrorCode("server.messagelog.decryption_failed", _SP, 400,
              "An encrypted archive cannot be opened with the key given."),
    # -- adapters: the provider system in front of a data silo (docs/adapters.md)
    ErrorCode("adapter.bad_request", _C, 400,
              "A parameter is missing, unknown, or not of its declared type."),
    ErrorCode("adapter.not_found", _C, 404,
              "No such operation, or no record matches the request."),
    ErrorCode("adapter.access_denied", _C, 403,
              "The consumer subsystem has been granted no fields of this service."),
    ErrorCode("adapter.timeout", _SP, 504,
              "The data silo did not answer within the service's time limit."),
    ErrorCode("adapter.backend_failed", _SP, 502,
              "The data silo failed or answered something the adapter cannot use."),
    ErrorCode("adapter.unavailable", _SP, 503,
              "The data silo cannot be reached now."),
    ErrorCode("adapter.soap_fault", _SP, 502,
              "The legacy SOAP service behind the adapter answered with a SOAP fault."),
)


class XRoadError(Exception):
    """Base of every xchange error.  ``code`` must be a key of :data:`ERROR_CODES`."""

    default_code = "server.clientproxy.internal_error"

    def __init__(self, message: str, *, code: str | None = None, detail: str | None = None):
        super().__init__(message)
        code = code or self.default_code
        if code not in ERROR_CODES:
            raise ValueError(f"unregistered error code {code!r}")
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def fault(self) -> Fault:
        return ERROR_CODES[self.code].fault

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code].status

    def to_json(self, detail: str | None = None) -> dict[str, str | None]:
        """The X-Road REST error body ``{"type", "message", "detail"}``."""
        return {"type": self.code, "message": self.message, "detail": detail or self.detail}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class ClientError(XRoadError):
    default_code = "client.bad_request"


class BadRequestError(ClientError):
    default_code = "client.bad_request"


class InvalidSignatureError(XRoadError):
    """A signature, certificate or hash binding does not verify.

    The code depends on where it was found (client proxy or server proxy); the default is
    the provider's view of a bad request signature.
    """

    default_code = "server.serverproxy.invalid_signature"


class CertificateValidationError(XRoadError):
    """A certificate is revoked or of unknown status, or the OCSP response that should prove
    its status is missing, not signed by the right responder, for another certificate, or
    stale.  Like :class:`InvalidSignatureError`, the code says which side found it."""

    default_code = "server.serverproxy.cert_validation"


class TimestampingFailedError(XRoadError):
    """A time-stamp could not be obtained from the TSA or does not verify."""

    default_code = "server.clientproxy.timestamping_failed"


class ClientProxyError(XRoadError):
    default_code = "server.clientproxy.internal_error"


class UnknownMemberError(ClientProxyError):
    default_code = "server.clientproxy.unknown_member"


class GlobalConfOutdatedError(ClientProxyError):
    default_code = "server.clientproxy.global_conf_outdated"


class InvalidGlobalConfError(ClientProxyError):
    """A global configuration document (or anchor) is malformed, unsigned or not acceptable.

    Raised when a document is offered; the previous good copy stays in force.
    """

    default_code = "server.clientproxy.invalid_global_conf"


class ChainBrokenError(XRoadError):
    """A message log's hash chain does not verify at ``sequence``; ``reason`` says how."""

    default_code = "server.messagelog.chain_broken"

    def __init__(self, sequence: int, reason: str) -> None:
        super().__init__(f"message log chain broken at record {sequence}: {reason}")
        self.sequence = sequence
        self.reason = reason


class EvidenceError(XRoadError):
    """Evidence of record ``sequence`` does not verify (``sequence`` is ``None`` when the
    fault is in an archive as a whole, e.g. its link to the previous archive)."""

    default_code = "server.messagelog.evidence_invalid"

    def __init__(self, sequence: int | None, reason: str) -> None:
        where = "archive" if sequence is None else f"record {sequence}"
        super().__init__(f"evidence of {where} does not verify: {reason}")
        self.sequence = sequence
        self.reason = reason


class StampInvalidError(XRoadError):
    """The time-stamp of record ``sequence`` does not verify; ``reason`` says how."""

    default_code = "server.messagelog.timestamp_invalid"

    def __init__(self, sequence: int, reason: str) -> None:
        super().__init__(f"time-stamp of message log record {sequence} does not verify: "
                         f"{reason}")
        self.sequence = sequence
        self.reason = reason


class AdminError(XRoadError):
    """An admin API (registry or security server) refuses a call."""

    default_code = "admin.unauthorized"


class AdminUnauthorizedError(AdminError):
    """The caller did not prove who it is: no token, or one that does not verify."""

    default_code = "admin.unauthorized"


class AdminForbiddenError(AdminError):
    """The caller is known, but none of its roles grants the operation."""

    default_code = "admin.forbidden"


class ManagementRequestError(XRoadError):
    """The registry refuses a management request from a security server."""

    default_code = "registry.management.bad_request"


class AdapterError(XRoadError):
    """An adapter refuses a request (``adapter.bad_request``, ``not_found``,
    ``access_denied``) or its data silo fails (``adapter.backend_failed``, ``timeout``,
    ``unavailable``); the code says which."""

    default_code = "adapter.backend_failed"


class SoapFaultError(AdapterError):
    """A legacy SOAP service answered with a fault; ``faultcode`` and ``faultstring`` as
    received."""

    default_code = "adapter.soap_fault"

    def __init__(self, faultcode: str, faultstring: str, detail: str | None = None) -> None:
        super().__init__(f"the SOAP service answered with a fault: {faultcode}: {faultstring}",
                         detail=detail)
        self.faultcode = faultcode
        self.faultstring = faultstring


class ClientProxyLoggingError(ClientProxyError):
    default_code = "server.clientproxy.logging_failed"


class ServerProxyError(XRoadError):
    default_code = "server.serverproxy.internal_error"


class AccessDeniedError(ServerProxyError):
    default_code = "server.serverproxy.access_denied"


class UnknownServiceError(ServerProxyError):
    default_code = "server.serverproxy.unknown_service"


class ServiceFailedError(ServerProxyError):
    default_code = "server.serverproxy.service_failed"


class ServerProxyLoggingError(ServerProxyError):
    default_code = "server.serverproxy.logging_failed"


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalize_code(code: str) -> str:
    """Return the 7.8-style form of an X-Road error code.

    ``Server.ServerProxy.AccessDenied`` -> ``server.serverproxy.access_denied``.  The first
    two parts (``Server.ServerProxy``) are lowered whole; the last is snake-cased.  Already
    normalised codes are returned unchanged.
    """
    parts = code.strip().split(".")
    if not parts or not all(parts):
        raise ValueError(f"malformed error code {code!r}")
    head = [p.lower() for p in parts[:-1]]
    tail = _CAMEL.sub("_", parts[-1]).lower()
    return ".".join([*head, tail])


def error_for_code(code: str, message: str, detail: str | None = None) -> XRoadError:
    """Rebuild an error received from a peer (normalising old-style codes).

    Unknown codes become an internal error of the side that reported them, keeping the
    original code in ``detail`` so that nothing is lost.
    """
    try:
        normal = normalize_code(code)
    except ValueError:
        # A peer's malformed code is peer input, not a programming error: keep it in detail.
        normal = ""
    if normal in ERROR_CODES:
        return XRoadError(message, code=normal, detail=detail)
    fallback = (
        "server.serverproxy.internal_error"
        if normal.startswith("server.serverproxy")
        else "server.clientproxy.internal_error"
    )
    return XRoadError(message, code=fallback, detail=f"{code}: {detail}" if detail else code)
