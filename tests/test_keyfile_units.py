"""The key file parser and follower, in-process: exact refusals, exact log lines.

tests/test_keyfile.py runs the same rules through the real exporter; these tests pin
each message and each branch, so that a changed word or a dropped check fails here.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import pytest

from ft_exporter import keyfile
from ft_exporter.keyfile import (
    KEY_FILE_FLAG,
    MAX_KEY_FILE_BYTES,
    InvalidKey,
    KeyFile,
    clean_key,
    read_key_file,
)
from ft_exporter.logs import REPEAT_LOG_INTERVAL
from ft_exporter.secret import Secret

KEY = "sk-0123456789abcdef"
NEW_KEY = "sk-fedcba9876543210"
RULE = "an API key is printable ASCII without spaces"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (KEY, KEY),
        (f"  {KEY}\r\n", KEY),
        (f"\ufeff{KEY}\n", KEY),
        (f" \ufeff {KEY} ", KEY),
        ("!~", "!~"),
        ("ABC-XYZ", "ABC-XYZ"),
        ("", ""),
        (" \n\ufeff\n", ""),
    ],
)
def test_clean_key_strips_bom_and_whitespace(text: str, key: str) -> None:
    assert clean_key(text, "src") == key


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{KEY}\n{KEY}", "more than one line"),
        (f"{KEY}\r{KEY}", "more than one line"),
        ("sk- 1", "a space inside the key"),
        ("sk-\u00e91", "a character that is not ASCII"),
        ("sk-\x001", "a control character"),
        ("sk-\t1", "a control character"),
        ("sk-\x7f1", "a control character"),
    ],
)
def test_clean_key_names_the_problem_and_never_the_key(text: str, problem: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        clean_key(text, "DASHSCOPE_API_KEY")
    assert str(caught.value) == f"DASHSCOPE_API_KEY holds {problem}; {RULE}"


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_read_key_file_returns_the_key_and_the_file_identity(tmp_path: Path) -> None:
    path = write(tmp_path / "key", f"\ufeff{KEY}\r\n".encode())
    key, ident = read_key_file(path)
    st = os.stat(path)
    assert key == KEY
    assert ident == (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def test_a_key_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    padded = KEY + " " * (MAX_KEY_FILE_BYTES - len(KEY))
    assert read_key_file(write(tmp_path / "key", padded.encode()))[0] == KEY


def refusal(path: str) -> str:
    with pytest.raises(InvalidKey) as caught:
        read_key_file(path)
    return str(caught.value)


def test_read_key_file_refusals(tmp_path: Path) -> None:
    def source(path: object) -> str:
        return f"{KEY_FILE_FLAG} {str(path)!r}"

    big = write(tmp_path / "big", b"k" * (MAX_KEY_FILE_BYTES + 1))
    assert refusal(big) == (f"{source(big)} is larger than 4096 bytes; it must hold the key alone")
    empty = write(tmp_path / "empty", b" \n")
    assert refusal(empty) == f"{source(empty)} is empty"
    latin = write(tmp_path / "latin", b"sk-\xe9")
    assert refusal(latin) == f"{source(latin)} is not UTF-8 text"
    two = write(tmp_path / "two", b"a1234567\nb1234567")
    assert refusal(two) == f"{source(two)} holds more than one line; {RULE}"
    missing = tmp_path / "missing"
    assert refusal(str(missing)) == f"cannot read {source(missing)}: No such file or directory"
    assert refusal(str(tmp_path)) == (
        f"{source(tmp_path)} is a directory, not a file holding the key"
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert refusal(str(fifo)) == f"{source(fifo)} is a FIFO, not a file holding the key"
    assert refusal("/dev/null") == (
        f"{source('/dev/null')} is a character device, not a file holding the key"
    )
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        # A socket cannot be opened at all; its kind shows in _kind's naming alone.
        assert refusal(str(sock_path)).startswith(f"cannot read {source(sock_path)}: ")


@pytest.mark.parametrize(
    ("mode", "name"),
    [
        (stat.S_IFDIR, "a directory"),
        (stat.S_IFIFO, "a FIFO"),
        (stat.S_IFCHR, "a character device"),
        (stat.S_IFBLK, "a block device"),
        (stat.S_IFSOCK, "a socket"),
        (stat.S_IFLNK, "not a regular file"),
    ],
)
def test_every_kind_of_file_is_named(mode: int, name: str) -> None:
    assert keyfile._kind(mode) == name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    out = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == keyfile.log.name]
    caplog.clear()
    return out


def test_key_file_follows_changes_and_logs_each_failure_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger=keyfile.log.name)
    path = tmp_path / "key"
    path.write_text(KEY)
    reads: list[str] = []
    real_read = keyfile.read_key_file

    def counting_read(name: str) -> tuple[str, keyfile.FileId]:
        reads.append(name)
        return real_read(name)

    monkeypatch.setattr(keyfile, "read_key_file", counting_read)
    learned: list[str] = []
    clock = Clock()
    source = KeyFile(str(path), Secret(KEY), on_change=learned.append, monotonic=clock)
    assert repr(source) == f"KeyFile(path={str(path)!r}, key=Secret('<redacted>'))"

    assert source.current().reveal() == KEY
    assert source.current().reveal() == KEY
    assert reads == [str(path)]  # the same file is read once, then only stat'ed
    assert learned == []
    assert messages(caplog) == []

    path.write_text(f" {NEW_KEY}\n")
    assert source.current().reveal() == NEW_KEY
    assert learned == [NEW_KEY]
    assert messages(caplog) == [("INFO", "API key file changed, using the new key")]

    path.write_text("two\nlines")
    bad = f"{KEY_FILE_FLAG} {str(path)!r} holds more than one line; {RULE}"
    assert source.current().reveal() == NEW_KEY
    assert source.current().reveal() == NEW_KEY
    assert len(reads) == 3  # an unchanged bad file is not read again
    assert messages(caplog) == [("ERROR", f"{bad}; keeping the previous key")]

    path.unlink()
    gone = f"cannot read {KEY_FILE_FLAG} {str(path)!r}: No such file or directory"
    assert source.current().reveal() == NEW_KEY
    assert messages(caplog) == [("ERROR", f"{gone}; keeping the previous key")]
    clock.now += REPEAT_LOG_INTERVAL - 1
    assert source.current().reveal() == NEW_KEY
    assert messages(caplog) == []
    clock.now += 1
    assert source.current().reveal() == NEW_KEY
    assert messages(caplog) == [
        ("ERROR", f"API key file still unusable (3 checks in a row): {gone}")
    ]

    path.write_text(NEW_KEY)  # the same key again: no change to announce, failure over
    assert source.current().reveal() == NEW_KEY
    assert learned == [NEW_KEY]
    assert messages(caplog) == []
    path.unlink()
    assert source.current().reveal() == NEW_KEY
    assert messages(caplog) == [("ERROR", f"{gone}; keeping the previous key")]


def test_a_key_file_without_a_listener_still_switches(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(NEW_KEY)
    source = KeyFile(str(path), Secret(KEY))
    assert source.current().reveal() == NEW_KEY


def test_a_key_as_long_as_the_file_limit_is_read_whole(tmp_path: Path) -> None:
    key = "k" * MAX_KEY_FILE_BYTES
    assert read_key_file(write(tmp_path / "key", key.encode()))[0] == key


def test_a_file_larger_than_it_claims_is_still_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files in /proc report a size of 0; only MAX_KEY_FILE_BYTES + 1 bytes are read."""
    path = write(tmp_path / "grown", b"k" * 5000)
    real_fstat = os.fstat

    def claims_empty(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        return os.stat_result(
            (
                st.st_mode,
                st.st_ino,
                st.st_dev,
                st.st_nlink,
                st.st_uid,
                st.st_gid,
                0,
                st.st_atime,
                st.st_mtime,
                st.st_ctime,
            )
        )

    monkeypatch.setattr(os, "fstat", claims_empty)
    assert refusal(path) == (
        f"{KEY_FILE_FLAG} {path!r} is larger than 4096 bytes; it must hold the key alone"
    )


def test_a_read_error_names_the_file_and_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "key", KEY.encode())

    def failing_read(fd: int, size: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "read", failing_read)
    assert refusal(path) == f"cannot read {KEY_FILE_FLAG} {path!r}: Input/output error"
