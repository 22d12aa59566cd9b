"""Round 15b's breaks in params.yaml, the chat client's secrets and release recipes, one table per class
(every row failed before its fix), on real files and the real commands:

1. A secret of 6 to 15 characters pasted into params.yaml was refused only exactly as the variable holds it:
   the same value upper-cased (`HUNTER22X` for `hunter22x`), or the variable holding it in quotes, as
   `docker run --env-file` and systemd's EnvironmentFile= leave `DB_PASSWORD="hunter22x"`, or in another Unicode
   form (macOS's decomposed `ä`, fullwidth letters), went into dvc.lock.
2. An API key shorter than 16 characters was redacted only as written: a server echoing it upper- or
   lower-cased put it into the error line, prompts.txt and the cache (a 16+ key is redacted in any case).
3. An API key variable holding the key in an env file's quotes was sent as `Bearer "KEY"`, and the server's
   401 naming the key without them reached the error line (a short key is redacted as a whole token only).
4. A secret variable named in a common way the check did not know (MYSQL_PWD, DB_PASS, BORG_PASSPHRASE,
   AZURE_OPENAI_KEY, REDIS_AUTH): its value pasted into params.yaml went into dvc.lock.
5. A synthesize template repeating {examples} or {avoid_topics} (530 KB of params.yaml: 30,000 times) built
   a message of gigabytes for every request, to key it and then to send it: a request's messages are now at
   most 32 MiB characters, their longest draw reckoned before any is built.
6. A proxy's password (`http_proxy=http://user:PASSWORD@proxy:3128`, sent by urllib as Proxy-Authorization):
   a proxy echoing it in a 407 or a reply put it on the error line or into prompts.txt and the cache; the
   chat client now redacts every proxy variable's password, as written and percent-decoded, like the key.
7. A release chain in params.yaml: each release's plan holds every release it reads, so `recipes` wrote the
   square of a chain's length (3,000 links, 85 KB of params.yaml: 200 s and 300 MB; 10,000: most of an hour).
   Plans that would hold more than 200,000 entries together (a chain of over 600) are now one line, at once.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from test_chat_hostile import one_error_line
from test_chat_round6 import ENV, Server, cached, completion, json_reply, run_stage
from test_round10c import DESCRIPTION, HOMEPAGE, load, write_params

from helpers import cli
from helpers.workspace import PARAMS
from helpers.workspace import write_params as write_repo_params

# ---------------------------------------------------------------- 1: a short secret in params, another case


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SHORT_SECRETS = {  # variable, its value, where it is pasted, as what
    "upper-cased": ("MY_PASSWORD", "hunter22x", DESCRIPTION, "HUNTER22X"),
    "title-cased": ("DB_PASSWORD", "p@ss-w0rd", HOMEPAGE, "P@SS-W0RD"),
    "base64 of it upper-cased": ("GITLAB_TOKEN", "hunter22x", DESCRIPTION, b64("HUNTER22X")),
    "the variable in double quotes (docker --env-file)": ("DB_PASSWORD", '"hunter22x"', DESCRIPTION, "hunter22x"),
    "the variable in single quotes": ("MY_SECRET", "'p@ss-w0rd'", HOMEPAGE, "p@ss-w0rd"),
    "the variable decomposed (macOS), pasted composed": (
        "DB_PASSWORD",
        "pa\u0308sswort9",
        DESCRIPTION,
        "p\u00e4sswort9",
    ),
    "fullwidth": ("MY_PASSWORD", "hunter22x", DESCRIPTION, "\uff48\uff55\uff4e\uff54\uff45\uff52\uff12\uff12\uff58"),
}


@pytest.mark.parametrize("case", SHORT_SECRETS)
def test_a_short_secret_in_another_case_or_unquoted_is_refused(tmp_path, monkeypatch, case):
    """The line names the key path and the variable, never the value; the value inside a longer text, or a
    value only as long as a word, stays accepted (as round 10c)."""
    name, value, at, pasted = SHORT_SECRETS[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    line = load(write_params(tmp_path, at, pasted))
    assert line is not None and f"{'.'.join(at)}: holds the value of the environment variable {name}" in line, line
    bare = value.strip("'\"")
    assert bare.lower() not in line.lower() and pasted not in line
    assert load(write_params(tmp_path, at, f"the release notes mention {bare.upper()} once")) is None


# ---------------------------------------------------------------- 2: a short API key echoed in another case

SHORT_KEY = "Zq7xK2pLm9"  # 10 characters: redacted as a whole token only


def echoed(content: str):
    return json_reply(completion(content))


def refused_401(message: str):
    raw = json.dumps({"error": {"message": message}}).encode()
    return lambda key: (401, "Unauthorized", {"Content-Type": "application/json"}, raw)


MIXED_CASE_KEY = "QwErTyUiOpAs"  # letters only, but no word: not one case, not capitalised


SHORT_KEY_ECHOES = {  # key, the server's answer: a reply or an error, with the key in another case
    "a reply, upper-cased": (SHORT_KEY, echoed(f"1. a kite\n2. key {SHORT_KEY.upper()} rejected")),
    "a reply, lower-cased": (SHORT_KEY, echoed(f"1. a kite\n2. key {SHORT_KEY.lower()} rejected")),
    "a reply, case swapped": (SHORT_KEY, echoed(f"1. a kite\n2. key {SHORT_KEY.swapcase()} rejected")),
    "a 401 error, upper-cased": (SHORT_KEY, refused_401(f"Incorrect API key provided: {SHORT_KEY.upper()}")),
    "a letters-only key, lower-cased": (MIXED_CASE_KEY, echoed(f"1. a kite\n2. {MIXED_CASE_KEY.lower()}")),
}


@pytest.mark.parametrize("case", SHORT_KEY_ECHOES)
def test_a_short_key_echoed_in_another_case_is_redacted(tmp_path, monkeypatch, capfd, case):
    key, reply = SHORT_KEY_ECHOES[case]
    with Server(reply) as server:
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", server.base_url, key=key)
    prompts = tmp_path / "out" / "prompts.txt"
    written = [result.stdout, result.stderr, prompts.read_text(encoding="utf-8") if prompts.exists() else ""]
    written += [path.read_text(encoding="utf-8") for path in cached(tmp_path)]
    assert not any(key.lower() in text.lower() for text in written), written
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- 3: an API key in an env file's quotes

QUOTED_KEYS = {  # the variable's value: the key as an env file wrote it
    "a short key in double quotes": f'"{SHORT_KEY}"',
    "a short key in single quotes": f"'{SHORT_KEY}'",
    "a long key in double quotes": '"sk-proj-Tq9xV2mLp7Rw4Zk8Nb3Hc6Yd"',
}


@pytest.mark.parametrize("case", QUOTED_KEYS)
def test_a_key_in_quotes_is_refused_before_any_request(tmp_path, monkeypatch, capfd, case):
    quoted = QUOTED_KEYS[case]
    bare = quoted[1:-1]
    with Server(refused_401(f"Incorrect API key provided: {bare}")) as server:
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", server.base_url, key=quoted)
    line = one_error_line(result)
    assert f"${ENV}: the API key is wrapped in quotes" in line, line
    assert server.bodies == [] and bare not in result.stderr + result.stdout


# ---------------------------------------------------------------- 4: secret variables by their usual names

TOKEN = "Tq9zKw4mVb7xLp2nR8"  # no known shape: caught only as a set variable's value
SECRET_NAMES = {  # variable: where its value is pasted
    "MYSQL_PWD": DESCRIPTION,  # MySQL's own client reads it
    "DB_PASS": HOMEPAGE,
    "BORG_PASSPHRASE": DESCRIPTION,
    "AZURE_OPENAI_KEY": DESCRIPTION,
    "REDIS_AUTH": HOMEPAGE,
}


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_secret_variable_by_its_usual_name_is_looked_for(tmp_path, monkeypatch, name):
    """The same value under GIT_AUTHOR_NAME, a name with `auth` inside a word, is no secret and passes."""
    at = SECRET_NAMES[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, TOKEN)
    line = load(write_params(tmp_path, at, f"v2 {TOKEN}"))
    assert line is not None and f"{'.'.join(at)}: holds the value of the environment variable {name}" in line, line
    assert TOKEN not in line
    monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_AUTHOR_NAME", TOKEN)
    assert load(write_params(tmp_path, at, f"v2 {TOKEN}")) is None


# ---------------------------------------------------------------- 5: a template that multiplies its fields

LINE = "a red kite over a green hill at dawn, " * 5  # 190 characters


def long_example_lines(root: Path) -> list[dict]:
    """An example file of 200 lines of 60,000 characters (each under the 64 KiB line cap), all drawn."""
    (root / "long.txt").write_text(("x" * 60_000 + "\n") * 200, encoding="utf-8")
    return [{"path": "long.txt", "count": 200}]


MULTIPLIED = {  # the entry's keys: each makes one message of about 40M characters
    "{examples} 2,000 times": lambda root: {"template": "{examples}" * 2000, "fixed_examples": [LINE] * 100},
    "{avoid_topics} 2,000 times": lambda root: {"template": "{avoid_topics}" * 2000, "avoid_topics": [LINE] * 100},
    "long example lines, 3 times": lambda root: {
        "template": "{examples}\n{examples}\n{examples}",
        "examples": long_example_lines(root),
    },
}


@pytest.mark.parametrize("case", MULTIPLIED)
def test_a_message_of_more_than_32_MiB_characters_is_refused_before_any_request(tmp_path, monkeypatch, capfd, case):
    with Server(json_reply(completion())) as server:
        entry = MULTIPLIED[case](tmp_path)
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", server.base_url, key=None, **entry)
    line = one_error_line(result)
    assert "synthesize t: a request's messages may reach" in line and f"over {32 << 20}" in line, line
    assert server.bodies == []


# ---------------------------------------------------------------- 6: a proxy's password, echoed

LONG_PASSWORD = "PrX7vQ2mZ9kL4wT8"
SHORT_PASSWORD = "p@ss:W0rd-9x!"
PROXY_ECHOES = {  # variable, password as the variable writes it, as the proxy echoes it, how it answers
    "a 407 naming it": ("http_proxy", LONG_PASSWORD, LONG_PASSWORD, 407),
    "a reply holding it": ("HTTP_PROXY", LONG_PASSWORD, LONG_PASSWORD, 200),
    "percent-encoded, echoed decoded": ("http_proxy", "p%40ss%3AW0rd-9x%21", SHORT_PASSWORD, 200),
}


def proxy_reply(password: str, status: int):
    if status == 200:
        return json_reply(completion(f"1. a kite\n2. proxy login user:{password} accepted"))
    raw = json.dumps({"error": {"message": f"bad proxy login user:{password}"}}).encode()
    return lambda key: (status, "Proxy Authentication Required", {"Content-Type": "application/json"}, raw)


@pytest.mark.parametrize("case", PROXY_ECHOES)
def test_a_proxys_password_echoed_is_redacted(tmp_path, monkeypatch, capfd, case):
    variable, written, echoed_as, status = PROXY_ECHOES[case]
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    with Server(proxy_reply(echoed_as, status)) as proxy:
        monkeypatch.setenv(variable, proxy.base_url.replace("http://", f"http://user:{written}@").removesuffix("/v1"))
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", "http://chat.example.test/v1", key=None)
    assert len(proxy.bodies) == 1 and "Traceback" not in result.stderr  # it went through the proxy
    prompts = tmp_path / "out" / "prompts.txt"
    written_out = [result.stdout, result.stderr, prompts.read_text(encoding="utf-8") if prompts.exists() else ""]
    written_out += [path.read_text(encoding="utf-8") for path in cached(tmp_path)]
    assert not any(echoed_as in text for text in written_out), written_out


# ---------------------------------------------------------------- 7: a release chain's plans grow as its square


def based(n: int) -> dict:
    """n releases, each on the one before (the first on v2)."""
    return {f"c{i}": {"base": f"c{i - 1}" if i else "v2"} for i in range(n)}


def referencing(n: int, prefix: str = "r", previous: str = "r") -> dict:
    """n releases, each with a component whose dedup step references the one before (the first: v2)."""
    step = {"scope": "against", "against": "train"}
    component = {"source": "gustavosta", "split": "all"}
    return {
        f"{prefix}{i}": {
            "components": [
                {**component, "steps": [{"dedup": {**step, "reference": f"{previous}{i - 1}" if i else "v2"}}]}
            ]
        }
        for i in range(n)
    }


def mixed(n: int) -> dict:
    """2n releases, by turns built on and referencing the one before: c_i on r_i, r_i referencing c_(i-1)."""
    refs = referencing(n, previous="c")
    return {name: entry for i in range(n) for name, entry in ((f"r{i}", refs[f"r{i}"]), (f"c{i}", {"base": f"r{i}"}))}


CHAINS = {  # releases added to the repository's
    "700 releases, each on the one before": based(700),
    "700 releases, each referencing the one before": referencing(700),
    "700 releases built on and referencing by turns": mixed(350),
}


@pytest.mark.parametrize("case", CHAINS)
def test_release_plans_growing_as_a_chains_square_are_one_line(tmp_path, monkeypatch, capfd, case):
    """Accepted before, after 9 to 26 s of writing plans (a chain of 3,000: 200 s and 300 MB)."""
    write_repo_params(tmp_path, releases={**PARAMS["releases"], **CHAINS[case]})
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: params.yaml: releases."), lines
    assert "the release plans would hold more than 200000 entries" in lines[0]
    assert not (tmp_path / "data" / "recipes").exists()
