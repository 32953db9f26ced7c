"""The web config parser, the TLS context it builds and the basic-auth checker."""

from __future__ import annotations

import base64
import ssl
import textwrap
from pathlib import Path

import bcrypt
import pytest
from certs import Pki, tls_yaml
from conftest import basic_credentials, readme_section

from ft_exporter import config, webconfig
from ft_exporter.webconfig import BasicAuth, WebConfigError

COST = 4
PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(COST)).decode()


header = basic_credentials


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# --- parse(): the file's own text --------------------------------------------------------


def test_empty_file_means_plain_http_without_auth() -> None:
    web = webconfig.parse("")
    assert web == webconfig.WebConfig()
    assert web.scheme == "http"
    assert webconfig.parse("tls_server_config:\nbasic_auth_users: {}\n") == webconfig.WebConfig()


def test_full_file_is_parsed_and_relative_paths_follow_the_file() -> None:
    web = webconfig.parse(
        textwrap.dedent(
            f"""\
            tls_server_config:
              cert_file: tls/server.pem
              key_file: /abs/server-key.pem
              client_auth_type: RequireAndVerifyClientCert
              client_ca_file: ca.pem
              min_version: TLS13
              max_version: TLS13
              prefer_server_cipher_suites: false
            http_server_config:
              http2: false
              headers:
                X-Frame-Options: deny
                X-Content-Type-Options: nosniff
                Content-Security-Policy: ""
                X-XSS-Protection:
            basic_auth_users:
              alice: {HASH}
              bob: '{HASH.replace("$2b$", "$2y$")}'
            """
        ),
        base_dir="/etc/ft-exporter",
    )
    assert web.tls == webconfig.TLSSettings(
        cert_file="/etc/ft-exporter/tls/server.pem",
        key_file="/abs/server-key.pem",
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file="/etc/ft-exporter/ca.pem",
        min_version=ssl.TLSVersion.TLSv1_3,
        max_version=ssl.TLSVersion.TLSv1_3,
        prefer_server_cipher_suites=False,
    )
    assert web.tls.verify_mode == ssl.CERT_REQUIRED
    # A blank header value means "unset", as in the toolkit.
    assert web.headers == (("X-Frame-Options", "deny"), ("X-Content-Type-Options", "nosniff"))
    assert [user for user, _ in web.users] == ["alice", "bob"]
    assert web.warnings == ()
    assert HASH not in repr(web)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: [\n", "invalid YAML at line"),
        ("basic_auth_users:\n  alice: a\n bob: b\n", "invalid YAML at line 3"),
        ("- a\n- b\n", "the web config must be a map, got a list"),
        ("just text\n", "the web config must be a map, got a string"),
        ("tls_config: {}\n", "unknown key 'tls_config'"),
        ("basic_auth_user:\n  a: b\n", "unknown key 'basic_auth_user'"),
        ("tls_server_config:\n  certfile: a\n", "unknown key 'tls_server_config.certfile'"),
        ("http_server_config:\n  gzip: true\n", "unknown key 'http_server_config.gzip'"),
        ("tls_server_config: yes\n", "tls_server_config must be a map, got a boolean"),
        ("tls_server_config:\n  cert_file: 12\n  key_file: k\n", "cert_file must be a string"),
        ("basic_auth_users: [alice]\n", "basic_auth_users must be a map, got a list"),
        ("basic_auth_users:\n  1: x\n", "has a key that is not a string"),
        ("basic_auth_users:\n  alice: 42\n", "must be a bcrypt hash string, got a number"),
        ("http_server_config:\n  http2: maybe\n", "http2 must be true or false"),
        ("http_server_config:\n  headers: [a]\n", "headers must be a map"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: 1\n", "must be a string"),
        ("basic_auth_users:\n  a: x\n  a: y\n", "duplicate key 'a' at line 3"),
        ("tls_server_config:\n  cert_file: a\n", "key_file is missing"),
        ("tls_server_config:\n  key_file: a\n", "cert_file is missing"),
        ("tls_server_config:\n  min_version: TLS13\n", "needs cert_file and key_file"),
        ("rate_limit:\n  interval: 1s\n", "rate limiting is not supported"),
    ],
)
def test_malformed_files_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(WebConfigError) as err:
        webconfig.parse(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


TLS = "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  cert: PEM\n", "inline certificates are not supported; use cert_file"),
        ("  key: PEM\n", "inline keys are not supported; use key_file"),
        ("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites is not supported"),
        ("  curve_preferences: [X25519]\n", "curve_preferences is not supported"),
        ("  client_allowed_sans: [prometheus]\n", "client_allowed_sans is not supported"),
        ("  min_version: TLS10\n", "min_version TLS10 is not supported"),
        ("  max_version: TLS11\n", "max_version TLS11 is not supported"),
        ("  min_version: TLS14\n", "min_version must be one of TLS12, TLS13, got 'TLS14'"),
        ("  min_version: TLS13\n  max_version: TLS12\n", "min_version is newer than max_version"),
        ("  client_auth_type: Always\n", "client_auth_type must be one of NoClientCert"),
        ("  client_auth_type: RequireAnyClientCert\n", "RequireAnyClientCert (any certificate"),
        ("  client_auth_type: RequireClientCert\n", "RequireClientCert (any certificate"),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n",
            "VerifyClientCertIfGiven needs client_ca_file",
        ),
        ("  client_ca_file: ca.pem\n", "client CA is configured but client_auth_type is NoC"),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: a\n  client_ca: b\n",
            "set client_ca_file or client_ca, not both",
        ),
        ("  prefer_server_cipher_suites: 1\n", "prefer_server_cipher_suites must be true or"),
    ],
)
def test_tls_settings_ft_exporter_cannot_honour_are_refused(extra: str, message: str) -> None:
    with pytest.raises(WebConfigError) as err:
        webconfig.parse(TLS + extra)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ("    Server: nginx\n", "header 'Server' cannot be configured"),
        ("    X-Frame-Options: allow\n", "X-Frame-Options must be one of deny, sameorigin"),
        ("    X-Content-Type-Options: sniff\n", "must be one of nosniff"),
    ],
)
def test_only_the_toolkits_headers_and_values_are_allowed(headers: str, message: str) -> None:
    with pytest.raises(WebConfigError) as err:
        webconfig.parse("http_server_config:\n  headers:\n" + headers)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "value",
    [
        "hunter2",  # a plaintext password
        "$2b$10$tooshort",
        "$2b$03$" + "a" * 53,  # cost below bcrypt's minimum
        "$2x$10$" + "a" * 53,  # the broken $2x$ variant
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
    ],
)
def test_a_password_where_a_bcrypt_hash_belongs_is_refused_without_echoing_it(
    value: str,
) -> None:
    with pytest.raises(WebConfigError) as err:
        webconfig.parse(f"basic_auth_users:\n  alice: '{value}'\n")
    assert "password of user 'alice' is not a bcrypt hash" in str(err.value)
    assert value not in str(err.value)


