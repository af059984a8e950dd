"""Credentials (the Materials Project API key and friends) and their redaction.

Credentials come from exactly two places, in this order:

1. the process environment (``MP_API_KEY=... matscreen ...``), or
2. a secrets file of ``NAME=value`` lines: ``--secrets-file``, else ``$MATSCREEN_SECRETS_FILE``,
   else ``~/.config/matscreen/secrets.env``.  The file must be readable by its owner only
   (``chmod 600``); a group- or world-readable file is refused.

They are never written to a campaign spec, a log line, MLflow params/tags/artifacts or a Ray
job's runtime environment.  :func:`redact` / :func:`redact_text` replace every known secret value
(and every value stored under a secret-looking name) by ``"***"``; the Tracker calls them on
everything it logs, and :func:`install_log_redaction` filters the ``logging`` module.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Any, Mapping

from common.errors import InputError

MASK = "***"
SECRETS_FILE_ENV = "MATSCREEN_SECRETS_FILE"
DEFAULT_SECRETS_FILE = Path("~/.config/matscreen/secrets.env")

# Names that are always secret; any name matching SECRET_NAME_PATTERN is treated as secret too.
KNOWN_SECRET_NAMES = (
    "MP_API_KEY",
    "PMG_MAPI_KEY",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "HF_TOKEN",
    "WANDB_API_KEY",
)
SECRET_NAME_PATTERN = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY)", re.I)
# user:password@host inside URIs (tracking URIs, database URLs)
_URI_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
# Values shorter than this are not scrubbed from free text (too many false hits, e.g. "1").
_MIN_SECRET_LEN = 6


def is_secret_name(name: str) -> bool:
    """True when an environment/config name holds a credential (``MP_API_KEY``, ``*_TOKEN``, ...)."""
    upper = name.upper()
    return upper in KNOWN_SECRET_NAMES or bool(SECRET_NAME_PATTERN.search(upper))


def secrets_file_path(secrets_file: str | os.PathLike | None = None) -> Path:
    """The secrets file in use: the argument, else ``$MATSCREEN_SECRETS_FILE``, else the default."""
    chosen = secrets_file or os.environ.get(SECRETS_FILE_ENV) or DEFAULT_SECRETS_FILE
    return Path(chosen).expanduser()


def read_secrets_file(path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``NAME=value`` secrets file (``#`` comments, optional quotes, optional ``export``).

    Raises InputError when the file is readable by group or others, or a line is malformed.
    """
    path = Path(path).expanduser()
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"secrets file {path} is readable by other users; run `chmod 600 {path}`")
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            # never echo the line: it may hold the secret itself
            raise InputError(f"secrets file {path} line {lineno} is not NAME=value; fix that line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def get_secret(name: str, secrets_file: str | os.PathLike | None = None, required: bool = False) -> str | None:
    """The credential ``name`` from the environment, else from the secrets file; None when absent.

    With ``required=True`` a missing credential raises InputError naming both places to put it.
    """
    value = os.environ.get(name)
    if value:
        return value
    path = secrets_file_path(secrets_file)
    if path.is_file():
        value = read_secrets_file(path).get(name)
        if value:
            return value
    elif secrets_file is not None:
        raise InputError(f"secrets file {path} not found; create it (NAME=value lines, chmod 600) or drop --secrets-file")
    if required:
        raise InputError(f"credential {name} is not set; export {name}=... or add `{name}=...` to {path} (chmod 600)")
    return None


def mp_api_key(secrets_file: str | os.PathLike | None = None, required: bool = False) -> str | None:
    """The Materials Project API key (``MP_API_KEY``, or pymatgen's ``PMG_MAPI_KEY``)."""
    key = get_secret("MP_API_KEY", secrets_file) or get_secret("PMG_MAPI_KEY", secrets_file)
    if key is None and required:
        get_secret("MP_API_KEY", secrets_file, required=True)  # raises, naming MP_API_KEY
    return key


def export_secrets_file(secrets_file: str | os.PathLike | None = None) -> list[str]:
    """Put the secrets file's credentials into ``os.environ`` where not already set (env wins).

    For the CLI entry point: the science packages (chemspace, reference) read ``MP_API_KEY`` from
    the environment only.  Returns the names exported (never the values).  A missing default file
    is fine; a missing explicit file or a group/world-readable one raises InputError.
    """
    path = secrets_file_path(secrets_file)
    if not path.is_file():
        if secrets_file is not None:
            raise InputError(f"secrets file {path} not found; create it (NAME=value lines, chmod 600)")
        return []
    exported = []
    for name, value in read_secrets_file(path).items():
        if value and not os.environ.get(name):
            os.environ[name] = value
            exported.append(name)
    return exported


def secret_values(secrets_file: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Every credential value currently known: secret-named env vars plus the secrets file's values."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and v and len(v) >= _MIN_SECRET_LEN}
    try:
        path = secrets_file_path(secrets_file)
        if path.is_file():
            values |= {v for v in read_secrets_file(path).values() if len(v) >= _MIN_SECRET_LEN}
    except (InputError, OSError):
        pass  # an unreadable secrets file holds nothing we could leak
    return values


def redact_text(text: str, values: set[str] | None = None) -> str:
    """``text`` with every known secret value and every URI password replaced by ``***``."""
    values = secret_values() if values is None else values
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return _URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def redact(obj: Any, values: set[str] | None = None) -> Any:
    """A copy of ``obj`` (str / dict / list / tuple / scalars) safe to log or store in MLflow.

    Strings are scrubbed with :func:`redact_text`; any dict entry whose key looks like a secret
    name (``api_key``, ``MP_API_KEY``, ``password``, ...) has its value replaced by ``***``.
    """
    values = secret_values() if values is None else values
    if isinstance(obj, str):
        return redact_text(obj, values)
    if isinstance(obj, Mapping):
        return {
            k: (MASK if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else redact(v, values))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, values) for v in obj)
    return obj


def safe_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without credentials: what may be forwarded to a Ray job's ``env_vars``."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not is_secret_name(k)}


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secret values from every record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging API name
        values = secret_values()
        if values or "://" in str(record.msg):
            record.msg = redact_text(str(record.getMessage()), values)
            record.args = None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach a :class:`RedactingFilter` to ``logger`` (root by default) and all its handlers."""
    logger = logger or logging.getLogger()
    existing = [f for f in logger.filters if isinstance(f, RedactingFilter)]
    flt = existing[0] if existing else RedactingFilter()
    if not existing:
        logger.addFilter(flt)
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
