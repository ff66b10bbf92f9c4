"""Reading the pages' form posts: urlencoded only, size- and field-capped, one value per single field.

The body is read here (not with ``Request.form()``) so the cap answers with our own error page, and so no
multipart parser runs: our forms never upload files.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

from starlette.requests import Request

from mcp_bastion.asgi.pages.render import PageError

FORM_LIMIT = 16 * 1024
"""Largest form body accepted, in bytes: a username, a password, a handful of scopes and two tokens."""

MAX_FIELDS = 64


def _malformed() -> PageError:
    return PageError(400, "form_malformed", "Something went wrong", "The form could not be read. Please start again.")


class Form:
    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self._fields = fields

    def one(self, name: str) -> str:
        """The field's value, ``""`` when absent; a field sent twice is refused rather than guessed at."""
        values = self._fields.get(name, [])
        if len(values) > 1:
            raise _malformed()
        return values[0] if values else ""

    def all(self, name: str) -> list[str]:
        return list(self._fields.get(name, []))


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _malformed()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise PageError(413, "form_too_large", "Something went wrong", "The form was too large.")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except ValueError as exc:  # bad UTF-8 (UnicodeDecodeError is a ValueError) or too many fields
        raise _malformed() from exc
    return Form(fields)
