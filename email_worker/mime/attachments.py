"""Files attached to an email: checked in the request, written as MIME parts; pure, no I/O.

A request carries each file as ``{"filename", "content" (base64), "content_type"}``.
Validation keeps that JSON-safe form (so a stored job or a retry carries the files)
with a file name reduced to a safe base name; the message builder decodes it and
writes one base64 part per file.  Executable files are refused by extension and by
content type: mail servers and readers refuse or quarantine them anyway, and a
service sending them is how malware spreads.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from email_worker.errors import InvalidEmailRequest
from email_worker.mime.header_fields import UnsafeMessageError, disposition_field

MAX_ATTACHMENTS = 20
MAX_FILENAME = 255
MAX_FILENAME_GIVEN = 4096  # a longer name, folders and all, is refused rather than cut
MAX_CONTENT_TYPE = 255  # RFC 6838 section 4.2: type and subtype at most 127 characters each
ATTACHMENT_KEYS = frozenset({"filename", "content", "content_type"})

# Gmail's list of blocked file types, with the scripts of Unix shells and PowerShell.
_BLOCKED_EXTENSIONS = """
    ade adp apk app appx appxbundle bas bat cab chm cmd com command cpl csh diagcab
    diagcfg diagpack dll dmg ex ex_ exe gadget hta img inf ins iso isp jar jnlp js jse
    ksh lib lnk mde msc msh msi msix msixbundle msp mst nsh pif ps1 ps1xml ps2 psc1 psm1
    reg scf scr sct sh shb sys vb vbe vbs vhd vhdx vxd ws wsc wsf wsh xll
"""
_BLOCKED_CONTENT_TYPES = """
    application/bat application/ecmascript application/hta application/java-archive
    application/javascript application/vnd.android.package-archive
    application/vnd.microsoft.portable-executable application/x-apple-diskimage
    application/x-bat application/x-csh application/x-dosexec application/x-elf
    application/x-executable application/x-java-archive application/x-java-jnlp-file
    application/x-javascript application/x-mach-binary application/x-ms-application
    application/x-ms-installer application/x-ms-shortcut application/x-msdos-program
    application/x-msdownload application/x-msi application/x-powershell
    application/x-sh application/x-sharedlib application/x-shellscript
    text/ecmascript text/javascript text/vbscript text/x-sh text/x-shellscript
"""
BLOCKED_EXTENSIONS = frozenset(_BLOCKED_EXTENSIONS.split())
BLOCKED_CONTENT_TYPES = frozenset(_BLOCKED_CONTENT_TYPES.split())
# Multipart and message parts cannot be sent in base64 (RFC 2045 section 6.4).
ATTACHABLE_TYPES = frozenset({"application", "audio", "font", "image", "model", "text", "video"})

_TOKEN = r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+"  # RFC 2045 token: no tspecials, spaces or controls
CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
# Categories that have no place in a file name: controls, format characters (bidi
# overrides that turn "fdp.exe" into a seeming "exe.pdf"), surrogates and separators.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_QUOTES = frozenset("\"'`")
_PART_FIELDS = [b"Content-Type", b"Content-Transfer-Encoding", b"Content-Disposition"]
_MAX_EXTENSION = 16  # a longer "extension" is part of the name when it is cut


def sanitize_filename(value: str) -> str:
    """The base name of ``value`` with controls, quotes and format characters removed.

    Backslashes count as path separators too.  Trailing dots and spaces go (Windows
    drops them, and "x.exe." would open as an executable); the name is cut to 255
    characters, keeping its extension.  Applying it twice changes nothing more.
    """
    name = value.replace("\\", "/").rpartition("/")[2]
    name = "".join(
        char
        for char in unicodedata.normalize("NFC", name)
        if char not in _QUOTES and unicodedata.category(char) not in _DROPPED_CATEGORIES
    )
    name = name.strip().rstrip(". ")
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem or len(extension) > _MAX_EXTENSION:
            stem, dot, extension = name, "", ""
        stem = stem[: MAX_FILENAME - len(dot + extension)].rstrip(". ")
        name = f"{stem}{dot}{extension}"
    return name


def validate_attachments(value: Any) -> list[dict[str, str]]:
    """The request's attachments, checked, with safe file names and lower-case types."""
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise InvalidEmailRequest("attachments", "expected a list of attachments")
    if len(value) > MAX_ATTACHMENTS:
        raise InvalidEmailRequest("attachments", f"at most {MAX_ATTACHMENTS} attachments")
    return [_attachment(f"attachments[{i}]", item) for i, item in enumerate(value)]


