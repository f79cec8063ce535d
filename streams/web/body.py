"""Reading a request body with a size limit, before anything parses it."""

from __future__ import annotations

from fastapi import HTTPException, Request

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it (declared or streamed) passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, "Content-Length is not a number") from None
        if size > limit:
            raise HTTPException(413, f"body of {size} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise HTTPException(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