@pytest.mark.parametrize("user", ["''", "'a:b'"])
def test_user_names_that_basic_auth_cannot_carry_are_refused(user: str) -> None:
    with pytest.raises(WebConfigError, match="must be non-empty without ':'"):
        webconfig.parse(f"basic_auth_users:\n  {user}: '{HASH}'\n")


def test_ineffective_settings_are_accepted_with_warnings() -> None:
    web = webconfig.parse(
        f"http_server_config:\n  http2: true\nbasic_auth_users:\n  alice: '{HASH}'\n"
        + TLS
        + "  client_auth_type: RequestClientCert\n"
    )
    assert len(web.warnings) == 2
    assert "http2 is ignored" in web.warnings[0]
    assert "RequestClientCert works as NoClientCert" in web.warnings[1]
    assert web.tls is not None
    assert web.tls.verify_mode == ssl.CERT_NONE
    plain = webconfig.parse(f"basic_auth_users:\n  alice: '{HASH}'\n")
    assert plain.warnings == (
        "basic_auth_users without tls_server_config: passwords cross the network in clear",
    )


# --- load(): the files it names, and the SSL context ------------------------------------


def test_valid_tls_file_builds_a_server_context(tmp_path: Path, pki: Pki) -> None:
    path = write(
        tmp_path / "web.yml",
        tls_yaml(
            pki,
            client_auth_type="VerifyClientCertIfGiven",
            client_ca_file=str(pki.ca),
            min_version="TLS13",
        ),
    )
    web = webconfig.load(str(path))
    assert web.scheme == "https"
    assert web.ssl_context is not None
    assert web.ssl_context.verify_mode == ssl.CERT_OPTIONAL
    assert web.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.ssl_context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert web.ssl_context.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_relative_paths_are_read_next_to_the_config_file(tmp_path: Path, pki: Pki) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "server.pem").write_bytes(pki.server_cert.read_bytes())
    (folder / "server-key.pem").write_bytes(pki.server_key.read_bytes())
    (folder / "ca.pem").write_bytes(pki.ca.read_bytes())
    write(
        folder / "web.yml",
        """\
        tls_server_config:
          cert_file: server.pem
          key_file: server-key.pem
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: ca.pem
        """,
    )
    web = webconfig.load(str(folder / "web.yml"))
    assert web.ssl_context is not None
    assert web.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_inline_client_ca_is_accepted(tmp_path: Path, pki: Pki) -> None:
    ca = textwrap.indent(pki.ca.read_text(), "    ")
    path = write(
        tmp_path / "web.yml",
        tls_yaml(pki, client_auth_type="RequireAndVerifyClientCert") + "  client_ca: |\n" + ca,
    )
    web = webconfig.load(str(path))
    assert web.ssl_context is not None
    assert web.ssl_context.cert_store_stats()["x509_ca"] == 1


