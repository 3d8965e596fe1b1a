"""Whether inline base64 data (an image's, a PDF's) is base64: one check, used where a
request is validated and where it is translated, so a body the gateway accepts is one
every translator accepts."""

from __future__ import annotations

import base64
import binascii

CHECKED_CHARS = 64  # enough to refuse what is not base64; cheap on megabyte images


def looks_base64(data: str) -> bool:
    head = data[:CHECKED_CHARS]
    try:
        base64.b64decode(head + "=" * (-len(head) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
