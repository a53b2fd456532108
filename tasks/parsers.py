"""Request body parsing that turns every malformed body into a 400, never a 500."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's parser, plus: JSON nested too deeply for Python's parser is a 400.

    The standard library raises RecursionError (not ValueError) on a few
    kilobytes of ``[[[[...``, which DRF lets through as a server error.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
