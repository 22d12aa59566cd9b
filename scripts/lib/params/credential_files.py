"""Secrets held in files rather than the environment: the credential files the SDKs and git read, DVC's configs.

An S3 or Hub error, a dvc child's error may quote one; a source path holding one went into dvc.lock and the
ingest report. import_env.known_secrets redacts them from every printed line, and yaml_text.refuse_secrets
refuses them in params.yaml. Every file is read bounded (CREDENTIAL_FILE_BYTES, a FIFO never opened for
reading): one missing, unreadable or not what it should be adds no secret, never a failure.
"""

from __future__ import annotations

import os
import re

# under 6 characters: a setting or a placeholder (TOKENIZERS_PARALLELISM=false, vLLM's key `EMPTY`), not a secret
MIN_SHORT_SECRET_CHARS = 6
CREDENTIAL_FILE_BYTES = 1 << 20  # a credential file is bytes to kilobytes: more is read no further
# an option of an AWS credentials or config file, or of huggingface_hub's stored_tokens, holding a secret
# (aws_secret_access_key, aws_session_token, aws_access_key_id, hf_token); credential_process is a command
_SECRET_OPTION = re.compile(r"(?i)key|secret|token|password")


def credential_sources() -> dict[str, str]:
    """{secret: the file it was read from, in words} for the credentials the SDKs read from files: every
    profile's keys in the AWS credentials and config files (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, else
    ~/.aws/; AWS_PROFILE picks one, any may be used), the passwords of ~/.netrc (NETRC; requests and curl send
    them), huggingface_hub's token files (HF_TOKEN_PATH, else HF_HOME's or ~/.cache/huggingface's `token` and
    `stored_tokens`), Docker's config.json (_docker_secrets), the JSON file GOOGLE_APPLICATION_CREDENTIALS names
    and gcloud's application-default credentials (_google_secrets, _gcloud_adc_file), and git's credential store
    (git_store_credentials). A file missing, unreadable, not a regular file or not what it should be adds none:
    never a failure of the command (nor its line)."""
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    hf_home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    found: dict[str, str] = {}
    for variable, default, where in (
        ("AWS_SHARED_CREDENTIALS_FILE", os.path.join(home, ".aws", "credentials"), "the AWS credentials file"),
        ("AWS_CONFIG_FILE", os.path.join(home, ".aws", "config"), "the AWS config file"),
    ):
        found |= dict.fromkeys(_ini_secrets(_bounded_text(os.environ.get(variable) or default)), where)
    found |= dict.fromkeys(
        _ini_secrets(_bounded_text(os.path.join(hf_home, "stored_tokens"))), "the Hub's stored_tokens"
    )
    token = _bounded_text(os.environ.get("HF_TOKEN_PATH") or os.path.join(hf_home, "token")).strip()
    found[token] = "the Hub's token file"
    netrc = _bounded_text(os.environ.get("NETRC") or os.path.join(home, ".netrc"))
    found |= dict.fromkeys(_netrc_passwords(netrc), "the netrc file")
    docker = os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker"), "config.json")
    found |= dict.fromkeys(_docker_secrets(_json_of(docker)), "Docker's config.json")
    google = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    found |= dict.fromkeys(_google_secrets(_json_of(google) if google else None), "Google's credentials file")
    found |= dict.fromkeys(
        _google_secrets(_json_of(_gcloud_adc_file(home))), "gcloud's application-default credentials"
    )
    return _secrets_only(found) | git_store_credentials()


def _gcloud_adc_file(home: str) -> str:
    """The file `gcloud auth application-default login` writes (CLOUDSDK_CONFIG's folder, else ~/.config/gcloud, as
    google-auth finds it): the Google SDKs use it when GOOGLE_APPLICATION_CREDENTIALS is unset, so its
    client_secret and refresh_token are as secret as that file's."""
    folder = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(home, ".config", "gcloud")
    return os.path.join(folder, "application_default_credentials.json")


