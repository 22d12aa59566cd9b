"""Failures while a third-party library is imported, as one line.

A library may read the environment when it is imported (huggingface_hub int()s HF_HUB_ETAG_TIMEOUT
and HF_HUB_DOWNLOAD_TIMEOUT there): a bad value failed with a ValueError traceback from deep inside
the import, in every command importing it, even `publish --dry-run`. `check_on_import` checks the
variables this project knows of just before their library is first imported, and names the variable,
never its value (an environment may hold secrets); `import_failure_line` turns any other failure raised
while a library's module body ran into one line naming the module and the cause.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from scripts.lib.errors import DataError, exception_line, names_a_file, os_reason, redact_url_userinfo


def _whole_seconds(value: str) -> bool:
    return re.fullmatch(r"\s*[0-9]{1,9}\s*", value) is not None and int(value) > 0


def _one_of(*values: str) -> Callable[[str], bool]:
    return lambda value: value.strip().lower() in values


_C_NUMBER = re.compile(r"[ \t\n\v\f\r]*\+?[0-9]+[ \t\n\v\f\r]*")  # what strtoul reads whole, in C's spaces


def _omp_counts(value: str) -> bool:
    """libgomp's list of counts (OMP_NUM_THREADS: `4` or `4,2`): each a whole number from 1 below 2**64 - 1."""
    return all(_C_NUMBER.fullmatch(part) and 0 < int(part) < 2**64 - 1 for part in value.split(","))


def _omp_proc_bind(value: str) -> bool:
    """libgomp's OMP_PROC_BIND: true or false alone, or a list of master, close and spread (any case)."""
    parts = [part.strip().lower() for part in value.split(",")]
    return value.strip().lower() in ("true", "false") or all(p in ("master", "close", "spread") for p in parts)


def _log_level(*names: str) -> Callable[[str], bool]:
    """A logging level a library reads by its exact name (transformers' and diffusers' VERBOSITY); unset or empty:
    its default."""
    return lambda value: value in ("", *names)


def _hub_endpoint(value: str) -> bool:
    """HF_ENDPOINT as huggingface_hub parses it when imported (its port too): an http(s) URL with a host and a port
    that is a number, or empty (the default Hub). A token pasted where the port goes (`https://hub.example:hf_...`)
    failed that import with `Port could not be cast to integer value as 'hf_...'`, quoted twice on stderr. No query
    or fragment: the client puts each request's path after the endpoint, so `?api_key=...` was no key the Hub
    read, only text in every request's URL that an error line quoted whole (as synthesize's base_url, refused)."""
    import urllib.parse

    if not value:
        return True
    try:
        parts = urllib.parse.urlsplit(value)
        _port = parts.port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and not ("?" in value or "#" in value)


def _torch_cpp_log_level(value: str) -> bool:
    return value.upper() in ("", "INFO", "WARNING", "ERROR", "FATAL") or re.fullmatch("[0-3]", value) is not None


# library -> {variable: (check, what it must be)}: read (and failing) when the library is imported, or
# read by it later and, when bad, ignored with a line of its own on stderr (Arrow's C++ printed
# `Invalid value for ARROW_IO_THREADS: '0'` beside a command's output at exit 0)
IMPORT_TIME_VARIABLES: dict[str, dict[str, tuple[Callable[[str], bool], str]]] = {
    "huggingface_hub": {
        "HF_HUB_ETAG_TIMEOUT": (_whole_seconds, "a whole number of seconds, at least 1"),
        "HF_HUB_DOWNLOAD_TIMEOUT": (_whole_seconds, "a whole number of seconds, at least 1"),
        "HF_ENDPOINT": (_hub_endpoint, "an http(s) URL with a host, a port that is a number, no query or fragment"),
    },
    "torch": {  # its OpenMP runtime, libgomp, printed `libgomp: Invalid value for environment variable ...` at exit 0
        "OMP_NUM_THREADS": (_omp_counts, "a whole number from 1, or a comma list of them (4,2)"),
        "OMP_THREAD_LIMIT": (lambda value: "," not in value and _omp_counts(value), "a whole number from 1"),
        "OMP_DYNAMIC": (_one_of("true", "false"), "true or false"),
        "OMP_WAIT_POLICY": (_one_of("active", "passive"), "active or passive"),
        "OMP_PROC_BIND": (_omp_proc_bind, "true, false, or a comma list of master, close and spread"),
        "TORCH_CPP_LOG_LEVEL": (_torch_cpp_log_level, "INFO, WARNING, ERROR, FATAL or 0 to 3"),  # else a C++ line
        "TORCH_SHOW_CPP_STACKTRACES": (lambda value: value in ("0", "1"), "0 or 1"),  # else a UserWarning
    },
    "transformers": {  # else a logging line `Unknown option TRANSFORMERS_VERBOSITY=...`
        "TRANSFORMERS_VERBOSITY": (
            _log_level("detail", "debug", "info", "warning", "error", "critical"),
            "detail, debug, info, warning, error or critical, in lower case",
        ),
    },
    "diffusers": {
        "DIFFUSERS_VERBOSITY": (
            _log_level("debug", "info", "warning", "error", "critical"),
            "debug, info, warning, error or critical, in lower case",
        ),
    },
    "pyarrow": {
        "ARROW_IO_THREADS": (_whole_seconds, "a whole number, at least 1"),
        "ARROW_DEFAULT_MEMORY_POOL": (_one_of("mimalloc", "jemalloc", "system"), "mimalloc, jemalloc or system"),
        "ARROW_USER_SIMD_LEVEL": (
            _one_of("none", "sse4_2", "avx", "avx2", "avx512"),
            "none, sse4_2, avx, avx2 or avx512",
        ),
    },
}
# variables whose values an error line must not show, whatever library quotes them
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


