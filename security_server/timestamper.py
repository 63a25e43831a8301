"""The security server's time-stamping client (RFC 3161 over HTTP, section 3.4).

:class:`TsaClient` gets a verified time-stamp token for a hash: it sends a ``TimeStampReq``
with a fresh random nonce to the federation's approved TSAs, in the order global
configuration lists them, until one answers with a token that verifies
(:func:`xchange.timestamp.verify_timestamp_token`, trust by exact TSA certificate).  The
message log uses it for its batch time-stamps; what to stamp and when is the log's business.

A failure -- no approved TSA, every TSA unreachable, slow, refusing, or answering with a token
that does not verify -- raises :class:`~xchange.errors.TimestampingFailedError` naming each
TSA and what went wrong with it.  Nothing here retries later or keeps state between calls.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType

import aiohttp
from cryptography import x509

from xchange.errors import TimestampingFailedError
from xchange.globalconf import ApprovedTSA
from xchange.timestamp import (
    MAX_RESPONSE_BYTES,
    QUERY_TYPE,
    REPLY_TYPE,
    TimestampToken,
    parse_timestamp_response,
    timestamp_request,
    verify_timestamp_token,
)

__all__ = ["TsaClient"]

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TsaClient:
    """Requests and verifies time-stamp tokens from the approved TSAs.

    ``tsas`` returns the approved TSAs in force (``lambda: conf.approved_tsas`` of the current
    global configuration), read on every call so that configuration changes apply at once.
    ``session`` is used if given (and left open); otherwise the client owns one, closed by
    :meth:`close` or ``async with``.  ``timeout`` (seconds) bounds each TSA's attempt.
    ``code`` is the error code of failures (the client proxy's or the server proxy's
    ``timestamping_failed``).
    """

    def __init__(
        self,
        tsas: Callable[[], Sequence[ApprovedTSA]],
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        hash_alg: str = "sha256",
        clock: Callable[[], datetime] = _utc_now,
        code: str = TimestampingFailedError.default_code,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._tsas = tsas
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._hash_alg = hash_alg
        self._clock = clock
        self._code = code

    async def __aenter__(self) -> TsaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client made it (a session given in stays open)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def timestamp(self, data_hash: bytes) -> TimestampToken:
        """A verified token for ``data_hash`` from the first approved TSA that gives one."""
        tsas = tuple(self._tsas())
        if not tsas:
            raise TimestampingFailedError(
                "no time-stamping authority is approved in global configuration", code=self._code
            )
        # Every TSA's token must verify against any approved TSA certificate: trust is the
        # federation's list, not the URL that answered.
        certs = [t.certificate for t in tsas]
        failures = []
        for tsa in tsas:
            try:
                return await self._ask(tsa, data_hash, certs)
            except TimestampingFailedError as exc:
                log.warning("time-stamping by %s (%s) failed: %s", tsa.name, tsa.url, exc.message)
                failures.append(f"{tsa.name}: {exc.message}")
        raise TimestampingFailedError(
            "no approved TSA gave a valid time-stamp: " + "; ".join(failures), code=self._code
        )

    async def _ask(
        self, tsa: ApprovedTSA, data_hash: bytes, certs: Sequence[x509.Certificate]
    ) -> TimestampToken:
        nonce = secrets.randbits(64) or 1
        query = timestamp_request(data_hash, hash_alg=self._hash_alg, nonce=nonce)
        reply = await self._post(tsa.url, query)
        token = parse_timestamp_response(
            reply, data_hash=data_hash, nonce=nonce, hash_alg=self._hash_alg, code=self._code
        )
        return verify_timestamp_token(
            token, data_hash=data_hash, tsa_certs=certs, at=self._clock(),
            hash_alg=self._hash_alg, code=self._code,
        )

    async def _post(self, url: str, query: bytes) -> bytes:
        if self._closed:
            raise RuntimeError("TsaClient is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url, data=query, headers={"Content-Type": QUERY_TYPE}, timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    raise TimestampingFailedError(f"HTTP status {resp.status}", code=self._code)
                if resp.content_type != REPLY_TYPE:
                    raise TimestampingFailedError(
                        f"answered {resp.content_type}, not {REPLY_TYPE}", code=self._code
                    )
                body = await resp.content.read(MAX_RESPONSE_BYTES + 1)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise TimestampingFailedError(
                f"could not be reached: {reason or type(exc).__name__}", code=self._code
            ) from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise TimestampingFailedError("answer too large", code=self._code)
        return body