def _json_of(path: str) -> object:
    """The JSON a credential file holds (read bounded), or None: a missing, unreadable, truncated or hostile file
    (too deep for the parser) adds no secret and is no failure of the command."""
    import json

    text = _bounded_text(path)
    try:
        return json.loads(text) if text else None
    except Exception:  # ValueError, RecursionError: no secret read
        return None


def _docker_secrets(config: object) -> list[str]:
    """Each registry's password (the `auth` field is base64 of `user:password`), the `auth` itself, and its
    `identitytoken` / `registrytoken` in Docker's config.json (DOCKER_CONFIG's folder, else ~/.docker):
    `docker login` writes them there when no credential helper is set."""
    import base64
    import binascii

    auths = config.get("auths") if isinstance(config, dict) else None
    found = []
    for entry in auths.values() if isinstance(auths, dict) else ():
        if not isinstance(entry, dict):
            continue
        found += [
            entry[name] for name in ("auth", "identitytoken", "registrytoken") if isinstance(entry.get(name), str)
        ]
        try:
            decoded = base64.b64decode(str(entry.get("auth") or ""), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        found.append(decoded.partition(":")[2])
    return [value.strip() for value in found]


# the secrets of a service account's key file and of gcloud's application-default login (authorized_user)
_GOOGLE_SECRET_FIELDS = ("private_key_id", "private_key", "client_secret", "refresh_token")


def _google_secrets(credentials: object) -> list[str]:
    """The secrets of the JSON file GOOGLE_APPLICATION_CREDENTIALS names: a PEM private key as its base64 body
    alone (one printable line, as a line or a params value would quote a piece of it), its id, a user's
    client_secret and refresh_token."""
    if not isinstance(credentials, dict):
        return []
    found = []
    for name in _GOOGLE_SECRET_FIELDS:
        value = credentials.get(name)
        if isinstance(value, str):
            body = [line for line in value.splitlines() if line.strip() and not line.startswith("-----")]
            found.append("".join("".join(body).split()) if name == "private_key" else value.strip())
    return found


def _secrets_only(found: dict[str, str]) -> dict[str, str]:
    """`found` less what is no secret: shorter than MIN_SHORT_SECRET_CHARS (a setting, `true`), or unprintable."""
    return {
        value: where for value, where in found.items() if len(value) >= MIN_SHORT_SECRET_CHARS and value.isprintable()
    }


# an option of a DVC remote holding a credential (password, secret_access_key, access_key_id, session_token, token,
# Azure's account_key, sas_token and connection_string, gdrive_client_secret); one naming a file (keyfile,
# credentialpath, gdrive_user_credentials_file) holds where the secret is
_DVC_SECRET_OPTION = re.compile(r"(?i)passw|secret|token|key|connection_string")
_DVC_FILE_OPTION = re.compile(r"(?i)file|path$")


def dvc_config_credentials() -> dict[str, str]:
    """{secret: the config file} of the credentials DVC's configs hold: the repository's (of the current folder:
    .dvc/config and .dvc/config.local) and, as DVC merges them under it, the user's global and the system's
    config (dvc_config_files): each remote's password, keys and tokens (_DVC_SECRET_OPTION) and a URL's password.
    A dvc child's error or an S3 error quoting one was printed as it came, and a source path holding one went
    into dvc.lock (`dvc remote modify --global` keeps a key out of the repository, not out of our lines). Read
    bounded (_bounded_text), as configparser reads DVC's configobj INI; none when missing or unreadable."""
    from scripts.lib.errors import names_a_file

    found: dict[str, str] = {}
    for path, where in dvc_config_files():
        for option, value in _ini_items(_bounded_text(path), configobj=True):
            if option == "url" or option.endswith("_url"):
                value = _url_password(value)
            elif not _DVC_SECRET_OPTION.search(option) or _DVC_FILE_OPTION.search(option) or names_a_file(value):
                continue
            if value.lower() not in ("true", "false"):
                found[value] = where
    return _secrets_only(found)


def dvc_config_files() -> list[tuple[str, str]]:
    """(path, how a line names it) of the config files DVC reads, in DVC's own places (dvc.dirs): the system's
    (DVC_SYSTEM_CONFIG_DIR, else the first of XDG_CONFIG_DIRS or /etc/xdg, then `dvc/config`), the user's
    global one (DVC_GLOBAL_CONFIG_DIR, else XDG_CONFIG_HOME or ~/.config, then `dvc/config`), and those of the
    repository holding the current folder. platformdirs (a dvc dependency) gives the first two as DVC does."""
    files: list[tuple[str, str]] = []
    try:
        import platformdirs

        system = os.environ.get("DVC_SYSTEM_CONFIG_DIR") or platformdirs.site_config_dir("dvc", "iterative")
        user = os.environ.get("DVC_GLOBAL_CONFIG_DIR") or platformdirs.user_config_dir("dvc", "iterative")
        files += [
            (os.path.join(system, "config"), "DVC's system config"),
            (os.path.join(user, "config"), "DVC's global config"),
        ]
    except ImportError:  # no DVC installed: its configs are read by nothing
        pass
    root = _repository_root()
    if root is not None:
        files += [(os.path.join(root, ".dvc", name), f".dvc/{name}") for name in ("config", "config.local")]
    return files


def git_store_credentials() -> dict[str, str]:
    """{password: git's credential store} of each `https://user:password@host` line of the files git's `store`
    helper keeps (~/.git-credentials, then XDG_CONFIG_HOME's or ~/.config's git/credentials): tag, pr-build and
    replay-history run git, whose errors can quote a remote's URL."""
    home = os.path.expanduser("~")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    found: dict[str, str] = {}
    for path in (os.path.join(home, ".git-credentials"), os.path.join(config, "git", "credentials")):
        for line in _bounded_text(path).splitlines():
            found[_url_password(line.strip())] = "git's credential store"
    return _secrets_only(found)


def _repository_root() -> str | None:
    """The nearest folder above the current one (itself included) holding a `.dvc` folder, as DVC finds its root."""
    try:
        folder = os.getcwd()
    except OSError:  # a deleted current folder
        return None
    while True:
        if os.path.isdir(os.path.join(folder, ".dvc")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _url_password(url: str) -> str:
    """The password of a URL's user:password@ (ssh://user:PASS@host, https://user:PASS@host), else ""."""
    import urllib.parse

    try:
        return urllib.parse.unquote(urllib.parse.urlsplit(url).password or "")
    except ValueError:
        return ""


def _bounded_text(path: str) -> str:
    """The first CREDENTIAL_FILE_BYTES of a regular file as text, or "" (a FIFO is not opened for reading: it
    would wait for a writer; O_NONBLOCK opens it at once, and it is then refused by its kind)."""
    try:
        fd = os.open(os.path.expanduser(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return ""
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, CREDENTIAL_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _ini_secrets(text: str) -> list[str]:
    """The values of the secret options (_SECRET_OPTION) of every section of an INI text, as configparser
    reads it (botocore's own parser is much the same); none when it is no INI."""
    return [value for option, value in _ini_items(text) if _SECRET_OPTION.search(option)]


def _ini_items(text: str, configobj: bool = False) -> list[tuple[str, str]]:
    """(option, value) of every non-empty option of every section of an INI text, as configparser reads it; none
    when it is no INI. `configobj`: as DVC's configobj reads its config, a ` #` comment after a value left out and
    one pair of quotes around it (botocore keeps both: an AWS key is read as written)."""
    import configparser

    if not text:
        return []
    comments = ("#", ";") if configobj else None
    parser = configparser.RawConfigParser(strict=False, inline_comment_prefixes=comments)
    try:
        parser.read_string(text)
        items = [(option, value.strip()) for section in parser.sections() for option, value in parser.items(section)]
    except Exception:  # configparser.Error, or whatever else a hostile file makes it raise: no secret read
        return []
    if configobj:
        items = [(option, _unquoted(value)) for option, value in items]
    return [(option, value) for option, value in items if value]


def _unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def _netrc_passwords(text: str) -> list[str]:
    """Each `password` of a .netrc text (tokens split on whitespace, as the netrc format has it; a macdef's
    body is read as tokens too: a stray password there is redacted as well)."""
    tokens = text.split()
    return [tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token in ("password", "passwd")]