def load_error(path: Path) -> str:
    with pytest.raises(WebConfigError) as err:
        webconfig.load(str(path))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_files_are_named(tmp_path: Path, pki: Pki) -> None:
    assert load_error(tmp_path / "nope.yml") == (
        f"cannot read {str(tmp_path / 'nope.yml')!r}: No such file or directory"
    )
    path = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: missing.pem\n  key_file: {pki.server_key}\n",
    )
    assert load_error(path) == (
        f"cannot read tls_server_config.cert_file {str(tmp_path / 'missing.pem')!r}: "
        "No such file or directory"
    )
    path = write(
        tmp_path / "web.yml",
        tls_yaml(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.pem"),
    )
    assert "cannot read tls_server_config.client_ca_file" in load_error(path)


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    path = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.stray_key}\n",
    )
    assert load_error(path) == (
        f"tls_server_config.key_file {str(pki.stray_key)!r} does not match "
        f"cert_file {str(pki.server_cert)!r}"
    )


def test_files_of_the_wrong_kind_are_refused(tmp_path: Path, pki: Pki) -> None:
    swapped = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki.server_key}\n  key_file: {pki.server_cert}\n",
    )
    assert "holds no PEM certificate" in load_error(swapped)
    not_a_key = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.ca}\n",
    )
    assert "holds no usable PEM private key" in load_error(not_a_key)
    encrypted = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.encrypted_key}\n",
    )
    assert "key_file is encrypted" in load_error(encrypted)
    bad_ca = write(
        tmp_path / "web.yml",
        tls_yaml(
            pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(pki.stray_key)
        ),
    )
    assert "client CA" in load_error(bad_ca)


# --- config.load(): the flag, its variable and the ConfigError ------------------------


def test_config_loads_the_web_config_from_flag_or_environment(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path / "web.yml", tls_yaml(pki) + f"basic_auth_users:\n  a: '{HASH}'\n")
    env = {"DASHSCOPE_API_KEY": "sk-x"}
    cfg = config.load([f"--web.config.file={path}"], env)
    assert cfg.web_config_file == str(path)
    assert cfg.web.ssl_context is not None
    assert cfg.health_no_auth is False
    from_env = config.load([], {**env, "FT_EXPORTER_WEB_CONFIG_FILE": str(path)})
    assert from_env.web.users == cfg.web.users
    assert config.load([], env).web == webconfig.WebConfig()


