"""``temporal-airflow-codec-server``: lets the Temporal UI and CLI show encrypted payloads in clear.

With encryption on (:mod:`temporal_airflow.models.codec`), workflow histories hold ciphertext only. The
Temporal UI (Settings > Codec Server, or the server's ``--ui-codec-endpoint``) and ``temporal workflow
show --codec-endpoint`` send payloads to a *remote codec* to decode them: ``POST /decode`` and
``POST /encode`` with ``{"payloads": [...]}`` in protobuf JSON, answered in kind. This server runs the
same codec as the workers, from the same environment (``TEMPORAL_AIRFLOW_ENCRYPTION_KEY`` / ``_FILE``).

Whoever may call it can read every history of the namespace, so it guards itself (:class:`CodecAccess`):

* a bearer token (``Authorization: Bearer ...``, from ``TEMPORAL_AIRFLOW_CODEC_TOKEN`` or ``_FILE``):
  the Temporal CLI sends it with ``--codec-auth``, the UI with its "pass access token" setting behind
  an identity proxy. Without a token it refuses to start, unless told ``--no-auth`` on a loopback address
  (a single-user machine);
* the ``Host`` header must name this server (a DNS-rebinding page cannot reach it through a browser);
* ``X-Namespace`` must be the namespace it serves (``TEMPORAL_NAMESPACE``, default ``default``);
* request bodies are capped (``--max-body-bytes``, 8 MiB by default);
* cross-origin requests are answered only for the Temporal UI's origin(s).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from starlette.middleware.trustedhost import TrustedHostMiddleware
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from temporal_airflow.models.codec import KEY_ENV, KEY_FILE_ENV, DecryptionError, EncryptionSettings

_Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]

#: Origins of the Temporal dev server's UI (``temporal server start-dev``, the CLI's embedded server).
DEV_UI_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")


TOKEN_ENV = "TEMPORAL_AIRFLOW_CODEC_TOKEN"
TOKEN_FILE_ENV = "TEMPORAL_AIRFLOW_CODEC_TOKEN_FILE"
#: Largest request body decoded or encoded (a payload over the store's threshold is a reference anyway).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class CodecAccess:
    """Who may use the codec server: a bearer token (``None``: anyone who reaches it), the ``Host`` names
    it answers to, the namespace(s) it serves, and the largest body it reads."""

    token: str | None = field(repr=False)
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    namespaces: tuple[str, ...] = ("default",)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def refusal(self, request: Request, body_size: int | None) -> Response | None:
        """Why ``request`` is refused, as the response to send; ``None`` when it may proceed."""
        if self.token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self.token.encode()):
                return Response("a valid bearer token is required", status_code=401, media_type="text/plain")
        namespace = request.headers.get("x-namespace", "")
        if namespace not in self.namespaces:
            served = ", ".join(self.namespaces)
            return Response(f"namespace {namespace!r} is not served here ({served})", status_code=403)
        if body_size is not None and body_size > self.max_body_bytes:
            return Response(f"request body over {self.max_body_bytes} bytes", status_code=413)
        return None


def create_app(codec: PayloadCodec, cors_origins: Sequence[str], access: CodecAccess) -> FastAPI:
    """The remote-codec HTTP API over ``codec``, for callers ``access`` admits; browsers may call it from
    ``cors_origins``."""
    app = FastAPI(title="temporal-airflow codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_credentials=True,
        allow_methods=["POST"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(access.hosts))

    async def apply(request: Request, transform: _Transform) -> Response:
        declared = request.headers.get("content-length")
        refused = access.refusal(request, int(declared) if declared and declared.isdigit() else None)
        if refused is not None:
            return refused
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > access.max_body_bytes:
                return Response(f"request body over {access.max_body_bytes} bytes", status_code=413)
        try:
            payloads = json_format.Parse(body, Payloads())
            result = Payloads(payloads=await transform(payloads.payloads))
        except (json_format.ParseError, DecryptionError) as err:
            return Response(str(err), status_code=400, media_type="text/plain")
        return Response(json_format.MessageToJson(result), media_type="application/json")

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        return await apply(request, codec.encode)

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        return await apply(request, codec.decode)

    return app


def token_from_env() -> str | None:
    """The bearer token from ``TEMPORAL_AIRFLOW_CODEC_TOKEN`` or the file ``TEMPORAL_AIRFLOW_CODEC_TOKEN_FILE``."""
    if token := os.environ.get(TOKEN_ENV, "").strip():
        return token
    if path := os.environ.get(TOKEN_FILE_ENV):
        return Path(path).read_text().strip() or None
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def default_cors_origins() -> list[str]:
    """The dev server's UI, and the UI at ``TEMPORAL_UI_URL`` when set."""
    origins = list(DEV_UI_ORIGINS)
    if ui_url := os.environ.get("TEMPORAL_UI_URL", "").rstrip("/"):
        origins.append(ui_url)
    return origins


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="temporal-airflow-codec-server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--cors-origin",
        action="append",
        help="origin of a Temporal UI allowed to call this server, repeatable "
        f"(default: {', '.join(DEV_UI_ORIGINS)} and TEMPORAL_UI_URL)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        help="a name clients reach this server by (the Host header), repeatable (default: --host and localhost)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--no-auth", action="store_true", help=f"serve without {TOKEN_ENV} (only on a loopback --host)")
    args = parser.parse_args(argv)
    codec = EncryptionSettings.from_env().codec()
    if codec is None:
        raise SystemExit(f"no encryption key: set {KEY_ENV} or {KEY_FILE_ENV}, as for the workers")
    token = token_from_env()
    if token is None and not args.no_auth:
        raise SystemExit(f"no access token: set {TOKEN_ENV} or {TOKEN_FILE_ENV} (or --no-auth on a loopback host)")
    if token is None and not _is_loopback(args.host):
        raise SystemExit(f"--no-auth is refused on {args.host}: only a loopback address may serve without a token")
    access = CodecAccess(
        token=token,
        hosts=tuple(args.allowed_host or {args.host, "localhost", "127.0.0.1"}),
        namespaces=(os.environ.get("TEMPORAL_NAMESPACE") or "default",),
        max_body_bytes=args.max_body_bytes,
    )
    app = create_app(codec, args.cors_origin or default_cors_origins(), access)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
