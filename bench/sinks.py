"""Observability sinks for the benches, as one small process: a fake Opik backend and an OTLP/HTTP sink.

Both answer at once (Opik writes 204, Opik reads 200 `{}`, OTLP 200 with an empty response) and count what
they got; `GET /stats` returns the counts as JSON. Runs outside the load generator so its work is not
charged to it (bench/bridge_latency.py pins it next to the AI server). Prints one JSON line on stdout once
listening: {"opik_url": ..., "otlp_url": ..., "stats_url": ...}.

    .venv/bin/python bench/sinks.py [--port 0]

Opik (OPIK_URL_OVERRIDE=<opik_url>) posts JSON, maybe gzip- or deflate-compressed, to
/api/v1/private/spans/batch and /api/v1/private/traces/batch; the OTLP exporter
(OTEL_EXPORTER_OTLP_ENDPOINT=<otlp_url>) posts protobuf to /v1/traces, whose spans are counted per
`service.name` when the OTLP protobuf classes are installed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
except ImportError:  # counts requests and bytes only
    ExportTraceServiceRequest = None


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: Counter[str] = Counter()
        self.otlp_spans_by_service: Counter[str] = Counter()
        self.opik_paths: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {**{key: self.values[key] for key in ("opik_requests", "opik_bytes", "opik_spans", "opik_traces",
                                                       "otlp_requests", "otlp_bytes", "otlp_spans")},
                    "otlp_spans_by_service": dict(self.otlp_spans_by_service),
                    "opik_paths": dict(self.opik_paths), "errors": dict(self.errors)}


def _decode(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    return raw


def _otlp_spans(body: bytes) -> dict[str, int]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    found: Counter[str] = Counter()
    for resource_spans in request.resource_spans:
        service = next((a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                       "?")
        found[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
    return dict(found)


def make_handler(counts: Counts) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _answer(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            if body:
                self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self._body()
            path = self.path.split("?", 1)[0]
            if path.endswith("/v1/traces"):
                self._answer(200, b"", "application/x-protobuf")
                spans: dict[str, int] = {}
                error = None
                if ExportTraceServiceRequest is not None:
                    try:
                        spans = _otlp_spans(_decode(raw, self.headers.get("content-encoding") or ""))
                    except Exception as exc:  # a sink: count it, never fail the sender
                        error = f"otlp:{type(exc).__name__}"
                with counts.lock:
                    counts.values["otlp_requests"] += 1
                    counts.values["otlp_bytes"] += len(raw)
                    counts.values["otlp_spans"] += sum(spans.values())
                    counts.otlp_spans_by_service.update(spans)
                    if error:
                        counts.errors[error] += 1
                return
            self._answer(204)
            items = {}
            error = None
            key = "spans" if path.endswith("/spans/batch") else "traces" if path.endswith("/traces/batch") else None
            if key is not None:
                try:
                    items = {key: len(json.loads(_decode(raw, self.headers.get("content-encoding") or ""))[key])}
                except Exception as exc:
                    error = f"opik:{type(exc).__name__}"
            with counts.lock:
                counts.values["opik_requests"] += 1
                counts.values["opik_bytes"] += len(raw)
                counts.opik_paths[f"{self.command} {path}"] += 1
                for name, n in items.items():
                    counts.values[f"opik_{name}"] += n
                if error:
                    counts.errors[error] += 1

        do_PATCH = do_PUT = do_POST

        def do_GET(self) -> None:
            self._body()
            if self.path.split("?", 1)[0] == "/stats":
                self._answer(200, json.dumps(counts.snapshot()).encode())
                return
            with counts.lock:
                counts.opik_paths[f"GET {self.path.split('?', 1)[0]}"] += 1
            self._answer(200, b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Counts()))
    server.daemon_threads = True
    base = f"http://{args.host}:{server.server_address[1]}"
    print(json.dumps({"opik_url": base + "/api", "otlp_url": base, "stats_url": base + "/stats"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
