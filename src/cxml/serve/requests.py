"""Turning a /predict request into image tensors: multipart, JSON or a raw body, within limits.

Every bad input ends in a RequestError (a 4xx with a message), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cxml.serve.settings import ServeSettings

if TYPE_CHECKING:
    import torch
    from fastapi import Request

    from cxml.ml.models import ModelMetadata


_OPENING = threading.Lock()


class RequestError(Exception):
    """A bad request: answered with `status` and this message, never a 500."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


CLIENT_CLOSED = 499
"""nginx's code for a client that closed the connection before it got its answer; never sent."""


@dataclass(frozen=True)
class PredictRequest:
    """What one /predict request sent, read off the wire: a form's files, or a body to parse."""

    content_type: str
    body: bytes
    files: list[bytes] | None
    """The file parts of a multipart form (parsed while reading); None for other bodies."""


async def read_predict_request(request: Request, settings: ServeSettings) -> PredictRequest:
    """The body of a /predict request within the size limits (the cheap part, on the event loop)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (
        content_type in ("application/json", "multipart/form-data", "application/octet-stream")
        or content_type.startswith("image/")
    ):
        raise RequestError(
            415,
            f"content type {content_type or 'none'!r} is not supported; use "
            "multipart/form-data, application/json or image/*",
        )
    body = await read_body(request, settings.max_request_bytes)
    files = None
    if content_type == "multipart/form-data":
        files = await images_from_multipart(request, settings.max_batch)
    return PredictRequest(content_type, body, files)


def images_of(sent: PredictRequest, settings: ServeSettings) -> list[bytes]:
    """The image files one /predict request holds, in order, within the batch limit."""
    if sent.files is not None:
        images = sent.files
    elif sent.content_type == "application/json":
        images = images_from_json(sent.body)
    else:
        images = [sent.body]
    if not images:
        raise RequestError(422, "the request holds no images; send at least one")
    if len(images) > settings.max_batch:
        raise RequestError(
            413,
            f"{len(images)} images in one request, over the limit of {settings.max_batch}; "
            "split the batch",
        )
    return images


def decode_image(
    data: bytes, index: int, metadata: ModelMetadata, settings: ServeSettings
) -> torch.Tensor:
    """Bytes of one image file -> uint8 C,H,W at the model's input size, or a RequestError."""
    from PIL import Image, UnidentifiedImageError

    from cxml.ml import models

    if not data:
        raise RequestError(400, f"image {index} is empty; send the bytes of a PNG or JPEG file")
    try:
        # catch_warnings swaps a process-wide filter list: decoding threads take turns at it
        with _OPENING, warnings.catch_warnings():
            # PIL warns past its own pixel limit and raises past twice it: both mean too large
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(
            413,
            f"image {index} is over the limit of {settings.max_image_pixels} pixels ({exc}); "
            "send it smaller",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError(
            400, f"image {index} is not a readable image; send a PNG, JPEG or other PIL format"
        ) from None
    width, height = image.size
    _, want_height, want_width = metadata.input_size
    if width * height > settings.max_image_pixels:
        raise RequestError(
            413,
            f"image {index} is {width}x{height} pixels, over the limit of "
            f"{settings.max_image_pixels}; send it smaller",
        )
    if not settings.resize and (width, height) != (want_width, want_height):
        raise RequestError(
            422,
            f"image {index} is {width}x{height}; this model takes {want_width}x{want_height} "
            "images, resize it first",
        )
    try:
        return models.image_to_input(image, metadata)
    except (OSError, ValueError, SyntaxError):
        raise RequestError(
            400, f"image {index} is truncated or corrupt; send the whole file"
        ) from None


def images_from_json(body: bytes) -> list[bytes]:
    """`{"image": "<base64>"}` or `{"images": ["<base64>", ...]}` -> the image files' bytes."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise RequestError(
            400, 'the JSON body is nested too deeply; send {"images": ["<base64 PNG>", ...]}'
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError(
            400, 'the body is not valid JSON; send {"images": ["<base64 PNG>", ...]}'
        ) from None
    except ValueError:  # an integer past Python's 4,300-digit limit for turning text into int
        raise RequestError(
            400, 'the JSON body holds a number too long to read; send {"images": [...]} only'
        ) from None
    if not isinstance(payload, dict) or not ({"image", "images"} & payload.keys()):
        raise RequestError(
            422, 'JSON body needs "image" (one base64 image) or "images" (a list of them)'
        )
    encoded = payload["images"] if "images" in payload else [payload["image"]]
    if not isinstance(encoded, list) or not all(isinstance(item, str) for item in encoded):
        raise RequestError(422, '"images" must be a list of base64 strings')
    images = []
    for index, text in enumerate(encoded):
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"image {index} is not valid base64") from None
    return images


async def images_from_multipart(request: Request, max_batch: int) -> list[bytes]:
    """Every file part of a multipart form, in order (field names `image` / `images` by custom)."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_files=max_batch, max_fields=max_batch + 16)
    except (MultiPartException, HTTPException) as exc:
        # inside an app Starlette turns the parser's MultiPartException into an HTTPException(400)
        raise multipart_error(
            exc.detail if isinstance(exc, HTTPException) else exc.message, max_batch
        ) from None
    images = []
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            images.append(await value.read())
    await form.close()
    return images


def multipart_error(problem: str, max_batch: int) -> RequestError:
    """The parser's complaint about a multipart body, as this service's 413 or 400."""
    if problem.startswith("Too many files"):
        return RequestError(
            413,
            f"more than {max_batch} images in one request, over the limit of {max_batch}; "
            "split the batch",
        )
    if problem.startswith(("Too many fields", "Part exceeded")):
        return RequestError(
            413, f"multipart body has too many or too large fields ({problem}); send only images"
        )
    return RequestError(400, f"multipart body is malformed ({problem}); send a valid form")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes `limit` bytes (also when chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413,
            f"request body is {declared} bytes, over the limit of {limit}; send fewer or "
            "smaller images",
        )
    from starlette.requests import ClientDisconnect

    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    413,
                    f"request body is over the limit of {limit} bytes; send fewer or smaller "
                    "images",
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(
            CLIENT_CLOSED, "the client closed the connection before sending the whole body"
        ) from None
    body = b"".join(chunks)
    request._body = body  # let request.form() parse what was already read
    return body
