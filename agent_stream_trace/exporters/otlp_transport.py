"""Sending encoded OTLP requests, through the stock OpenTelemetry exporters' transport.

Settings follow the standard `OTEL_EXPORTER_OTLP_*` variables (argument, then the TRACES_
variable, then the generic one, then the spec default). Transport, retries, TLS and headers
are the stock exporters' own: HTTP through `OTLPSpanExporter`'s client (retries 429/502/503/504
and connection errors with jittered 2^n backoff under one deadline, honours Retry-After, a 4xx
is an answer) and gRPC through the stock gRPC exporter's retry loop, limited here to
UNAVAILABLE and RESOURCE_EXHAUSTED (the gRPC 503 and 429). We only hand them bytes we encoded
ourselves instead of SDK span objects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import SplitResult, urlsplit

from ..errors import MissingExtraError, UsageError

Protocol_ = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[str, ...] = ("grpc", "http/protobuf")

ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
ENV_TRACES_HEADERS = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
ENV_TIMEOUT = "OTEL_EXPORTER_OTLP_TIMEOUT"
ENV_TRACES_TIMEOUT = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"

DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_TIMEOUT_S = 10.0
TRACES_PATH = "/v1/traces"


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    """Where and how to send. `endpoint` is the URL requests go to (for HTTP, with /v1/traces)."""

    protocol: Protocol_
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def destination(self) -> str:
        """The key under which the database remembers what this backend acknowledged (stored,
        and printed: without a password the endpoint URL may carry)."""
        return destination_key(self.protocol, self.endpoint)

    @property
    def shown_endpoint(self) -> str:
        """The endpoint as messages show it: its password replaced (see hidden_password)."""
        return hidden_password(self.endpoint)

    def redact(self, text: str) -> str:
        """`text` (a transport's error message, say) without the endpoint's password."""
        user, password = _credentials(self.endpoint)
        if not password:
            return text
        text = text.replace(f"{user}:{password}@", f"{user}:***@")
        return text.replace(password, "***") if len(password) >= 4 else text


def destination_key(protocol: str, endpoint: str) -> str:
    return f"{protocol} {hidden_password(endpoint)}"


def hidden_password(url: str) -> str:
    """`url` with the password of its `user:password@` replaced by `***`: never shown or stored
    (nor anything derived from it, which could be guessed back), while two users of one
    collector stay two destinations, and a new password keeps the destination."""
    user, password = _credentials(url)
    return url.replace(f"{user}:{password}@", f"{user}:***@", 1) if password else url


def _credentials(url: str) -> tuple[str, str]:
    """(user, password) of the URL's authority, '' where absent. Parsed as a URL, so an '@' in
    its path, query or fragment is not taken for them; a URL without scheme ('user:pw@host:4317')
    is read as an authority, and one that does not parse by its text before the first '/'."""
    try:
        authority = _split(url).netloc
    except ValueError:  # e.g. an unclosed IPv6 bracket (resolve_settings refuses such a URL)
        authority = url.split("://", 1)[-1].split("/", 1)[0]
    info = authority.rpartition("@")[0]
    user, _, password = info.partition(":")
    return user, password


def _split(url: str) -> SplitResult:
    """`url` split as a URL; one without scheme ('host:4317', 'user:pw@host') as an authority."""
    return urlsplit(url if "://" in url else "//" + url)


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    status: str = ""  # "HTTP 400", "UNAVAILABLE", "connection refused"...
    detail: str = ""
    retryable: bool = False  # the failure was a transient one that outlasted the retries


class Sender(Protocol):
    def send(self, payload: bytes, spans: int) -> SendResult: ...
    def close(self) -> None: ...


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """`K=V` arguments (repeatable) as a dict; values may hold '='."""
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The argument is not echoed: it is likely a secret ("Authorization: Bearer ...").
            raise UsageError("--header wants KEY=VALUE (one was given without '=', or without a key)",
                             hint="e.g. --header 'authorization=Bearer TOKEN'")
        headers[key.strip().lower()] = value.strip()
    return headers


def resolve_settings(
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Sequence[str] = (),
    timeout_s: float | None = None,
) -> OtlpSettings:
    """Argument, then OTEL_EXPORTER_OTLP_TRACES_*, then OTEL_EXPORTER_OTLP_*, then the default.

    `endpoint` means what OTEL_EXPORTER_OTLP_ENDPOINT means: a base URL to which HTTP adds
    /v1/traces. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used exactly as given.
    """
    proto = protocol or _env(ENV_TRACES_PROTOCOL, ENV_PROTOCOL) or "http/protobuf"
    if proto not in PROTOCOLS:
        raise UsageError(f"unsupported OTLP protocol {proto!r}", hint="use grpc or http/protobuf")
    traces_endpoint = None if endpoint else _env(ENV_TRACES_ENDPOINT)
    if traces_endpoint is not None:
        url = traces_endpoint
    else:
        base = endpoint or _env(ENV_ENDPOINT) or (DEFAULT_HTTP_ENDPOINT if proto == "http/protobuf" else DEFAULT_GRPC_ENDPOINT)
        if "://" not in base:
            base = f"http://{base}"
        url = base.rstrip("/") + TRACES_PATH if proto == "http/protobuf" else base
    try:
        parts = _split(url)
        parts.port, parts.hostname  # noqa: B018 (they raise for what urlsplit lets through)
    except ValueError:
        # The exporters raised it later, as a traceback quoting the URL. Not quoted here: a
        # password with an unencoded / ? or # is what usually breaks it (a port "pa" of
        # "user:pa?ss@host"), and the text up to its last '@' is hidden.
        scheme, sep, rest = url.partition("://") if "://" in url else ("", "", url)
        shown = f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
        raise UsageError(f"the OTLP endpoint {shown} is not a valid URL",
                         hint="percent-encode / ? # @ : in a user name or password (%2F %3F %23 %40 %3A)") from None
    merged: dict[str, str] = {}
    env_headers = _env(ENV_TRACES_HEADERS, ENV_HEADERS)
    if env_headers:
        from opentelemetry.util.re import parse_env_headers

        # OpenTelemetry skips an entry it cannot read with a warning that quotes it, a token
        # likely ("Authorization: Bearer ..."): its warning is held back here, and the variable
        # refused without quoting it (its own rules decide what it cannot read).
        refused: list[logging.LogRecord] = []

        def hold(record: logging.LogRecord) -> bool:
            refused.append(record)
            return False

        otel_log = logging.getLogger("opentelemetry.util.re")
        # Its warning must reach the filter even where a caller quieted that logger.
        level, disabled = otel_log.level, otel_log.disabled
        otel_log.setLevel(logging.WARNING)
        otel_log.disabled = False
        otel_log.addFilter(hold)
        try:
            parsed = parse_env_headers(env_headers, liberal=True)
        finally:
            otel_log.removeFilter(hold)
            otel_log.setLevel(level)
            otel_log.disabled = disabled
        if refused:
            name = ENV_TRACES_HEADERS if _env(ENV_TRACES_HEADERS) else ENV_HEADERS
            raise UsageError(f"${name} holds an entry that is not KEY=VALUE (not shown: it may be a secret)",
                             hint="entries are comma-separated key=value pairs, e.g. authorization=Bearer%20TOKEN")
        merged.update(parsed)
    merged.update(parse_headers(headers))
    if timeout_s is None:
        raw = _env(ENV_TRACES_TIMEOUT, ENV_TIMEOUT)
        try:
            timeout_s = float(raw) if raw is not None else DEFAULT_TIMEOUT_S
        except ValueError:
            raise UsageError(f"${ENV_TIMEOUT} must be a number of seconds, got {raw!r}") from None
    return OtlpSettings(proto, url, merged, float(timeout_s))  # type: ignore[arg-type]


def _short_reason(error: BaseException | None) -> str:
    """requests' connection errors are paragraphs; keep the part a person acts on."""
    text = str(error or "no response")
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "unknown host"), ("CERTIFICATE_VERIFY_FAILED", "TLS certificate rejected")):
        if needle in text:
            return short
    return text[:160]


