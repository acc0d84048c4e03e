"""The test bed's Blob Storage, as strict as the service: Azurite behind a thin layer of our own that
answers the conditional requests Azurite gets wrong as Blob Storage answers them.

    python -m tests.storage_bed --port PORT --upstream AZURITE_PORT

Every request is passed on to Azurite as it came (its signature stays valid: the host is not signed),
and its answer passed back, except for what Azurite answers differently from the service
(tests/test_storage_bed.py holds both to the service's documented answers; docs/development.md lists
them):

1. Set Blob Metadata with ``If-None-Match: *`` on a blob that exists: Azurite replaces the metadata;
   the service answers 412 (ConditionNotMet). The SDK's checkpoint store claims a partition nobody
   has claimed with exactly that request, so on plain Azurite two workers can both win it.
2. Get Blob and Get Blob Properties with ``If-Match`` on a blob that does not exist: Azurite answers
   412; the service, 404 (BlobNotFound).

Writes to one blob pass one at a time, so that checking whether a blob exists and passing the write on
is one step, as it is in the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import defaultdict
from typing import Final
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from azure.storage.blob.aio import BlobServiceClient
from yarl import URL

from tests.servers import ACCOUNT, ACCOUNT_KEY

#: Headers a hop sets for itself, never passed on.
_HOP: Final = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
_ERROR: Final = '<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'


class StrictBlob:
    def __init__(self, upstream: int) -> None:
        self._upstream = f"http://127.0.0.1:{upstream}"
        self._session: aiohttp.ClientSession | None = None
        self._service: BlobServiceClient | None = None
        self._writes: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300))
            connection = (
                f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self._upstream}/{ACCOUNT};"
            )
            self._service = BlobServiceClient.from_connection_string(connection)
        body = await request.read()
        if request.method in ("PUT", "DELETE"):
            async with self._writes[request.path]:
                return await self._write(request, body)
        response = await self._pass(request, body)
        missed = response.status == 412 and request.method in ("GET", "HEAD") and request.headers.get("If-Match")
        if missed and not await self._exists(request):
            return _error(404, "BlobNotFound", "The specified blob does not exist.", request.method)
        return response

    async def _write(self, request: web.Request, body: bytes) -> web.StreamResponse:
        metadata = request.query.get("comp") == "metadata"
        if metadata and request.headers.get("If-None-Match") == "*" and await self._exists(request):
            return _error(
                412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.", "PUT"
            )
        return await self._pass(request, body)

    async def _exists(self, request: web.Request) -> bool:
        """Whether the blob ``request`` names exists: its properties read with the emulator's account key
        (the request's own signature is for its own request)."""
        _, _account, container, blob = request.path.split("/", 3)
        client = self._service_or_fail().get_blob_client(container, unquote(blob))
        try:
            return bool(await client.exists())
        finally:
            await client.close()

    async def _pass(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return await pass_on(self._session_or_fail(), self._upstream, request, body)

    def _session_or_fail(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    def _service_or_fail(self) -> BlobServiceClient:
        assert self._service is not None
        return self._service

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
        if self._session is not None:
            await self._session.close()


async def pass_on(session: aiohttp.ClientSession, upstream: str, request: web.Request, body: bytes) -> web.Response:
    """Pass ``request`` (its ``body`` read) on to ``upstream`` as it came, and its answer back."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    # As it came, byte for byte: the path as encoded, and no header of aiohttp's own that is signed
    # (a Content-Type it would add to a body that has none).
    async with session.request(
        request.method,
        URL(upstream + request.raw_path, encoded=True),
        headers=headers,
        data=body if body or request.method in ("PUT", "POST") else None,
        allow_redirects=False,
        skip_auto_headers=("Content-Type",),
    ) as answer:
        data = await answer.read()
        back = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        if request.method == "HEAD":  # a blob's size is its Content-Length, with no body
            back["Content-Length"] = answer.headers.get("Content-Length", "0")
            return web.Response(status=answer.status, headers=back)
        return web.Response(status=answer.status, body=data, headers=back)


def _error(status: int, code: str, message: str, method: str) -> web.Response:
    headers = {"x-ms-error-code": code, "x-ms-version": "2025-11-05"}
    if method == "HEAD":
        return web.Response(status=status, headers=headers)
    text = _ERROR.format(code=code, message=message)
    return web.Response(status=status, text=text, content_type="application/xml", headers=headers)


async def serve(port: int, upstream: int) -> None:
    strict = StrictBlob(upstream)
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", strict.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await strict.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
