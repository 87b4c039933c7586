"""Header fields written straight to the wire: RFC 5322 folding and RFC 2047 encoded words.

Each function returns one whole field, ``Name: value`` with CRLF after every line and
every line within 78 characters (only a long address, or a header name that leaves no
room after it, makes one longer; never past 998).  Caller text that is anything but
plain ASCII words, or that holds ``=?``, is written entirely as encoded words: a reader
then decodes exactly the characters given, never an encoded word the caller wrote.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence

from email_worker.errors import PermanentError

# Headers the message builder sets itself; taking them from a caller would let a
# request forge a sender or smuggle recipients past the envelope.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "reply-to",
        "sender",
        "return-path",
        "received",
        "dkim-signature",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)

# Prefixes of header names that belong to the message's structure or its transport.
RESERVED_HEADER_PREFIXES = ("content-", "resent-")

LINE = 78  # RFC 5322 section 2.1.1: lines SHOULD stay within 78 characters
_WORD = 75  # RFC 2047 section 2: an encoded word is at most 75 characters
_Q_PREFIX, _B_PREFIX, _SUFFIX = "=?utf-8?q?", "=?utf-8?b?", "?="
_WORD_OVERHEAD = len(_Q_PREFIX) + len(_SUFFIX)
# Control characters (C0, DEL, C1), the Unicode line separators and lone surrogates
# (which cannot be encoded): none of them belongs in a header.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
REPLACEMENT = "\ufffd"
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")  # printable ASCII words, one space apart
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATOMS = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
_QUOTABLE = re.compile(r"[ !-~]+")
# RFC 6532 lets an address hold UTF-8 beyond ASCII (the message then needs SMTPUTF8).
_ADDRESS_CHAR = rf"(?:{_ATEXT}|[^\x00-\x7f])"
_DOT_ATOM = re.compile(rf"{_ADDRESS_CHAR}+(?:\.{_ADDRESS_CHAR}+)*")
_DOMAIN_LITERAL = re.compile(r"\[[!-Z^-~]*\]")
# RFC 2047 section 5 (3): the characters a Q-encoded word may hold as themselves in a
# phrase, the strictest of its contexts; space is written as "_".
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_BYTE = [chr(b) if b in _Q_SAFE else f"={b:02X}" for b in range(256)]
_Q_BYTE[0x20] = "_"
# A file name written as a quoted string: printable ASCII but the quote and the backslash.
_PLAIN_FILENAME = re.compile(r"[ !#-\[\]-~]+")
# RFC 2231 / RFC 5987 attr-char: what an extended parameter value holds unencoded.
_ATTR_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~"
)
_PERCENT_BYTE = [chr(b) if b in _ATTR_CHARS else f"%{b:02X}" for b in range(256)]
_DISPOSITION = "Content-Disposition: attachment;"
_SEGMENT = LINE - len(" filename*99*=utf-8''") - 1  # an encoded piece per line, ";" after


class UnsafeMessageError(PermanentError):
    """The message would not have the structure it was built with."""


def safe_text(value: str) -> str:
    """Header text with every character that has no place in a header replaced (U+FFFD)."""
    return _UNSAFE.sub(REPLACEMENT, value)


def addr_spec(address: str) -> str:
    """An address as written in a header: the local part quoted when it is not a dot-atom."""
    local, at, domain = address.rpartition("@")
    if not (at and local) or _UNSAFE.search(address):
        raise UnsafeMessageError("an address cannot be written in a header")
    if not (_DOT_ATOM.fullmatch(domain) or _DOMAIN_LITERAL.fullmatch(domain)):
        raise UnsafeMessageError("an address cannot be written in a header")
    if not _DOT_ATOM.fullmatch(local):
        local = _quoted(local)
    return f"{local}@{domain}"


def address_field(name: str, addresses: Sequence[str]) -> str:
    """``To``, ``Cc`` or ``Reply-To``: the addresses, folded after their commas."""
    specs = [addr_spec(a) for a in addresses]
    return fold(name, [f"{spec}," for spec in specs[:-1]] + specs[-1:])


def mailbox_field(name: str, display_name: str, address: str) -> str:
    """``From``: a display name (atoms, a quoted string or encoded words) and the address."""
    spec = addr_spec(address)
    if not display_name:
        return fold(name, [spec])
    words = display_name.split(" ")
    plain = "=?" not in display_name
    if plain and _ATOMS.fullmatch(display_name) and max(map(len, words)) < _WORD:
        phrase = words
    elif plain and _QUOTABLE.fullmatch(display_name) and len(_quoted(display_name)) < LINE - 1:
        phrase = [_quoted(display_name)]
    else:
        phrase = encoded_words(display_name, LINE - len(name) - 2)
    return fold(name, [*phrase, f"<{spec}>"])


def unstructured_field(name: str, text: str) -> str:
    """``Subject`` or a custom header: plain words folded at spaces, anything else encoded."""
    if len(name) + 2 + len(text) <= LINE and "=?" not in text and _PLAIN.fullmatch(text):
        return f"{name}: {text}\r\n"
    if not text:
        return f"{name}:\r\n"
    words = text.split(" ")
    if "=?" not in text and _PLAIN.fullmatch(text) and max(map(len, words)) < LINE:
        return fold(name, words)
    return fold(name, encoded_words(text, LINE - len(name) - 2))


def disposition_field(filename: str) -> str:
    """``Content-Disposition: attachment`` with the file name, RFC 2231-encoded unless plain.

    A name of plain ASCII (no quote, backslash or ``=?``) is a quoted string; any other
    is percent-encoded UTF-8 (RFC 2231), in numbered pieces one to a line when long.
    Either way the value holds no line break and nothing a reader would decode twice.
    """
    if "=?" not in filename and _PLAIN_FILENAME.fullmatch(filename):
        parameter = f'filename="{filename}"'
        if len(_DISPOSITION) + 1 + len(parameter) <= LINE:
            return f"{_DISPOSITION} {parameter}\r\n"
        if len(parameter) < LINE:
            return f"{_DISPOSITION}\r\n {parameter}\r\n"
    pieces = _percent_pieces(filename)
    if len(pieces) == 1:
        return f"{_DISPOSITION}\r\n filename*=utf-8''{pieces[0]}\r\n"
    parameters = [f"filename*{i}*={piece}" for i, piece in enumerate(pieces)]
    parameters[0] = f"filename*0*=utf-8''{pieces[0]}"
    return f"{_DISPOSITION}\r\n " + ";\r\n ".join(parameters) + "\r\n"


def _percent_pieces(text: str) -> list[str]:
    """``text`` as percent-encoded UTF-8 in pieces of whole characters, each within _SEGMENT."""
    pieces: list[str] = []
    piece = ""
    for char in text:
        escaped = "".join(_PERCENT_BYTE[b] for b in char.encode("utf-8", "replace"))
        if piece and len(piece) + len(escaped) > _SEGMENT:
            pieces.append(piece)
            piece = ""
        piece += escaped
    pieces.append(piece)
    return pieces


def fold(name: str, tokens: Iterable[str]) -> str:
    """``Name: token token ...``, a line broken before a token that would pass 78 characters.

    Folding only inserts CRLF before a space already there, so unfolding restores the
    value exactly (RFC 5322 section 2.2.3).
    """
    lines = []
    line = f"{name}:"
    for count, token in enumerate(tokens):
        # Never before the first token: a reader would keep the space that starts the
        # next line as part of the value.
        if count and len(line) + 1 + len(token) > LINE:
            lines.append(line)
            line = ""
        line += f" {token}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def encoded_words(text: str, first_room: int) -> list[str]:
    """``text`` as RFC 2047 encoded words, each at most 75 characters and whole characters.

    The first word fits in ``first_room``, or holds a character or two when a long
    header name leaves less.  Q or B, whichever is shorter; B for text holding "=?".
    """
    data = text.encode()
    q_length = sum(len(_Q_BYTE[b]) for b in data)
    b_length = (len(data) + 2) // 3 * 4
    room = max(first_room, 2 * _WORD_OVERHEAD)
    # Text holding "=?" goes in B, so no part of a caller's encoded word is legible on the wire.
    if q_length <= b_length and "=?" not in text:
        return _q_words(text, min(room, _WORD))
    return _b_words(text, min(room, _WORD))


def _q_words(text: str, room: int) -> list[str]:
    words: list[str] = []
    pieces: list[str] = []
    length = 0
    for char in text:
        piece = "".join(_Q_BYTE[b] for b in char.encode()) if char >= "\x80" else _Q_BYTE[ord(char)]
        if length + len(piece) > room - _WORD_OVERHEAD:
            words.append(_Q_PREFIX + "".join(pieces) + _SUFFIX)
            pieces, length, room = [], 0, _WORD
        pieces.append(piece)
        length += len(piece)
    words.append(_Q_PREFIX + "".join(pieces) + _SUFFIX)
    return words


def _b_words(text: str, room: int) -> list[str]:
    words: list[str] = []
    start = size = 0
    for index, char in enumerate(text):
        width = len(char.encode())
        if size + width > (room - _WORD_OVERHEAD) // 4 * 3:
            words.append(_b_word(text[start:index]))
            start, size, room = index, 0, _WORD
        size += width
    words.append(_b_word(text[start:]))
    return words


def _b_word(chunk: str) -> str:
    return _B_PREFIX + base64.b64encode(chunk.encode()).decode("ascii") + _SUFFIX


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
