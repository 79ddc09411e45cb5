"""``temporal-airflow-codec-server``: lets the Temporal UI and CLI show encrypted payloads in clear.

With encryption on (:mod:`temporal_airflow.models.codec`), workflow histories hold ciphertext only. The
Temporal UI (Settings > Codec Server, or the server's ``--ui-codec-endpoint``) and ``temporal workflow
show --codec-endpoint`` send payloads to a *remote codec* to decode them: ``POST /decode`` and
``POST /encode`` with ``{"payloads": [...]}`` in protobuf JSON, answered in kind. This server runs the
same codec as the workers, from the same environment (``TEMPORAL_AIRFLOW_ENCRYPTION_KEY`` / ``_FILE``).

It decrypts whatever it is sent, with no authentication of its own: it listens on 127.0.0.1 by default
and answers cross-origin requests only from the Temporal UI's origin(s). Expose it to others only behind
an authenticating proxy.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from temporal_airflow.models.codec import KEY_ENV, KEY_FILE_ENV, DecryptionError, EncryptionSettings

_Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]

#: Origins of the Temporal dev server's UI (``temporal server start-dev``, the CLI's embedded server).
DEV_UI_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")


def create_app(codec: PayloadCodec, cors_origins: Sequence[str]) -> FastAPI:
    """The remote-codec HTTP API over ``codec``; browsers may call it from ``cors_origins``."""
    app = FastAPI(title="temporal-airflow codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_credentials=True,
        allow_methods=["POST"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
    )

    async def apply(request: Request, transform: _Transform) -> Response:
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
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
    args = parser.parse_args(argv)
    codec = EncryptionSettings.from_env().codec()
    if codec is None:
        raise SystemExit(f"no encryption key: set {KEY_ENV} or {KEY_FILE_ENV}, as for the workers")
    uvicorn.run(create_app(codec, args.cors_origin or default_cors_origins()), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