def check_variables(library: str) -> None:
    """DataError naming the first variable `library` reads at import that it would fail on."""
    for name, (valid, expected) in IMPORT_TIME_VARIABLES.get(library, {}).items():
        value = os.environ.get(name)
        if value is not None and not valid(value):
            raise DataError(f"{name}: must be {expected} ({library} reads it); fix or unset it")


class _CheckOnImport:
    """A sys.meta_path finder that finds nothing: it checks a library's variables when it is looked for."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname in IMPORT_TIME_VARIABLES:
            check_variables(fullname)
        return None


def check_on_import() -> None:
    """Check each library's import-time variables before it is imported (once per process)."""
    if not any(isinstance(finder, _CheckOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CheckOnImport())


def _failing_module(exc: BaseException) -> str | None:
    """The module whose body (run by an import) raised `exc`: the innermost `<module>` frame, or the
    module an ImportError could not find."""
    name, tb = None, exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__spec__") is not None:
            name = frame.f_globals.get("__name__")
        tb = tb.tb_next
    if isinstance(exc, ImportError) and exc.name and (name is None or name.partition(".")[0] == "scripts"):
        return exc.name  # a library missing, or missing a name: a broken install
    return name


_UNPARSED = re.compile(r"Environment variable '([A-Z0-9_]{1,100})' is defined but its associated value")


@contextlib.contextmanager
def variables_parsed(library: str) -> Iterator[None]:
    """Inside: `library` imported with the warnings its import gives held back. A variable it cannot parse
    (numba's `Environment variable 'NUMBA_OPT' is defined but its associated value '9' could not be parsed`,
    a 12-line warning holding a traceback, beside dedup's output at exit 0; it then ignores the value) is one
    line naming it, never its value, whatever the variable: numba reads some sixty. Other warnings are
    given back as they came."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        found = _UNPARSED.search(str(warning.message))
        if found:
            raise DataError(f"{found[1]}: {library} cannot parse its value, and would ignore it; fix or unset it")
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def import_failure_line(exc: BaseException) -> str | None:
    """One line for `exc` raised while a third-party library was imported, redacted as every printed line
    (redact_line); None when it is not so, or is our own module's failure (a bug: cli's internal-error line)."""
    module = _failing_module(exc)
    if module is None or module.partition(".")[0] in ("scripts", "__main__"):
        return None
    return redact_line(
        f"importing {module} failed: {exception_line(exc)} (a bad environment variable it reads, or a broken install?)"
    )


# a variable's name as a line may quote it (`$T2I_KEY: the API key holds a control character`): no secret, kept
# whole though a piece of a value is in it (a key `sk-guarantee-...` and its variable T2I_GUARANTEE_KEY)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def redact_line(text: str) -> str:
    """A line as it may be printed: a URL's user:password@ ***@ (redact_url_userinfo), and no known secret
    (known_secrets: the environment's, a proxy's, the credential files' the SDKs read) in it, in any letter case
    or encoding key_redaction finds. A path or name the user typed holding their key (`synthesize t sk-...`,
    `ingest $HF_TOKEN out.parquet`) was printed as given, and so was a library's message quoting a variable's
    value. Every line a command prints goes through it (cli's standard output and error), progress included."""
    from scripts.lib.key_redaction import redact_key

    secrets = known_secrets()
    text = redact_url_userinfo(text)
    if not secrets or not any(char.isalnum() for char in text):  # a newline, a space: print's own writes
        return text
    names = sorted({m for m in _VARIABLE_NAME.findall(text) if m in os.environ}, key=len, reverse=True)
    for index, name in enumerate(names):  # each held aside as a mark no secret's piece can join with
        text = re.sub(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])", chr(0xE000 + index), text)
    for secret in secrets:
        text = redact_key(text, secret)
    for index, name in enumerate(names):
        text = text.replace(chr(0xE000 + index), name)
    return text


LEFT_OUT = "(a line left out: it could not be checked for secrets)"


def checked_line(text: str, left_out: Callable[[str], str] | None = None) -> str:
    """`text` through redact_line, or, where that fails (its imports and the secrets' files at the open-file
    limit), never `text` as it came: `left_out(reason)` (default: LEFT_OUT, on a line of its own as `text` was).
    What cli writes on standard output and error, its error line, and what Ray's threads write to descriptor 2
    (ray_workers.RedactedLines) all go through it."""
    try:
        return redact_line(text)
    except Exception as exc:
        if left_out is None:
            return LEFT_OUT + "\n" * text.endswith("\n")
        return left_out(os_reason(exc))


def redact_known(value: Any, api_key: str | None) -> Any:
    """key_redaction.redact_key for the API key and every other secret known (known_secrets): what a server's reply
    or error body echoes of the Hub token or an AWS key of a credentials file went into the response cache,
    prompts.txt and a failure's reason, where key_redaction.redact_secrets removed the API key and the proxies'."""
    from scripts.lib.key_redaction import redact_key

    for secret in dict.fromkeys([api_key, *known_secrets()]):
        value = redact_key(value, secret)
    return value


_KNOWN: tuple[tuple, tuple[str, ...]] | None = None  # (what it was read for, the secrets): one read per process


def _current_folder() -> str | None:
    """os.getcwd(), or None when the folder the command runs in was deleted (its line must still be printed)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def known_secrets() -> tuple[str, ...]:
    """The secrets a printed line must not hold, longest first: the environment's (params.yaml_text.
    secret_env_values: a variable named like a secret, or named by an `*_env` key of params.yaml), each proxy's
    credential, those the SDKs read from files (file_credentials) and DVC's remotes' (dvc_config_credentials). Read
    once per process, environment and folder:
    every line printed asks (a progress line, each row of a table on stdout), and reading params.yaml and the
    credential files for each cost milliseconds a line."""
    global _KNOWN
    environ = getattr(os.environ, "_data", os.environ)  # its bytes as they are: decoding each item cost more
    state = (tuple(environ.items()), _current_folder())
    if _KNOWN is not None and _KNOWN[0] == state:
        return _KNOWN[1]
    from scripts.lib.key_redaction import proxy_credentials

    found = {*_environment_secrets(), *proxy_credentials(), *file_credentials(), *dvc_config_credentials()}
    _KNOWN = state, tuple(sorted(found, key=len, reverse=True))
    return _KNOWN[1]


def _environment_secrets() -> list[str]:
    """params.yaml_text.secret_env_values's, or where PyYAML is not installed (pr-comment-post's job installs typer
    alone) the values of the variables named like a secret: every line printed asks, and one failing to ask lost
    the line."""
    try:
        from scripts.lib.params.yaml_text import secret_env_values
    except ImportError:
        return [v for n, v in os.environ.items() if _SECRET_NAME.search(n) and len(v) >= 6 and not names_a_file(v)]
    try:
        from scripts.lib.params import load_params

        params = load_params()  # its `api_key_env` names: checked once already, read again from its cache
    except Exception:  # the line is printed whatever params.yaml holds
        params = None  # no params.yaml, or the failure is its own: the variables' names alone
    return list(secret_env_values(params).values())


def file_credentials() -> list[str]:
    """The credentials the SDKs read from files, not the environment, that an S3 or Hub error may quote
    (params.credential_files.credential_sources: where each is read)."""
    from scripts.lib.params.credential_files import credential_sources

    return sorted(credential_sources())


def dvc_config_credentials() -> dict[str, str]:
    """params.credential_files.dvc_config_credentials: the credentials DVC's config of this repository holds."""
    from scripts.lib.params.credential_files import dvc_config_credentials as held

    return held()


