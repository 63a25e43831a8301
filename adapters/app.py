"""The adapter's HTTP server: a provider information system behind a security server.

Routes, per service ``CODE`` of the configuration:

* ``GET /CODE{operation path}``: each operation of the service's backend;
* ``GET /CODE/openapi.json``: the service's OpenAPI 3 document (the security server
  registers it as the service description; service URL ``http://adapter/CODE``);

and ``GET /health`` (every silo answers: 200, else 503) and ``GET /metrics`` (Prometheus text).

Per request: the caller's address must be in ``allowed_networks`` (the provider's security
server: the adapter believes its headers); the consumer is the ``X-Road-Client`` header it
passes on; a consumer granted no fields gets 403 before anything else happens.  Parameters
are parsed to their declared types (400), the backend runs the query under the service's
timeout (504), fields not granted are removed, and the data subjects of the answer are named
in ``X-Xchange-Data-Subjects``.  Errors are JSON ``{"type", "message", "detail"}`` with an
``adapter.*`` code; nothing else (no stack trace) ever reaches the caller.  One JSON log line
per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from aiohttp import web

from adapters.base import Operation, Query
from adapters.config import AdapterConfig, ServiceConfig, check_operations
from adapters.layer import (
    DATA_SUBJECTS_HEADER,
    data_subjects,
    minimise,
    openapi_document,
    page_of,
    parse_params,
    response_body,
)
from xchange.errors import AdapterError, XRoadError

__all__ = ["CONFIG", "METRICS", "JsonLogFormatter", "Metrics", "create_app", "serve"]

log = logging.getLogger("xchange.adapter")

_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_HEALTH_TIMEOUT: Final = 5.0
_OVERRUN_SECONDS: Final = 5.0
"""A backend that overruns its timeout by this much is abandoned (504) even if it does not
raise :class:`TimeoutError` itself."""


@dataclass
class _Series:
    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(_BUCKETS))


class Metrics:
    """Request counts, errors and latency per service and operation (Prometheus text)."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str], _Series] = {}

    def record(self, service: str, operation: str, status: int, seconds: float) -> None:
        key = (service, operation, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        series = self._latency.setdefault((service, operation), _Series())
        series.count += 1
        series.total += seconds
        for i, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                series.buckets[i] += 1

    def render(self) -> str:
        out = ["# HELP xchange_adapter_requests_total Requests answered, by status.",
               "# TYPE xchange_adapter_requests_total counter"]
        for (svc, op, status), n in sorted(self._requests.items()):
            out.append(f'xchange_adapter_requests_total{{service="{svc}",operation="{op}",'
                       f'status="{status}"}} {n}')
        out += ["# HELP xchange_adapter_errors_total Requests answered with a 5xx status.",
                "# TYPE xchange_adapter_errors_total counter"]
        errors: dict[tuple[str, str], int] = {}
        for (svc, op, status), n in self._requests.items():
            if status >= 500:
                errors[(svc, op)] = errors.get((svc, op), 0) + n
        for (svc, op), n in sorted(errors.items()):
            out.append(f'xchange_adapter_errors_total{{service="{svc}",operation="{op}"}} {n}')
        out += ["# HELP xchange_adapter_request_seconds Time to answer a request.",
                "# TYPE xchange_adapter_request_seconds histogram"]
        for (svc, op), s in sorted(self._latency.items()):
            labels = f'service="{svc}",operation="{op}"'
            for bound, n in zip(_BUCKETS, s.buckets, strict=True):
                out.append(f'xchange_adapter_request_seconds_bucket{{{labels},le="{bound}"}} {n}')
            out.append(f'xchange_adapter_request_seconds_bucket{{{labels},le="+Inf"}} {s.count}')
            out.append(f"xchange_adapter_request_seconds_sum{{{labels}}} {s.total:.6f}")
            out.append(f"xchange_adapter_request_seconds_count{{{labels}}} {s.count}")
        return "\n".join(out) + "\n"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the record's ``fields``."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


CONFIG: Final = web.AppKey("adapter_config", AdapterConfig)
METRICS: Final = web.AppKey("adapter_metrics", Metrics)
_WHERE: Final = web.RequestKey("adapter_where", tuple[str, str, str | None, int])
"""(service, operation, consumer, records returned), for the log line and the metrics."""
_ERROR: Final = web.RequestKey("adapter_error", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(exc: XRoadError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer counted and logged; every error as JSON with its adapter.* code."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except XRoadError as exc:
        response = _error_response(exc)
        request[_ERROR] = exc.code
    except web.HTTPException as exc:
        code = "adapter.not_found" if exc.status == 404 else "adapter.bad_request"
        if exc.status == 405:
            code, text = "client.unsupported_method", f"method {request.method} not allowed"
        else:
            text = f"no such path {request.path!r}" if exc.status == 404 else exc.reason
        response = _error_response(XRoadError(text, code=code))
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except Exception:
        log.exception("internal error", extra={"fields": {"path": request.path}})
        response = _error_response(AdapterError("internal error of the adapter"))
    seconds = time.perf_counter() - started
    where = request.get(_WHERE)
    if where is not None:
        service, operation, consumer, records = where
        request.app[METRICS].record(service, operation, response.status, seconds)
        log.info("request", extra={"fields": {
            "service": service, "operation": operation, "status": response.status,
            "ms": round(seconds * 1000, 3), "consumer": consumer, "records": records,
            "error": request.get(_ERROR)}})
    return response


def _check_peer(request: web.Request) -> None:
    if not request.app[CONFIG].allows(request.remote):
        raise AdapterError(f"{request.remote} is not an allowed address (allowed_networks)",
                           code="adapter.access_denied")


async def _run(service: ServiceConfig, op_name: str, request: web.Request) -> web.Response:
    consumer = request.headers.get("X-Road-Client")
    request[_WHERE] = (service.code, op_name, consumer, 0)
    _check_peer(request)
    granted = service.granted(consumer)
    if not granted:
        raise AdapterError(f"consumer {consumer or '(no X-Road-Client)'} is granted no fields "
                           f"of service {service.code!r}", code="adapter.access_denied")
    op = _operation(service, op_name)
    params = parse_params(op, request.match_info, request.query.items())
    offset, limit = page_of(request.query.items(), service) if op.many else (0, 1)
    query = Query(op, params, offset=offset, limit=limit, timeout=service.timeout)
    try:
        async with asyncio.timeout(service.timeout + _OVERRUN_SECONDS):
            result = await service.backend.run(query)
    except TimeoutError as exc:
        raise AdapterError(f"the data silo did not answer within {service.timeout:g} s",
                           code="adapter.timeout") from exc
    records = minimise(result.records[:limit], op.fields, granted)
    request[_WHERE] = (service.code, op_name, consumer, len(records))
    body = response_body(op, result, records, offset, limit)
    if body is None:
        raise AdapterError("no record matches the request", code="adapter.not_found")
    headers = {}
    if service.data_subject_field is not None:
        subjects = data_subjects(result.records[:limit], service.data_subject_field)
        if subjects is not None:
            headers[DATA_SUBJECTS_HEADER] = subjects
    return web.json_response(body, headers=headers)


def _operation(service: ServiceConfig, name: str) -> Operation:
    """The started backend's operation (its fields may have been learnt at start)."""
    return next(op for op in service.backend.operations() if op.name == name)


async def _openapi(service: ServiceConfig, request: web.Request) -> web.Response:
    _check_peer(request)
    config = request.app[CONFIG]
    return web.json_response(openapi_document(service, service.backend.operations(),
                                              config.title))


async def _health(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    states: dict[str, str] = {}
    for service in config.services:
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT):
                await service.backend.check()
            states[service.code] = "ok"
        except XRoadError as exc:
            states[service.code] = f"failing: {exc.message}"
        except TimeoutError:
            states[service.code] = "failing: no answer in time"
        except Exception as exc:  # the health check must answer, whatever the silo does
            log.warning("health check of %s failed", service.code, exc_info=True)
            states[service.code] = f"failing: {type(exc).__name__}"
    ok = all(v == "ok" for v in states.values())
    return web.json_response({"status": "ok" if ok else "failing", "services": states},
                             status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(),
                        content_type="text/plain", charset="utf-8")


async def _backends(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    started: list[ServiceConfig] = []
    try:
        for service in config.services:
            try:
                await service.backend.start()
            except XRoadError as exc:
                raise AdapterError(f"service {service.code!r} cannot start: {exc.message}",
                                   code=exc.code) from exc
            except TimeoutError as exc:
                raise AdapterError(f"service {service.code!r} cannot start: its silo did not "
                                   "answer in time", code="adapter.unavailable") from exc
            started.append(service)
        check_operations(config)
        log.info("adapter ready", extra={"fields": {
            "services": [s.code for s in config.services]}})
        yield
    finally:
        for service in started:
            await service.backend.close()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "xchange-adapter"  # not the software's version


def create_app(config: AdapterConfig) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app.on_response_prepare.append(_server_header)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    for service in config.services:
        app.router.add_get(f"/{service.code}/openapi.json", partial(_openapi, service))
        for op in service.backend.operations():
            app.router.add_route(op.method, f"/{service.code}{op.path}",
                                 partial(_run, service, op.name))
    app.cleanup_ctx.append(_backends)
    return app


def serve(config: AdapterConfig) -> None:
    """Run the adapter until interrupted; a backend that cannot start stops the process."""
    if config.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())
    web.run_app(create_app(config), host=config.host, port=config.port, print=None,
                access_log=None)