def decoded_size(content: str) -> int:
    """The number of bytes a strict base64 text decodes to (its padding taken off)."""
    return len(content) // 4 * 3 - content[-2:].count("=")


def encoded_size(size: int) -> int:
    """Bytes a file of ``size`` bytes takes in a message: base64 in lines of 76, CRLF each."""
    encoded = (size + 2) // 3 * 4
    return encoded + (encoded + 75) // 76 * 2


def attachment_part(filename: str, content: bytes, content_type: str) -> bytes:
    """One attachment as a MIME part: its header fields, then base64 in lines of 76."""
    if not CONTENT_TYPE.fullmatch(content_type):
        raise UnsafeMessageError("an attachment's content type is not a media type")
    # Readers take text parts without a charset for US-ASCII and garble UTF-8 files.
    charset = '; charset="utf-8"' if content_type.startswith("text/") and _utf8(content) else ""
    header = (
        f"Content-Type: {content_type}{charset}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"{disposition_field(filename)}"
    ).encode("ascii")
    lines = header.split(b"\r\n")[:-1]
    names = [line.partition(b":")[0] for line in lines if line[:1] not in (b" ", b"\t")]
    if names != _PART_FIELDS or b"\r" in header.replace(b"\r\n", b"") or b"\n" in b"".join(lines):
        raise UnsafeMessageError("an attachment's file name would add lines to its part")
    encoded = binascii.b2a_base64(content, newline=False)
    body = b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))
    return header + b"\r\n" + body


def _utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _attachment(where: str, item: Any) -> dict[str, str]:
    if not isinstance(item, Mapping):
        raise InvalidEmailRequest(where, "expected a mapping of filename, content and content_type")
    keys = set(item)
    if keys != ATTACHMENT_KEYS:
        missing = sorted(ATTACHMENT_KEYS - keys)
        unknown = sorted(str(key)[:40] for key in keys - ATTACHMENT_KEYS)[:3]
        problem = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        raise InvalidEmailRequest(where, f"{problem}; give filename, content and content_type")
    return {
        "filename": _filename(f"{where}.filename", item["filename"]),
        "content": _content(f"{where}.content", item["content"]),
        "content_type": _content_type(f"{where}.content_type", item["content_type"]),
    }


def _filename(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidEmailRequest(where, "expected a file name")
    if len(value) > MAX_FILENAME_GIVEN:
        raise InvalidEmailRequest(where, f"longer than {MAX_FILENAME_GIVEN} characters")
    name = sanitize_filename(value)
    if not name:
        raise InvalidEmailRequest(
            where, "no file name is left once folders, quotes and control characters are removed"
        )
    extension = executable_extension(name)
    if extension is not None:
        raise InvalidEmailRequest(where, f"executable files (.{extension}) cannot be attached")
    return name


def executable_extension(name: str) -> str | None:
    """The blocked extension a system could open the file ``name`` as, or None.

    Windows reads ``a.exe:stream`` and ``a.exe::$DATA`` as a stream of ``a.exe``, and
    drops the trailing dots and spaces of each part (``a.exe .``); a reader that
    replaces the colon saves ``x.pdf:y.exe`` as ``x.pdf_y.exe``. So the whole name and
    each part of it between colons count.
    """
    for part in (name, *name.split(":")):
        stem, dot, extension = part.rstrip(". ").rpartition(".")
        if dot and extension.lower() in BLOCKED_EXTENSIONS:
            return extension.lower()
    return None


def _content(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidEmailRequest(where, "expected the file's content as base64 text")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEmailRequest(
            where, "not valid base64 (only A-Z a-z 0-9 + / and = padding, no line breaks)"
        ) from None
    return value


def _content_type(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEmailRequest(where, "expected a media type such as 'application/pdf'")
    if len(value) > MAX_CONTENT_TYPE:
        raise InvalidEmailRequest(where, f"longer than {MAX_CONTENT_TYPE} characters")
    if ";" in value:
        raise InvalidEmailRequest(where, "parameters are not accepted: give 'type/subtype' only")
    if not CONTENT_TYPE.fullmatch(value):
        raise InvalidEmailRequest(where, "expected a media type such as 'application/pdf'")
    content_type = value.lower()
    if content_type.partition("/")[0] not in ATTACHABLE_TYPES:
        raise InvalidEmailRequest(
            where, f"cannot attach a file as {content_type.partition('/')[0]}/*"
        )
    if content_type in BLOCKED_CONTENT_TYPES:
        raise InvalidEmailRequest(where, f"executable files ({content_type}) cannot be attached")
    return content_type