class HttpSender:
    """POSTs payloads with the stock OTLP/HTTP exporter's client (its retry rules, its TLS)."""

    def __init__(self, settings: OtlpSettings) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise MissingExtraError("OTLP export", "otlp") from exc
        self._exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.timeout_s
        )
        self._client = self._exporter._client  # the retrying client beneath encode_spans()

    def send(self, payload: bytes, spans: int) -> SendResult:
        result = self._client.export(payload)
        if result.success:
            return SendResult(True, f"HTTP {result.status_code}")
        if result.status_code is not None:
            from opentelemetry.exporter.otlp.common.http import _is_retryable

            return SendResult(False, f"HTTP {result.status_code}", result.reason or "",
                              retryable=_is_retryable(result.status_code))
        return SendResult(False, "unreachable", _short_reason(result.error), retryable=True)

    def close(self) -> None:
        self._exporter.shutdown()


_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _BytesStub:
    """A TraceService stub that sends already-serialized requests and remembers the last error."""

    def __init__(self, channel: Any, owner: "_GrpcExporter") -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        self._call = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=lambda payload: payload,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        self._owner = owner

    def Export(self, request: bytes, metadata: Any = None, timeout: float | None = None) -> Any:  # noqa: N802
        import grpc

        try:
            return self._call(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            self._owner.last_error = error
            raise


def _grpc_exporter_class() -> type:
    try:
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise MissingExtraError("OTLP export over gRPC", "otlp") from exc

    class _GrpcExporter(OTLPSpanExporter):  # type: ignore[misc,valid-type]
        """The stock gRPC exporter (env config, channel, retry loop) fed with our bytes."""

        last_error: Any = None

        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = _BytesStub(self._channel, self)

        def _translate_data(self, data: bytes) -> bytes:  # type: ignore[override]
            return data

        def _count_data(self, data: bytes) -> int:  # type: ignore[override]
            return 0

    _GrpcExporter.retryable = frozenset((grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED))
    return _GrpcExporter


_GrpcExporter: Any = None


class GrpcSender:
    def __init__(self, settings: OtlpSettings) -> None:
        global _GrpcExporter
        if _GrpcExporter is None:
            _GrpcExporter = _grpc_exporter_class()
        self._exporter = _GrpcExporter(
            endpoint=settings.endpoint,
            headers=tuple(settings.headers.items()),
            timeout=settings.timeout_s,
            retryable_error_codes=_GrpcExporter.retryable,
        )

    def send(self, payload: bytes, spans: int) -> SendResult:
        self._exporter.last_error = None
        result = self._exporter._export(payload)
        if result.name == "SUCCESS":
            return SendResult(True, "OK")
        error = self._exporter.last_error
        if error is None:
            return SendResult(False, "failed", "the gRPC exporter gave up", retryable=True)
        code = error.code()
        return SendResult(False, code.name, error.details() or "",
                          retryable=code in _GrpcExporter.retryable)

    def close(self) -> None:
        self._exporter.shutdown()


def make_sender(settings: OtlpSettings) -> Sender:
    return GrpcSender(settings) if settings.protocol == "grpc" else HttpSender(settings)
