"""The API key: what a key may hold, and reading it from a file.

A key is printable ASCII without spaces (``!`` to ``~``): it travels in an HTTP header,
which must be encodable, and a space, a line break or a control character in it is a
copy-and-paste accident, not a key. A UTF-8 byte order mark and whitespace around the key
are stripped. Nothing here ever puts the key, or any part of it, into an error message.
"""

from __future__ import annotations

import os
import stat

#: A key is tens of bytes; a key file bigger than this holds something else.
MAX_KEY_FILE_BYTES = 4096
KEY_FILE_FLAG = "--dashscope.api-key-file"
_BOM = "\ufeff"
_RULE = "an API key is printable ASCII without spaces"


class InvalidKey(ValueError):
    """A key or key file that cannot be used; the message names its source, never the key."""


def clean_key(text: str, source: str) -> str:
    """``text`` without BOM and surrounding whitespace, if it is a usable key; "" if empty.

    ``source`` names where the text came from, for the error message.
    """
    key = text.strip().removeprefix(_BOM).strip()
    for char in key:
        if char in "\r\n":
            problem = "more than one line"
        elif char == " ":
            problem = "a space inside the key"
        elif not char.isascii():
            problem = "a character that is not ASCII"
        elif not char.isprintable():
            problem = "a control character"
        else:
            continue
        raise InvalidKey(f"{source} holds {problem}; {_RULE}")
    return key


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


FileId = tuple[int, ...]


def _file_id(st: os.stat_result) -> FileId:
    """What changes when a file is replaced (a new inode) or rewritten in place."""
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def read_key_file(path: str) -> tuple[str, FileId]:
    """The key in ``path`` and the identity of the file it was read from.

    The file is checked before a byte is read: a FIFO, a device (``/dev/zero``) or a
    directory is refused without blocking, and at most MAX_KEY_FILE_BYTES + 1 bytes are
    ever read, whatever the file claims to be.
    """
    source = f"{KEY_FILE_FLAG} {path!r}"
    too_big = f"{source} is larger than {MAX_KEY_FILE_BYTES} bytes; it must hold the key alone"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise InvalidKey(f"cannot read {source}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidKey(f"{source} is {_kind(st.st_mode)}, not a file holding the key")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise InvalidKey(too_big)
        data = b""
        while len(data) <= MAX_KEY_FILE_BYTES:
            chunk = os.read(fd, MAX_KEY_FILE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise InvalidKey(f"cannot read {source}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidKey(too_big)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKey(f"{source} is not UTF-8 text") from None
    key = clean_key(text, source)
    if not key:
        raise InvalidKey(f"{source} is empty")
    return key, _file_id(st)
