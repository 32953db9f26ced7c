"""The Prometheus exporter-toolkit web configuration file (``--web.config.file``).

Operators already write these files for the Go exporters: TLS under
``tls_server_config``, bcrypt-hashed users under ``basic_auth_users`` and extra
response headers under ``http_server_config.headers``. This module parses and
validates such a file into plain dataclasses and builds the server's
:class:`ssl.SSLContext`, so that every mistake surfaces at start-up as one
clear :class:`WebConfigError` instead of at the first scrape.

What ft-exporter does not do is refused rather than silently skipped, because
skipping a security setting weakens the server behind the operator's back:
inline ``cert``/``key``, ``cipher_suites``, ``curve_preferences``,
``client_allowed_sans``, ``rate_limit``, TLS 1.0/1.1 and the
``RequireAnyClientCert`` policy (Python's ``ssl`` cannot ask for a certificate
without verifying it). Settings with no security effect (``http2``) are
accepted with a warning.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import ssl
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import bcrypt
import yaml

#: TLS versions by their toolkit names; TLS10 and TLS11 are refused.
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
#: Headers the toolkit lets an operator add, with their allowed values (None: any).
EXTRA_HEADERS: Mapping[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
#: Seconds a client gets to complete the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Realm sent in ``WWW-Authenticate`` with every 401.
REALM = "ft-exporter"

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_ca",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
_HTTP_KEYS = ("headers", "http2")
_NOT_SUPPORTED = {
    "rate_limit": "rate limiting is not supported by ft-exporter",
    "tls_server_config.cert": "inline certificates are not supported; use cert_file",
    "tls_server_config.key": "inline keys are not supported; use key_file",
    "tls_server_config.cipher_suites": "cipher_suites is not supported by ft-exporter "
    "(it uses Python's secure defaults); remove it",
    "tls_server_config.curve_preferences": "curve_preferences is not supported by "
    "ft-exporter (it uses OpenSSL's defaults); remove it",
    "tls_server_config.client_allowed_sans": "client_allowed_sans is not supported by "
    "ft-exporter; trust a dedicated client CA instead",
}
#: ``$2a$``/``$2b$``/``$2y$``, a two-digit cost of 04..31, 22 salt and 31 hash characters.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
#: bcrypt only ever reads this many bytes of a password.
_BCRYPT_MAX_PASSWORD = 72


class WebConfigError(ValueError):
    """The web configuration cannot work; the message is one line."""


@dataclass(frozen=True)
class TLSSettings:
    """``tls_server_config`` with paths already resolved against the file's folder."""

    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str = ""
    client_ca: str = ""
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        if self.client_auth_type == "RequireAndVerifyClientCert":
            return ssl.CERT_REQUIRED
        if self.client_auth_type == "VerifyClientCertIfGiven":
            return ssl.CERT_OPTIONAL
        return ssl.CERT_NONE


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration; the default serves plain HTTP without auth."""

    tls: TLSSettings | None = None
    #: Built from ``tls`` by :func:`load`; None means plain HTTP.
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    #: (user, bcrypt hash) pairs; empty means no authentication.
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    headers: tuple[tuple[str, str], ...] = ()
    #: Accepted but ineffective settings, to be logged once logging is set up.
    warnings: tuple[str, ...] = ()

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a second ``alice:`` is a mistake)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str) and key in seen:
            mark = key_node.start_mark
            raise WebConfigError(
                f"duplicate key {key!r} at line {mark.line + 1}, column {mark.column + 1}"
            )
        seen.add(key if isinstance(key, str) else id(key_node))
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _yaml_error(exc: yaml.YAMLError) -> WebConfigError:
    """YAML's messages span lines; keep the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "syntax error"
        return WebConfigError(
            f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        )
    return WebConfigError("invalid YAML: " + " ".join(str(exc).split()))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where} must be a map, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise WebConfigError(f"{where} has a key that is not a string: {key!r}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    for key in data:
        name = f"{where}.{key}" if where else key
        if name in _NOT_SUPPORTED:
            raise WebConfigError(f"{name}: {_NOT_SUPPORTED[name]}")
        if key not in allowed:
            raise WebConfigError(
                f"unknown key {name!r} (allowed{' in ' + where if where else ''}: "
                f"{', '.join(allowed)})"
            )


def _string(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WebConfigError(f"{where}.{key} must be a string, got {_kind(value)}")
    return value


def _bool(data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise WebConfigError(f"{where}.{key} must be true or false, got {value!r}")
    return value


def _tls_version(data: Mapping[str, Any], key: str, default: str) -> ssl.TLSVersion:
    name = _string(data, key, "tls_server_config") or default
    if name in ("TLS10", "TLS11"):
        raise WebConfigError(
            f"tls_server_config.{key} {name} is not supported; ft-exporter needs TLS12 or TLS13"
        )
    if name not in TLS_VERSIONS:
        raise WebConfigError(
            f"tls_server_config.{key} must be one of {', '.join(TLS_VERSIONS)}, got {name!r}"
        )
    return TLS_VERSIONS[name]


def _resolve(path: str, base_dir: str) -> str:
    """Relative paths are relative to the web config file, as in the toolkit."""
    if not path or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)


def _parse_tls(value: Any, base_dir: str) -> TLSSettings | None:
    where = "tls_server_config"
    data = _mapping(value, where)
    _check_keys(data, _TLS_KEYS, where)
    cert_file = _string(data, "cert_file", where)
    key_file = _string(data, "key_file", where)
    auth_type = _string(data, "client_auth_type", where)
    ca_file = _string(data, "client_ca_file", where)
    ca_text = _string(data, "client_ca", where)
    prefer_server = _bool(data, "prefer_server_cipher_suites", where, True)
    min_version = _tls_version(data, "min_version", "TLS12")
    max_version = _tls_version(data, "max_version", "TLS13")
    if not any(v is not None for v in data.values()):
        return None  # an empty section means plain HTTP, as in the toolkit
    if not cert_file and not key_file:
        raise WebConfigError(f"{where} needs cert_file and key_file to serve TLS")
    if not cert_file:
        raise WebConfigError(f"{where}.cert_file is missing (key_file is set)")
    if not key_file:
        raise WebConfigError(f"{where}.key_file is missing (cert_file is set)")
    auth_type = auth_type or "NoClientCert"
    if auth_type not in CLIENT_AUTH_TYPES and auth_type != "RequireClientCert":
        raise WebConfigError(
            f"{where}.client_auth_type must be one of {', '.join(CLIENT_AUTH_TYPES)}, "
            f"got {auth_type!r}"
        )
    if auth_type in ("RequireAnyClientCert", "RequireClientCert"):
        raise WebConfigError(
            f"{where}.client_auth_type {auth_type} (any certificate, unverified) is not "
            "supported; use RequireAndVerifyClientCert with client_ca_file"
        )
    if ca_file and ca_text:
        raise WebConfigError(f"{where}: set client_ca_file or client_ca, not both")
    has_ca = bool(ca_file or ca_text)
    if has_ca and auth_type in ("NoClientCert", "RequestClientCert"):
        raise WebConfigError(
            f"{where}: a client CA is configured but client_auth_type is {auth_type}; "
            "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
        )
    if not has_ca and auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        raise WebConfigError(
            f"{where}.client_auth_type {auth_type} needs client_ca_file (the CA that signs "
            "client certificates)"
        )
    if min_version > max_version:
        raise WebConfigError(f"{where}.min_version is newer than max_version")
    return TLSSettings(
        cert_file=_resolve(cert_file, base_dir),
        key_file=_resolve(key_file, base_dir),
        client_auth_type=auth_type,
        client_ca_file=_resolve(ca_file, base_dir),
        client_ca=ca_text,
        min_version=min_version,
        max_version=max_version,
        prefer_server_cipher_suites=prefer_server,
    )


def _parse_http(value: Any) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    where = "http_server_config"
    data = _mapping(value, where)
    _check_keys(data, _HTTP_KEYS, where)
    warnings = []
    if _bool(data, "http2", where, False):
        warnings.append(f"{where}.http2 is ignored: ft-exporter serves HTTP/1.1 only")
    headers = _mapping(data.get("headers"), f"{where}.headers")
    out: list[tuple[str, str]] = []
    for name, text in headers.items():
        if text is None:
            text = ""
        if name not in EXTRA_HEADERS:
            raise WebConfigError(
                f"{where}.headers: header {name!r} cannot be configured "
                f"(allowed: {', '.join(EXTRA_HEADERS)})"
            )
        if not isinstance(text, str):
            raise WebConfigError(f"{where}.headers.{name} must be a string, got {_kind(text)}")
        allowed = EXTRA_HEADERS[name]
        if allowed is not None and text not in allowed:
            raise WebConfigError(
                f"{where}.headers.{name} must be one of {', '.join(allowed)}, got {text!r}"
            )
        if any(ch in text for ch in "\r\n\0"):
            raise WebConfigError(f"{where}.headers.{name} must be a single line")
        if text:  # blank means unset, as in the toolkit
            out.append((name, text))
    return tuple(out), warnings


def bcrypt_cost(hashed: str | bytes) -> int:
    """The cost of a hash ``_BCRYPT_RE`` accepted: the two digits after ``$2b$``."""
    return int(hashed[4:6])


def dummy_cost(hashes: Iterable[str | bytes]) -> int:
    """The cost of the hash unknown users are checked against: the users' most common one.

    An unknown user then takes as long as most known users (all of them, when they share
    one cost, as they should); ties go to the higher cost.
    """
    counts = Counter(bcrypt_cost(hashed) for hashed in hashes)
    return max(counts, key=lambda cost: (counts[cost], cost))


def _parse_users(value: Any) -> tuple[tuple[str, str], ...]:
    where = "basic_auth_users"
    data = _mapping(value, where)
    users: list[tuple[str, str]] = []
    for user, hashed in data.items():
        if not user or ":" in user:
            raise WebConfigError(f"{where}: user name {user!r} must be non-empty without ':'")
        if not isinstance(hashed, str):
            raise WebConfigError(
                f"{where}: the password of user {user!r} must be a bcrypt hash string, "
                f"got {_kind(hashed)}"
            )
        if not _BCRYPT_RE.fullmatch(hashed):
            # Never echo the value: it may well be a plaintext password.
            raise WebConfigError(
                f"{where}: the password of user {user!r} is not a bcrypt hash; store a hash "
                "($2y$10$...), never the password itself"
            )
        users.append((user, hashed))
    return tuple(users)


def parse(text: str, base_dir: str = "") -> WebConfig:
    """Parse and validate the file's text; reads no other file and builds no context."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    top = _mapping(data, "the web config")
    _check_keys(top, _TOP_KEYS, "")
    tls = _parse_tls(top.get("tls_server_config"), base_dir)
    headers, warnings = _parse_http(top.get("http_server_config"))
    users = _parse_users(top.get("basic_auth_users"))
    costs = sorted({bcrypt_cost(hashed) for _, hashed in users})
    if len(costs) > 1:
        warnings.append(
            f"basic_auth_users mix bcrypt costs ({', '.join(map(str, costs))}): a wrong "
            "password takes longer for some users than others, so a client can tell by the "
            "response time which user names exist; hash every password with the same cost"
        )
    if users and tls is None:
        warnings.append(
            "basic_auth_users without tls_server_config: passwords cross the network in clear"
        )
    if tls is not None and tls.client_auth_type == "RequestClientCert":
        warnings.append(
            "tls_server_config.client_auth_type RequestClientCert works as NoClientCert: "
            "ft-exporter makes no use of unverified client certificates"
        )
    return WebConfig(tls=tls, users=users, headers=headers, warnings=tuple(warnings))


def _check_readable(what: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise WebConfigError(
            f"cannot read tls_server_config.{what} {path!r}: {exc.strerror}"
        ) from None


def _refuse_password() -> str:
    raise WebConfigError("tls_server_config.key_file is encrypted; use an unencrypted key")


def build_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """The server context: certificate, key, client verification and versions checked now."""
    for what, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        _check_readable(what, path)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=tls.cert_file)
    except ssl.SSLError:
        raise WebConfigError(
            f"tls_server_config.cert_file {tls.cert_file!r} holds no PEM certificate"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_password)
    except ssl.SSLError as exc:
        if exc.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
            raise WebConfigError(
                f"tls_server_config.key_file {tls.key_file!r} does not match "
                f"cert_file {tls.cert_file!r}"
            ) from None
        raise WebConfigError(
            f"tls_server_config.key_file {tls.key_file!r} holds no usable PEM private key"
        ) from None
    if tls.client_ca_file:
        _check_readable("client_ca_file", tls.client_ca_file)
    if tls.client_ca_file or tls.client_ca:
        try:
            if tls.client_ca_file:
                context.load_verify_locations(cafile=tls.client_ca_file)
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        except ssl.SSLError:
            source = repr(tls.client_ca_file) if tls.client_ca_file else "(inline)"
            raise WebConfigError(
                f"tls_server_config client CA {source} holds no PEM certificate"
            ) from None
    context.verify_mode = tls.verify_mode
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def load(path: str) -> WebConfig:
    """Read, validate and build everything ``path`` asks for, or raise WebConfigError."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise WebConfigError(f"cannot read {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WebConfigError(f"{path!r} is not UTF-8 text") from None
    web = parse(text, os.path.dirname(path))
    if web.tls is None:
        return web
    return replace(web, ssl_context=build_ssl_context(web.tls))


def parse_basic_authorization(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) from ``Authorization: Basic ...``, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password


class BasicAuth:
    """Checks basic-auth credentials against bcrypt hashes, in the toolkit's manner.

    bcrypt is slow on purpose, so results are cached under a SHA-256 of
    (user, hash, password) in a bounded LRU; the password itself is never
    stored. An unknown user is checked against a dummy hash of the users' most
    common cost (:func:`dummy_cost`), so it takes as long as a known one when all
    users share a cost; :func:`parse` warns when they don't. One bcrypt runs at a
    time, so a flood of guesses costs one core, not all of them.
    """

    def __init__(self, users: Iterable[tuple[str, str]], cache_size: int = 1024) -> None:
        self._users = {user: hashed.encode() for user, hashed in users}
        if not self._users:
            raise ValueError("BasicAuth needs at least one user")
        cost = dummy_cost(self._users.values())
        self._dummy = bcrypt.hashpw(secrets.token_hex(16).encode(), bcrypt.gensalt(cost))
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def _lookup(self, authorization: str | None) -> tuple[bytes, bytes, bool, bytes] | None:
        """(cache key, hash to check against, user known, password), or None when malformed."""
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return None
        user_bytes, password = credentials
        stored = self._users.get(user_bytes.decode("utf-8", errors="surrogateescape"))
        hashed = stored if stored is not None else self._dummy
        digest = hashlib.sha256()
        for part in (user_bytes, hashed, password):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest(), hashed, stored is not None, password

    def cached(self, authorization: str | None) -> bool | None:
        """The answer without bcrypt when there is one (malformed, or seen before); else None.

        Cheap enough for the server's event loop, so a scraper whose credentials
        were checked once is never queued behind a flood of guesses.
        """
        found = self._lookup(authorization)
        if found is None:
            return False
        with self._cache_lock:
            cached = self._cache.get(found[0])
            if cached is not None:
                self._cache.move_to_end(found[0])
            return cached

    def check(self, authorization: str | None) -> bool:
        """True when the ``Authorization`` header names a user with the right password."""
        found = self._lookup(authorization)
        if found is None:
            return False
        key, hashed, known, password = found
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        with self._bcrypt_lock:
            computed = bcrypt.hashpw(password[:_BCRYPT_MAX_PASSWORD], hashed)
        ok = hmac.compare_digest(computed, hashed) and known
        with self._cache_lock:
            self._cache[key] = ok
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ok

    @property
    def dummy_cost(self) -> int:
        """The cost of the dummy hash, read from the hash itself."""
        return bcrypt_cost(self._dummy)

    def cache_len(self) -> int:
        with self._cache_lock:
            return len(self._cache)
