"""The API key: what a key may hold, reading it from a file, and following that file.

A key is printable ASCII without spaces (``!`` to ``~``): it travels in an HTTP header,
which must be encodable, and a space, a line break or a control character in it is a
copy-and-paste accident, not a key. A UTF-8 byte order mark and whitespace around the key
are stripped. Nothing here ever puts the key, or any part of it, into an error message.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable

from ft_exporter.logs import FailureLog
from ft_exporter.secret import Secret

log = logging.getLogger(__name__)

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


class NotRegularFile(OSError):
    """A path that is no regular file; ``kind`` says what it is ("a FIFO")."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class FileTooLarge(OSError):
    """A file larger than the reader's bound."""


def read_regular_file(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of ``path`` and its status, if it is a regular file of at most ``limit`` bytes.

    The file is checked before a byte is read: a FIFO, a device (``/dev/zero``) or a
    directory raises NotRegularFile without blocking, and at most ``limit + 1`` bytes are
    ever read, whatever the file claims to be (FileTooLarge past ``limit``). Any other
    failure is the OSError itself.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(_kind(st.st_mode))
        if st.st_size > limit:
            raise FileTooLarge()
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge()
    return data, st


def read_key_file(path: str, source: str = "") -> tuple[str, FileId]:
    """The key in ``path`` and the identity of the file it was read from.

    At most MAX_KEY_FILE_BYTES + 1 bytes are read (see :func:`read_regular_file`).
    ``source`` names the file in messages; by default the flag and the path.
    """
    source = source or f"{KEY_FILE_FLAG} {path!r}"
    try:
        data, st = read_regular_file(path, MAX_KEY_FILE_BYTES)
    except NotRegularFile as exc:
        raise InvalidKey(f"{source} is {exc.kind}, not a file holding the key") from None
    except FileTooLarge:
        raise InvalidKey(
            f"{source} is larger than {MAX_KEY_FILE_BYTES} bytes; it must hold the key alone"
        ) from None
    except OSError as exc:
        raise InvalidKey(f"cannot read {source}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKey(f"{source} is not UTF-8 text") from None
    key = clean_key(text, source)
    if not key:
        raise InvalidKey(f"{source} is empty")
    return key, _file_id(st)


class KeyFile:
    """The key in a file, re-read when the file changes: a rotation needs no restart.

    The client asks for :meth:`current` before every request; that costs one ``stat``
    (which follows symlinks, as a Kubernetes Secret volume swaps its ``..data`` link),
    and the file is read again only when it is another file or has changed. A
    replacement that is not a usable key is refused with one logged error, and the
    previous key stays in use.
    """

    def __init__(
        self,
        path: str,
        key: Secret,
        *,
        on_change: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``key`` is the key read at start; ``on_change`` learns every new key first
        (the log's redaction filter)."""
        self.path = path
        self._key = key
        self._file: FileId | None = None  # unknown: the first request checks the file
        self._on_change = on_change
        self._failures = FailureLog(log, monotonic)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyFile(path={self.path!r}, key={self._key!r})"

    def current(self) -> Secret:
        """The key to send now: the file's, or the last good one if the file is unusable."""
        with self._lock:
            try:
                now = _file_id(os.stat(self.path))
            except OSError as exc:
                self._failed(f"cannot read {KEY_FILE_FLAG} {self.path!r}: {exc.strerror}")
                return self._key
            if now == self._file:
                return self._key
            # Remembered even when unusable: an unchanged bad file is not re-read each time.
            self._file = now
            try:
                key, _ = read_key_file(self.path)
            except InvalidKey as exc:
                self._failed(str(exc))
                return self._key
            self._failures.recovered()
            if key != self._key.reveal():
                if self._on_change is not None:
                    self._on_change(key)
                self._key = Secret(key)
                log.info("API key file changed, using the new key")
            return self._key

    def _failed(self, message: str) -> None:
        self._failures.failed(
            (message,),
            "%s; keeping the previous key",
            "API key file still unusable (%d checks in a row): %s",
            message,
        )
