"""Where the S3 keys come from, by reference only (never a setting's value, never a
command line): a root-only credentials file, systemd credentials, or botocore's own
chain (environment, shared files, profile). Nothing here logs a key."""

from __future__ import annotations

import configparser
import os
import stat

from s3pvefs.config import StoreConfig
from s3pvefs.errors import ConfigError

KEYS = ("aws_access_key_id", "aws_secret_access_key")
CUSTOMER_KEY_CREDENTIAL = "sse-customer-key"  # systemd LoadCredential= name of the SSE-C key


def resolve(cfg: StoreConfig) -> tuple[str, str] | None:
    """(access key, secret key), or None for botocore's chain."""
    if cfg.credentials_file:
        return _from_file(cfg.credentials_file, cfg.profile or "default")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")  # systemd LoadCredential=
    if directory and all(os.path.exists(os.path.join(directory, k)) for k in KEYS):
        values = []
        for k in KEYS:
            values.append(_read_text(os.path.join(directory, k), f"systemd credential {k}").strip())
        return values[0], values[1]
    return None


def customer_key(cfg: StoreConfig) -> bytes | None:
    """The SSE-C key (sse = "SSE-C"), from sse_customer_key_file (root-only) or the
    systemd credential sse-customer-key; None for the other modes."""
    from s3pvefs.store.encryption import decode_customer_key
    if cfg.sse != "SSE-C":
        return None
    if cfg.sse_customer_key_file:
        _root_only(cfg.sse_customer_key_file, "sse_customer_key_file")
        path, what = cfg.sse_customer_key_file, f"sse_customer_key_file {cfg.sse_customer_key_file}"
    else:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        path = os.path.join(directory, CUSTOMER_KEY_CREDENTIAL) if directory else ""
        if not path or not os.path.exists(path):
            raise ConfigError("sse = SSE-C needs its key: sse_customer_key_file (root-only, 32 bytes or base64) "
                              f"or the systemd credential {CUSTOMER_KEY_CREDENTIAL}")
        what = f"systemd credential {CUSTOMER_KEY_CREDENTIAL}"
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except OSError as e:
        raise ConfigError(f"{what}: {e.strerror or e}") from None
    return decode_customer_key(raw, what)


def _root_only(path: str, setting: str) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{setting} {path}: {e.strerror}") from None
    owner_ok = st.st_uid == 0 or st.st_uid == os.geteuid()
    if not owner_ok or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{setting} {path}: must be owned by root and not readable by group or "
                          f"others (now mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}): "
                          f"chown root {path} && chmod 600 {path}")


def _read_text(path: str, what: str) -> str:
    """A secret's file as text; a one-line ConfigError that never shows its content."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{what}: {e.strerror or e}") from None


def _from_file(path: str, section: str) -> tuple[str, str]:
    _root_only(path, "credentials_file")
    text = _read_text(path, f"credentials_file {path}")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text if text.lstrip().startswith("[") else "[default]\n" + text)
    except configparser.Error:
        raise ConfigError(f"credentials_file {path}: not in the AWS credentials format "
                          f"(aws_access_key_id = ... / aws_secret_access_key = ...)") from None
    if not parser.has_section(section):
        raise ConfigError(f"credentials_file {path}: no [{section}] section")
    values = []
    for key in KEYS:
        value = parser.get(section, key, fallback="").strip()
        if not value:
            raise ConfigError(f"credentials_file {path}: [{section}] has no {key}")
        values.append(value)
    return values[0], values[1]
