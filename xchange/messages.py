"""The requests the security servers carry: REST (:class:`~xchange.rest.RestRequest`) or
SOAP (:class:`~xchange.soap.envelope.SoapRequest`), told apart by their header part's
``type``.  Both are signed, logged, time-stamped and answered the same way; only what the
provider side sends to its system and does with the answer differs.
"""

from __future__ import annotations

from xchange.canonical import parse_json
from xchange.errors import BadRequestError
from xchange.rest import RestRequest
from xchange.soap.envelope import SoapRequest

__all__ = ["Request", "request_from_header_part"]

Request = RestRequest | SoapRequest


def request_from_header_part(data: bytes) -> Request:
    """Parse a request header part received from a peer security server."""
    try:
        doc = parse_json(data)
    except BadRequestError as exc:
        raise BadRequestError(f"header part is not UTF-8 JSON: {exc.message}",
                              code="server.serverproxy.bad_request") from exc
    kind = doc.get("type") if isinstance(doc, dict) else None
    # Parsed once; the canonical-form check there ties the document to these bytes.
    if kind == "xchange-soap-request":
        return SoapRequest.from_header_part(data, parsed=doc)
    return RestRequest.from_header_part(data, parsed=doc)