def test_config_wraps_web_config_errors_with_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", "basic_auth_users:\n  alice: hunter2\n")
    with pytest.raises(config.ConfigError) as err:
        config.load([f"--web.config.file={path}"], {"DASHSCOPE_API_KEY": "sk-x"})
    assert str(err.value).startswith(f"--web.config.file {str(path)!r}: basic_auth_users: ")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("argv", "env_value", "expected"),
    [
        ([], None, False),
        (["--web.health-no-auth"], None, True),
        ([], "1", True),
        ([], "true", True),
        ([], "0", False),
    ],
)
def test_health_no_auth_flag_and_variable(
    argv: list[str], env_value: str | None, expected: bool
) -> None:
    env = {"DASHSCOPE_API_KEY": "sk-x"}
    if env_value is not None:
        env["FT_EXPORTER_WEB_HEALTH_NO_AUTH"] = env_value
    assert config.load(argv, env).health_no_auth is expected


def test_health_no_auth_variable_must_be_a_boolean() -> None:
    env = {"DASHSCOPE_API_KEY": "sk-x", "FT_EXPORTER_WEB_HEALTH_NO_AUTH": "sometimes"}
    with pytest.raises(config.ConfigError, match="FT_EXPORTER_WEB_HEALTH_NO_AUTH must be one of "):
        config.load([], env)


# --- BasicAuth -------------------------------------------------------------------------


def test_basic_auth_accepts_only_the_right_password() -> None:
    auth = BasicAuth([("alice", HASH), ("bob", HASH.replace("$2b$", "$2y$"))])
    assert auth.check(header("alice", PASSWORD))
    assert auth.check(header("bob", PASSWORD))
    assert auth.check(header("alice", PASSWORD).replace("Basic", "basic"))
    assert not auth.check(header("alice", PASSWORD + "!"))
    assert not auth.check(header("alice", ""))
    assert not auth.check(header("mallory", PASSWORD))
    assert not auth.check(header("ALICE", PASSWORD))


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode(),
    ],
)
def test_basic_auth_rejects_malformed_headers(value: str | None) -> None:
    assert not BasicAuth([("alice", HASH)]).check(value)


def test_unknown_users_cost_a_bcrypt_like_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth([("alice", HASH)])
    calls: list[bytes] = []
    real = bcrypt.hashpw

    def counting(password: bytes, salt: bytes) -> bytes:
        calls.append(salt)
        return real(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", counting)
    assert not auth.check(header("mallory", "guess"))
    assert not auth.check(header("alice", "guess"))
    assert len(calls) == 2
    # The dummy hash has the users' cost, so both checks do the same work.
    assert calls[0][:7] == calls[1][:7] == HASH[:7].encode()
    assert calls[0] != calls[1]


def test_results_are_cached_and_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth([("alice", HASH)], cache_size=3)
    calls: list[bytes] = []
    real = bcrypt.hashpw

    def counting(password: bytes, salt: bytes) -> bytes:
        calls.append(salt)
        return real(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", counting)
    for _ in range(3):
        assert auth.check(header("alice", PASSWORD))
        assert not auth.check(header("alice", "wrong"))
    assert len(calls) == 2  # once per distinct (user, password)
    for n in range(5):
        auth.check(header("alice", f"guess-{n}"))
    assert auth.cache_len() == 3
    assert auth.check(header("alice", PASSWORD))  # evicted, checked again: still right
    assert len(calls) == 8


def test_passwords_longer_than_bcrypt_reads_are_compared_on_its_72_bytes() -> None:
    long_password = "p" * 100
    hashed = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(COST)).decode()
    auth = BasicAuth([("alice", hashed)])
    assert auth.check(header("alice", long_password))
    assert not auth.check(header("alice", "q" * 100))


def test_readme_example_is_a_valid_web_config() -> None:
    section = readme_section("### Securing the endpoint")
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    web = webconfig.parse(example, base_dir="/etc/ft-exporter")
    assert web.tls is not None
    assert web.tls.cert_file == "/etc/ft-exporter/server.pem"
    assert web.headers == (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "deny"))
    assert BasicAuth(web.users).check(header("prometheus", "change-me"))