# huggingface_hub's switches for what it does beside the requests asked of it: unless telemetry is off, its user
# agent fetched `{HF_ENDPOINT}/api/agent-harnesses` (a request to whatever endpoint is set) and wrote the answer to
# HF_HOME/.agent_harnesses.json, outside any output (a list answer then broke every later request: `Hub: 'list'
# object has no attribute 'get'`), and it sent the torch version in every request; hf_xet reads it too.
HUB_CLIENT_SWITCHES = {"HF_HUB_DISABLE_TELEMETRY": "1"}
# where a variable names a place of the user's choosing, theirs is kept: hf_xet, once imported, wrote a log file
# in HF_HOME/xet/logs at every run (a path of theirs in HF_XET_LOG_DEST is where they asked it to log)
HUB_CLIENT_DEFAULTS = {"HF_XET_LOG_DEST": os.devnull}


def quiet_hub_client() -> None:
    """huggingface_hub sending only the requests asked of it and writing no file of its own: its switches set
    for this process (and its children) whatever the environment said (`HF_HUB_DISABLE_TELEMETRY=0` too: no
    command here needs what telemetry adds, and a file written outside the outputs, its content chosen by the
    endpoint, is no choice to leave to a variable); set on `constants` too where the library was imported
    before (its import reads them once). Call it before the first request."""
    for name, value in HUB_CLIENT_SWITCHES.items():
        os.environ[name] = value
    for name, value in HUB_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)  # noqa: B010  # a module of its own, not typed here
