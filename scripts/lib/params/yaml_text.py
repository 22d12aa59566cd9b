"""Reading params.yaml and rule sets as DVC does (YAML 1.2), without aliases, nesting bounded, no secrets."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from typing import Any

import yaml

from scripts.lib.errors import DataError, names_a_file, shown
from scripts.lib.params.credential_files import MIN_SHORT_SECRET_CHARS, credential_sources, dvc_config_credentials


class AliasError(yaml.YAMLError):
    def __init__(self, line: int):
        super().__init__(f"line {line}: YAML aliases (*name) are not allowed (write the entries out)")
        self.line = line


def read_yaml(text: str) -> Any:
    """Safe YAML 1.2 as DVC reads params.yaml (ruamel.yaml, typ="safe": `010` is 10, `1:20` a string,
    `yes` a string), so a stage and `dvc params diff` see the same values. Refused before anything is
    built: an alias (AliasError, a yaml.YAMLError; a few hundred bytes of nested aliases expand to
    billions of nodes, and `dvc exp run -S` writes them out anyway) and nesting deeper than
    nesting.MAX_DEPTH (TooDeep). The event pass is libyaml's (PyYAML's C parser, not recursive)."""
    from ruamel.yaml.error import YAMLError as RuamelYAMLError

    from scripts.lib.nesting import check_yaml_depth

    try:
        fast = yaml.__with_libyaml__
        for event in check_yaml_depth(yaml.parse(text, Loader=yaml.CSafeLoader if fast else yaml.SafeLoader)):
            if isinstance(event, yaml.AliasEvent):
                raise AliasError(event.start_mark.line + 1)
        try:
            return _safe_yaml(fast).load(text)
        except RuamelYAMLError as exc:  # one error type for the callers: PyYAML's, with the line
            raise RuamelError(exc) from None
        except (yaml.YAMLError, MemoryError):
            raise
        except Exception as exc:  # a constructor's own error met outside any node (none known): still one line
            raise ValueProblem(exc) from None
    except yaml.YAMLError as exc:
        if not quotes_a_secret(str(exc)) and not quotes_a_secret(str(getattr(exc, "problem", None) or "")):
            raise
        raise SecretQuoted(exc) from None


class SecretQuoted(yaml.YAMLError):
    """A YAML error whose text quotes a secret: the parsers quote the value or key they stopped at (`'sk-...' is
    not a valid int`, `found duplicate key "<key>"`, a tag), and refuse_secrets never saw it, since nothing was
    built; the error line went to stderr and CI logs with the key in it. Its problem with each quoted secret
    left out, at the same line."""

    def __init__(self, exc: yaml.YAMLError):
        problem = str(getattr(exc, "problem", None) or type(exc).__name__)
        shown_problem = QUOTED.sub(lambda m: HIDDEN if quotes_a_secret(m[2]) else m[0], problem)
        self.problem = (
            "a value that looks like a secret (not shown)" if quotes_a_secret(shown_problem) else shown_problem
        )
        self.problem_mark = getattr(exc, "problem_mark", None)
        at = f"line {self.problem_mark.line + 1}: " if self.problem_mark is not None else ""
        super().__init__(at + self.problem)


QUOTED = re.compile(r"""(['"])(.*?)\1""")
HIDDEN = "(not shown: it looks like a secret)"


def quotes_a_secret(text: str) -> bool:
    """Whether `text` holds a key by its shape, or the value of a secret environment variable (a short one only
    as a whole quoted part, as holds_secret finds it in a scalar)."""
    if has_secret_shape(text):
        return True
    parts = [text, *(m[2] for m in QUOTED.finditer(text))]
    return any(holds_secret(part, secret) for secret in secret_env_values(None).values() for part in parts)


class ValueProblem(yaml.YAMLError):
    """A value the YAML grammar accepts but its type cannot hold (`2024-02-30`, `!!int abc`, a 5,000-digit
    int, `!!bool maybe`, a repeated `!!omap` key): ruamel's constructors raise ValueError, KeyError or
    AssertionError for these, which callers that name the file for a YAMLError let through as a traceback."""

    def __init__(self, exc: Exception, node: Any = None):
        kind = str(getattr(node, "tag", None) or "value").rsplit(":", 1)[-1]
        value = getattr(node, "value", None)  # a scalar's text; a collection's nodes are not shown
        subject = f"{value[:40] + ('...' if len(value) > 40 else '')!r} is " if isinstance(value, str) else ""
        reason = "" if isinstance(exc, KeyError) else (str(exc).splitlines() or [""])[0]  # a KeyError: the value again
        self.problem = shown(f"{subject}not a valid {kind}{': ' if reason else ''}{reason}")
        self.problem_mark = getattr(node, "start_mark", None)  # .line, 0-based, as PyYAML's
        at = f"line {self.problem_mark.line + 1}: " if self.problem_mark is not None else ""
        super().__init__(at + self.problem)


def _safe_yaml(fast: bool) -> Any:
    """ruamel's safe loader whose constructors' own errors are ValueProblems naming the node's line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import SafeConstructor
    from ruamel.yaml.error import YAMLError as RuamelYAMLError

    def marked(generator: Any, node: Any) -> Any:  # a mapping's or omap's entries are built after it is made
        try:
            yield from generator
        except (yaml.YAMLError, RuamelYAMLError, MemoryError):
            raise
        except Exception as exc:
            raise ValueProblem(exc, node) from None

    class Constructor(SafeConstructor):
        def construct_non_recursive_object(self, node: Any, tag: Any = None) -> Any:
            pending = len(self.state_generators)
            try:
                data = super().construct_non_recursive_object(node, tag)
            except (yaml.YAMLError, RuamelYAMLError, MemoryError):
                raise
            except Exception as exc:
                raise ValueProblem(exc, node) from None
            self.state_generators[pending:] = [marked(g, node) for g in self.state_generators[pending:]]
            return data

    loader = YAML(typ="safe", pure=not fast)
    loader.Constructor = Constructor
    if fast:
        loader.Resolver = _one_version_resolver(loader.Resolver)
    return loader


def _one_version_resolver(resolver: type) -> type:
    """ruamel's resolver, its YAML version worked out once per load. ruamel works it out again for every node,
    by two raised AttributeErrors (a fifth of a 10,000-release load). Only for libyaml's parser, which reads no
    `%YAML` directive into it: the version cannot change within a load, and each load builds a new resolver."""

    class OneVersionResolver(resolver):
        @property
        def processing_version(self) -> Any:
            if "_version_of_load" not in self.__dict__:
                self.__dict__["_version_of_load"] = super().processing_version
            return self.__dict__["_version_of_load"]

    return OneVersionResolver


class RuamelError(yaml.YAMLError):
    """A ruamel.yaml error (e.g. a duplicate key, which DVC refuses too) as a yaml.YAMLError."""

    def __init__(self, exc: Exception):
        super().__init__(str(exc))
        self.problem = getattr(exc, "problem", None) or type(exc).__name__
        self.problem_mark = getattr(exc, "problem_mark", None)  # .line, 0-based, as PyYAML's


# keys whose prefix says what they are; a prefix may follow `_` (`MY_hf_...`: \b is no boundary there)
SECRET_SHAPES = re.compile(
    r"(?i)(?:(?<![a-z0-9])(?:hf_[a-z0-9]{20,}|gh[pousr]_[a-z0-9]{20,}|github_pat_\w{20,})"
    r"|\bA(?:KIA|SIA)[0-9A-Z]{16}\b|\bxox[abprs]-[a-z0-9-]{10,}|\bAIza[0-9a-z_-]{30,}|\bglpat-[a-z0-9_-]{16,}"
    r"|\bgsk_[a-z0-9]{20,}|\bxai-[a-z0-9]{20,}|\bpplx-[a-z0-9]{20,}|\br8_[a-z0-9]{20,}"  # Groq, xAI, Perplexity, Replicate
    r"|\bpypi-AgE[a-z0-9_-]{16,}|\bnpm_[a-z0-9]{30,}|\bSG\.[a-z0-9_-]{16,}\.[a-z0-9_-]{16,}"  # PyPI, npm, SendGrid
    r"|\bya29\.[a-z0-9_-]{20,}|\bnvapi-[a-z0-9_-]{20,}|\bdapi[0-9a-f]{32}|\bfw_[a-z0-9]{20,}"  # Google, NVIDIA, Databricks, Fireworks
    r"|\b[spr]k_(?:live|test)_[a-z0-9]{16,}|\beyJ[a-z0-9_-]{8,}\.[a-z0-9_-]{8,})"  # Stripe; a JWT (header.payload)
)
# `sk-` (OpenAI, Anthropic, DeepSeek) is a key only when what follows is random: `SK-II-facial-essence` and
# `sk-8ter-boy-skateboard` are prompts
SK_KEY = re.compile(r"(?i)\bsk-([a-z0-9_-]{16,})")
# Shapes that are secrets only when what they hold is random: `Bearer <token>` (RFC 6750's b64token) and a
# URL's user info. "the ring bearer carrying-an-ancient-sword" and `ssh://git@github.com` are prose and an address
BEARER = re.compile(r"(?i)\b(?:bearer|token)\s+([A-Za-z0-9._~+/-]{16,})")  # token: GitHub's own scheme
# a variable set on one line (`ANTHROPIC_API_KEY=...`, `api_key: ...`), pasted from a shell or a .env file
ASSIGNED = re.compile(r"(?i)\b\w*(?:key|token|secret|passw(?:or)?d)\w*\s*[=:]\s*['\"]?([A-Za-z0-9._~+/-]{16,})")
BASIC = re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")  # base64 of `user:password`
URL_USER_INFO = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://([^\s/?#@]+)@")
TOKEN_RUN = re.compile(r"[A-Za-z0-9]{8,}")
CHAR_CLASS = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "a" * 26 + "A" * 26 + "0" * 10
)


def looks_random(token: str) -> bool:
    """Whether `token` holds a run of 8+ letters and digits with a digit in it that changes class (lower,
    upper, digit) at least three times: `a1B2c3d4`, hex `9f3a07c1`, a JWT or base64. A word changes at most
    once (`Legion`, `2nd`, `4k`), a size twice (`3840x2160`), so hyphenated or title-cased prose never does."""
    for run in TOKEN_RUN.findall(token):
        classes = run.translate(CHAR_CLASS)
        if "0" in classes and sum(a != b for a, b in itertools.pairwise(classes)) >= 3:
            return True
    return False


def _basic_credentials(encoded: str) -> bool:
    """Whether `encoded` is base64 of `user:password` (an HTTP Basic header's value); `basic shapes` is not."""
    import base64
    import binascii

    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def has_secret_shape(text: str) -> bool:
    """Whether `text` holds an API key or token by its shape: a known prefix (SECRET_SHAPES), `Bearer` and a
    random token, or a URL with a password (`https://me:PASSWORD@`, `https://:PASSWORD@`) or a random user
    (`https://TOKEN@`)."""
    if SECRET_SHAPES.search(text) or any(_basic_credentials(m[1]) for m in BASIC.finditer(text)):
        return True
    if any(looks_random(m[1].replace("-", "").replace("_", "")) for m in SK_KEY.finditer(text)):
        return True  # a key's random part may be cut by `-` or `_` (`sk-proj-…`, `sk-ant-api03-…`)
    if any(looks_random(m[1]) for pattern in (BEARER, ASSIGNED) for m in pattern.finditer(text)):
        return True
    return any(":" in m[1] or looks_random(m[1]) for m in URL_USER_INFO.finditer(text))


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def refuse_secrets(
    value: Any,
    path: str,
    at: tuple = (),
    secrets: dict[str, str] | None = None,
    held: dict[str, str] | None = None,
    named: frozenset[str] = frozenset(),
) -> None:
    """DataError (naming the key, never the value) for a value shaped like an API key, one holding the value
    of a secret environment variable (holds_secret: a key pasted from the shell; AWS's secret keys have
    no shape) or a secret held elsewhere (`held`, read_secrets: a credential file's, DVC's config's, a proxy's),
    or an `*_env` key whose value is not an environment variable name (a key pasted where its variable's name
    goes). A known secret of 8 to 15 characters (a held one, or a variable an `*_env` key names: `named`) is
    looked for anywhere in a value (holds_secret's `anywhere`), and across two neighbouring values (_refuse_split)."""
    if secrets is None:
        secrets = secret_env_values(value)
        named = frozenset(_env_names(value))
    if held is None:
        held = held_secrets()
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_secrets(key, path, at, secrets, held, named)
            refuse_secrets(item, path, (*at, key), secrets, held, named)
            if str(key).endswith("_env") and isinstance(item, str) and not ENV_NAME.fullmatch(item):
                raise DataError(
                    f"{path}: {'.'.join(map(str, (*at, key)))}: must be the name of an environment variable "
                    "(ASCII letters, digits, '_'), not the key itself"
                )
        _refuse_split(list(value.items()), path, at, secrets, held, named)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_secrets(item, path, (*at, index), secrets, held, named)
        _refuse_split(list(enumerate(value)), path, at, secrets, held, named)
    elif isinstance(value, str):
        where = ".".join(map(str, at)) or "a key"
        if has_secret_shape(value):
            raise DataError(
                f"{path}: {where}: holds what looks like an API key or token; keep keys out of params.yaml (it "
                "is committed, and copied into dvc.lock): set an environment variable and name it in api_key_env"
            )
        _refuse_known(value, f"{path}: {where}: holds", secrets, held, named)


def _refuse_known(value: str, subject: str, secrets: dict[str, str], held: dict[str, str], named: frozenset) -> None:
    """DataError starting with `subject` (the file and key, never the value) when `value` holds a known secret:
    a secret environment variable's value or one held elsewhere (holds_secret; anywhere for a held one or the
    value of a variable in `named`)."""
    for name, secret in secrets.items():
        if holds_secret(value, secret, anywhere=name in named):
            raise DataError(
                f"{subject} the value of the environment variable {name} (an API key or other "
                "secret); keep it out of params.yaml (it is committed, and copied into dvc.lock and the outputs)"
            )
    for secret, source in held.items():
        if holds_secret(value, secret, anywhere=True):
            raise DataError(
                f"{subject} a secret read from {source}; keep it out of params.yaml (it is "
                "committed, and copied into dvc.lock and the outputs)"
            )


def _refuse_split(
    items: list[tuple[Any, Any]], path: str, at: tuple, secrets: dict, held: dict, named: frozenset
) -> None:
    """A known secret cut in two across neighbouring string values of one mapping or list (`prefix: s3://b/AKx`,
    `suffix: 9Q...`: a template joins them again, and dvc.lock holds both halves), refused naming both keys."""
    for (key, text), (next_key, next_text) in itertools.pairwise(items):
        if isinstance(text, str) and isinstance(next_text, str):
            both = " and ".join(".".join(map(str, (*at, k))) for k in (key, next_key))
            _refuse_known(text + next_text, f"{path}: {both}: together hold", secrets, held, named)


def held_secrets() -> dict[str, str]:
    """{secret: where it is held, in words} of the secrets known outside the environment's variables (import_env.
    known_secrets has them all): those the SDKs read from credential files (a source path holding the AWS secret
    key of AWS_SHARED_CREDENTIALS_FILE's file, a netrc password, the Hub's token file went into dvc.lock and
    S.report.json), DVC's remotes' (.dvc/config, .dvc/config.local) and each proxy's."""
    from scripts.lib.key_redaction import proxy_credentials

    proxies = {
        secret: "a proxy variable (http_proxy, https_proxy, all_proxy)"
        for secret in proxy_credentials()
        if len(secret) >= MIN_SHORT_SECRET_CHARS and secret.isprintable()
    }
    return proxies | dvc_config_credentials() | credential_sources()


# Environment variables whose values are secrets: by name, and every variable params names in an `*_env` key.
# Also the names that say so in a word the first list lacked (MYSQL_PWD, DB_PASS, BORG_PASSPHRASE,
# AZURE_OPENAI_KEY, REDIS_AUTH: each value went into dvc.lock), as parts cut by `_`: GIT_AUTHOR_NAME, PWD and
# PASSENGER_* are no secrets
SECRET_ENV_NAME = re.compile(
    r"(?i)api_?key|access_?key|private_?key|secret|token|passw|passphrase|credential"
    r"|_key$|_pwd$|(?:^|_)(?:pass|auth)(?:$|_)"
)
MIN_SECRET_CHARS = 16  # shorter values are looked for only as a whole scalar: as part of a text, `hunter2`
# is in too many texts (a word, a name); as a whole scalar it is the secret pasted
# The keys local OpenAI-compatible servers tell clients to send when they check none (the client insists on
# one): Ollama's `ollama`, LM Studio's `lm-studio`, llama.cpp's `sk-no-key-required`, vLLM's `EMPTY`, and the
# usual stand-ins. Published in those servers' docs, so no secret, in any letter case: with
# OPENAI_API_KEY=ollama, `backend: ollama` (a label naming that server) refused every stage. Kept to a list
# rather than skipping label keys: a real key written as a label still reaches the outputs (sources.json)
PLACEHOLDER_KEYS = frozenset(
    {"ollama", "lm-studio", "lmstudio", "sk-no-key-required", "no-key-required", "not-needed", "no-key", "nokey"}
    | {"none", "null", "empty", "dummy", "placeholder", "unused", "not-used", "anything", "sk-xxx"}
)


def secret_env_values(params: Any) -> dict[str, str]:
    """{name: value, whitespace runs made one space, quotes around it left out} of the secret environment
    variables set now; a value that names a file (GOOGLE_APPLICATION_CREDENTIALS=/home/u/key.json: where the
    key is) or is a local server's placeholder (PLACEHOLDER_KEYS) is none."""
    names = {name for name in os.environ if SECRET_ENV_NAME.search(name)} | set(_env_names(params))
    values = {name: _unquoted(" ".join(os.environ.get(name, "").split())) for name in names}
    return {
        name: value
        for name, value in values.items()
        if len(value) >= MIN_SHORT_SECRET_CHARS
        and value.isprintable()
        and value.casefold() not in PLACEHOLDER_KEYS
        and not names_a_file(value)
    }


def _unquoted(value: str) -> str:
    """`value` less one pair of quotes around it: `docker run --env-file` and systemd's EnvironmentFile= keep
    them (DB_PASSWORD="hunter22x" holds `"hunter22x"`), while the value pasted into params.yaml has none."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].strip()
    return value


def holds_secret(text: str, secret: str, anywhere: bool = False) -> bool:
    """Whether `text` (a scalar of params) holds `secret`. One of MIN_SECRET_CHARS or more anywhere, as
    key_redaction.holds_whole_key finds it: in any letter case, reversed, percent-escaped, base64 at any byte
    offset (`Basic <base64 of user:secret>`), spaces or separators left out. A shorter one only as the whole
    scalar, in any letter case or Unicode form (as a longer one: `HUNTER22X` for hunter22x went into dvc.lock),
    or the scalar percent- or base64-decoded, zero-width characters left out. With `anywhere` (a known secret: a credential
    file's, or a variable an `*_env` key names), one of 8 to 15 characters (not a word) is looked for anywhere, by key_redaction.holds_whole_key(least=PIECE); 6 or 7 never as a part."""
    from scripts.lib.key_redaction import PIECE, _is_word, holds_whole_key

    if len(secret) >= MIN_SECRET_CHARS:
        return holds_whole_key(text, secret)
    # 8 to 15 characters: anywhere too, by its encodings of PIECE characters or more (a short secret that was only
    # part of a value went into dvc.lock); unless it is a word (`sunshine`, `Password`), which prose holds
    if anywhere and len(secret) >= PIECE and not _is_word(secret) and holds_whole_key(text, secret, least=PIECE):
        return True
    return _folded(secret) in {_folded(form) for form in _decodings(text)}


def _folded(text: str) -> str:
    """`text` as a short secret is compared: whitespace runs one space, NFKC (a macOS variable's decomposed `é`,
    fullwidth letters), case folded (`HUNTER22X` is hunter22x pasted upper-cased)."""
    import unicodedata

    visible = "".join(char for char in text if unicodedata.category(char) != "Cf")  # a zero-width space hid it
    return unicodedata.normalize("NFKC", " ".join(visible.split())).casefold()


def _decodings(text: str) -> set[str]:
    """`text`, percent-decoded (with `+` as a space or not), and, when it is base64 of UTF-8 text, decoded."""
    import base64
    import binascii
    import urllib.parse

    forms = {text, urllib.parse.unquote(text), urllib.parse.unquote_plus(text)}
    for form in list(forms):
        packed = "".join(form.split())
        if 8 <= len(packed) <= 1 << 16 and BASE64.fullmatch(packed):
            with contextlib.suppress(binascii.Error, ValueError):  # not base64 after all, or not UTF-8 text
                forms.add(base64.b64decode(packed.translate(URLSAFE) + "=" * (-len(packed) % 4)).decode("utf-8"))
    return forms


BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
URLSAFE = str.maketrans("-_", "+/")


def _env_names(value: Any) -> list[str]:
    """The values of every `*_env` key: the variables params says hold keys."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if str(k).endswith("_env") and isinstance(v, str)]
        return found + [name for item in value.values() for name in _env_names(item)]
    if isinstance(value, list):
        return [name for item in value for name in _env_names(item)]
    return []
