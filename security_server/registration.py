"""Management requests this security server sends to the registry by itself.

* :class:`ManagementSender` signs a request (:mod:`xchange.management`) with the key of the
  member it concerns -- through the server's signing function: a key in a token signs in
  the token's own thread -- and posts it to the registry's ``/management/requests``,
  returning the registry's answer (request id and state).  The catalogue publisher
  (:mod:`security_server.catalogue`) sends its ``service_catalogue_update`` requests
  through it.
* :class:`ClientUnregistration`: deleting a client through the admin API first sends a
  ``client_delete`` request for it, as X-Road's security server sends a client deletion
  request to the central server, when global configuration says the client is registered
  on this server.  If the request cannot be sent or the registry refuses it, the deletion
  fails (``admin.unregistration_failed``) and the client stays: sent first, so that a
  client is never gone here while nothing asked the registry to forget it.  The registry
  may leave the request pending for an officer; the local deletion does not wait.

The ``xchange ss register`` commands send the same requests by hand
(:mod:`xchange_cli.ss_register`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Final

import aiohttp

from xchange.errors import XRoadError
from xchange.globalconf import GlobalConf
from xchange.identifiers import ClientId, SecurityServerId
from xchange.management import ManagementRequest, new_request, request_payload, seal_request
from xchange.signing import SigningIdentity, sign_payload

__all__ = [
    "ClientUnregistration",
    "ManagementSender",
    "RegistryRequestError",
    "Signer",
    "UnregistrationError",
    "sign_in_thread",
]

_MAX_ANSWER: Final = 64 * 1024

Signer = Callable[[SigningIdentity, bytes], Awaitable[str]]
"""Signs a payload as a member (:meth:`Runtime.sign <security_server.runtime.Runtime.sign>`
in the running server)."""


async def sign_in_thread(identity: SigningIdentity, payload: bytes) -> str:
    """A :data:`Signer` for a key file outside the running server (the command line)."""
    return await asyncio.to_thread(sign_payload, identity, payload)


class RegistryRequestError(XRoadError):
    """A management request could not be sent, or the registry refused it; each use has its
    own code (a subclass)."""

    def __init__(self, message: str, *, registry_code: str | None = None) -> None:
        super().__init__(message)
        self.registry_code = registry_code
        """The code of the registry's refusal, if it refused."""


class UnregistrationError(RegistryRequestError):
    """A client's deletion request did not reach the registry or was refused."""

    default_code = "admin.unregistration_failed"


def _refusal(status: int, body: bytes, error: type[RegistryRequestError],
             what: str) -> RegistryRequestError:
    try:
        doc = json.loads(body)
        code = str(doc["code"])
        return error(f"the registry refused the {what}: {code}: "
                     f"{doc.get('detail') or doc.get('title')}", registry_code=code)
    except (ValueError, KeyError, TypeError):
        return error(f"the registry refused the {what}: the registry answered HTTP {status}")


class ManagementSender:
    """Signs management requests as the members whose keys this server holds and posts them
    to the registry."""

    def __init__(self, server: SecurityServerId, identities: Mapping[ClientId, SigningIdentity],
                 registry: Callable[[], str], *, timeout: float = 30.0,
                 sign: Signer = sign_in_thread) -> None:
        self.server = server
        self.identities = identities
        self.registry = registry
        """Gives the registry's base URL (read when needed: the anchor may come later)."""
        self.timeout = timeout
        self.sign = sign
        self.session: aiohttp.ClientSession | None = None
        """A session to post with (a running task's); None: one per request."""

    async def send(self, request: ManagementRequest, error: type[RegistryRequestError], *,
                   what: str = "request") -> dict[str, Any]:
        """Sign ``request`` and post it; the registry's answer (``request_id``, ``state``,
        ``kind``).  Raises ``error`` if this server holds no key for the member, the
        registry is not reached, or it refuses (``what`` names the request in messages)."""
        member = request.required_signer()
        identity = self.identities.get(member)
        if identity is None:
            raise error(f"this server holds no signing key for {member}, whose signature "
                        f"a {request.kind} request needs")
        signature = await self.sign(identity, request_payload(request))
        envelope = seal_request(request, signature)
        url = self.registry().rstrip("/") + "/management/requests"
        try:
            async with contextlib.AsyncExitStack() as stack:
                session = self.session
                if session is None:
                    session = await stack.enter_async_context(aiohttp.ClientSession())
                async with session.post(url, data=envelope,
                                        headers={"Content-Type": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=self.timeout)
                                        ) as resp:
                    body = await resp.content.read(_MAX_ANSWER)
                    status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise error(f"the registry at {url} could not be reached "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from exc
        if status != 202:
            raise _refusal(status, body, error, what)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not (isinstance(answer, dict) and isinstance(answer.get("request_id"), str)
                and isinstance(answer.get("state"), str)):
            raise error("the registry's answer is not a management request state")
        return answer


class ClientUnregistration:
    """Asks the registry to forget a client of this server (module docstring)."""

    def __init__(self, sender: ManagementSender, conf: Callable[[], GlobalConf | None],
                 clock: Callable[[], datetime]) -> None:
        self.sender = sender
        self.conf = conf
        """Global configuration in force, or None if there is none."""
        self.clock = clock

    async def __call__(self, client: ClientId) -> dict[str, str] | None:
        """Send ``client``'s ``client_delete`` if global configuration names it a client of
        this server; return the request's id and state, or None if it is not registered
        here.  Raises :class:`UnregistrationError`."""
        conf = self.conf()
        if conf is None:
            raise UnregistrationError(
                f"no global configuration in force: whether {client} is registered at the "
                "registry is not known (delete it with unregister=false to keep it there)")
        if not conf.is_hosted_on(client, self.sender.server):
            return None
        request = new_request("client_delete", self.sender.server, now=self.clock(),
                              client=str(client))
        answer = await self.sender.send(request, UnregistrationError,
                                        what="client deletion request")
        return {"request_id": str(answer["request_id"]), "state": str(answer["state"])}
