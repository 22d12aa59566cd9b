"""Round 27d: no secret survives, one table per class (every row failed before its fix), on real files, runs of the
command (`helpers.cli`: scripts.cli.main in this process) and, in the slow tier, a real local Ray:

1. On `runtime.engine: ray` the local Ray's processes inherited every secret of the environment (HF_TOKEN,
   OPENAI_API_KEY, the AWS keys, a variable `api_key_env` names, a proxy's password), and whatever a worker printed
   stayed in /tmp/ray/session_*/logs/worker-*.out. The secrets are withheld from ray.init now, but those the step's
   workers read (dedup@S of an s3:// input: the AWS keys; generate: HF_TOKEN), and the session's folder is a temp
   folder of the command's own, removed with the session (ray_engine.withheld_variables, ray_session).
2. A signing parameter under a name the table lacked (CloudFront's `Policy`, a camelCase `accessToken`), %-escaped
   (`X%2DAmz%2DSignature`), inside another URL's query (%-escaped once or twice), after a JSON `\\u0026`, or in a
   URL without a scheme, reached the prompt table (readers.base.without_signatures).
3. A `user:password@host` without a scheme in a source's metadata (a database DSN) reached the prompt table; it is
   ***@host now. The prompt itself is kept as the source wrote it (rows in KEPT): it is the data.
4. A secret the user typed (`synthesize t sk-...`, a path holding HF_TOKEN, a proxy's password) or one a key
   upper-cased in the Turkish locale (`İ`) was printed on the error line as given (errors.redact_line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_round16b import dalle3_json, ingest, openprompts_uri, source

from helpers import cli, tar_bytes
from helpers.repos import REPO
from helpers.workspace import PNG, error_line, write_files, write_params

pytestmark = pytest.mark.usefixtures("no_proxy")

KEY = "sk-proj-R27dTYPEDkey0123456789abcdEF"
HF = "hf_R27dTYPEDtoken0123456789abcdEFgh"
AWS = "R27dAWSsecret0123456789abcdEFghIJklMNop"
PROXY_PASSWORD = "Pr0xyR27dPassw0rd"

# ---------------------------------------------------------------- 1. Ray's processes and logs

# variable -> value, and whether a worker of a step needing nothing (clean@S) gets it
WORKER_ENV = {
    "HF_TOKEN": (HF, False),
    "OPENAI_API_KEY": (KEY, False),
    "AWS_SECRET_ACCESS_KEY": (AWS, False),
    "AWS_SESSION_TOKEN": (AWS[::-1], False),
    "MY_LLM": (KEY[::-1], False),  # named by params' api_key_env only
    "https_proxy": (f"socks5h://u:{PROXY_PASSWORD}@proxy:1080", False),
    "TOKENIZERS_PARALLELISM": ("false", True),  # named like a secret, a setting
    "GOOGLE_APPLICATION_CREDENTIALS": ("/home/u/key.json", True),  # where a key is: no secret
    "HTTP_PROXY": ("http://proxy:3128", True),  # a proxy without a password
}


def params_naming_my_llm(root: Path) -> None:
    synthesize = {"t": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "MY_LLM", "examples": []}}
    write_params(root, synthesize=synthesize)


@pytest.fixture(scope="module")
def naming_my_llm(tmp_path_factory) -> Path:
    """A folder whose params.yaml names MY_LLM in an `api_key_env` (written once: the rows only read it)."""
    root = tmp_path_factory.mktemp("my_llm")
    params_naming_my_llm(root)
    return root


@pytest.mark.parametrize("name", sorted(WORKER_ENV))
def test_a_local_rays_processes_start_without_the_environments_secrets(naming_my_llm, monkeypatch, name):
    from scripts.lib.ray_engine import withheld_variables

    monkeypatch.chdir(naming_my_llm)
    for variable, (value, _) in WORKER_ENV.items():
        monkeypatch.setenv(variable, value)
    assert (name not in withheld_variables()) is WORKER_ENV[name][1]


NEEDS = {  # the step's needs -> (variable, withheld?)
    "dedup of s3:// keeps the AWS keys": ("S3_CREDENTIALS", "AWS_SECRET_ACCESS_KEY", False),
    "dedup of s3:// keeps its proxy": ("S3_CREDENTIALS", "https_proxy", False),
    "dedup of s3:// withholds HF_TOKEN": ("S3_CREDENTIALS", "HF_TOKEN", True),
    "generate keeps HF_TOKEN": ("HUB_CREDENTIALS", "HF_TOKEN", False),
    "generate withholds the AWS keys": ("HUB_CREDENTIALS", "AWS_SESSION_TOKEN", True),
}


@pytest.mark.parametrize("row", sorted(NEEDS))
def test_what_a_steps_workers_read_is_all_they_get(tmp_path, monkeypatch, row):
    from scripts.lib import ray_engine

    needs, name, withheld = NEEDS[row]
    monkeypatch.chdir(tmp_path)
    for variable, (value, _) in WORKER_ENV.items():
        monkeypatch.setenv(variable, value)
    assert (name in ray_engine.withheld_variables(getattr(ray_engine, needs))) is withheld


RAY_PROBE = textwrap.dedent(
    """
    import json, os, sys, glob
    from scripts.lib.params import Runtime
    from scripts.lib import ray_engine
    needs = getattr(ray_engine, sys.argv[1]) if sys.argv[1] else ()
    with ray_engine.ray_session(Runtime(engine="ray", workers=1), needs) as ray:
        @ray.remote(num_cpus=0)
        def probe(names):
            print("worker prints", *[os.environ.get(n) for n in names], flush=True)
            return {n: os.environ.get(n) for n in names}
        seen = ray.get(probe.remote(sys.argv[2:]))
        folder = ray._private.worker.global_worker.node.get_session_dir_path()
        logs = glob.glob(os.path.join(folder, "logs", "worker-*.out"))
        printed = any("worker prints" in open(p).read() for p in logs)
    print(json.dumps({"seen": seen, "folder": folder, "printed": printed, "after": os.path.exists(folder),
                      "driver": {n: os.environ.get(n) for n in sys.argv[2:]}}))
    """
)


def ray_probe(root: Path, needs: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update({name: value for name, (value, _) in WORKER_ENV.items()})
    env.update({"AWS_ACCESS_KEY_ID": "AKIAR27DTESTKEY00000"})
    params_naming_my_llm(root)
    names = [*WORKER_ENV, "AWS_ACCESS_KEY_ID"]
    result = subprocess.run(
        [sys.executable, "-c", RAY_PROBE, needs, *names], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ray_runs(tmp_path_factory) -> dict:
    return {needs: ray_probe(tmp_path_factory.mktemp(needs or "none"), needs) for needs in ("", "S3_CREDENTIALS")}


RAY_ROWS = {  # (the step's needs, variable, does a worker see it?)
    "clean: HF_TOKEN": ("", "HF_TOKEN", False),
    "clean: OPENAI_API_KEY": ("", "OPENAI_API_KEY", False),
    "clean: AWS_SECRET_ACCESS_KEY": ("", "AWS_SECRET_ACCESS_KEY", False),
    "clean: api_key_env's MY_LLM": ("", "MY_LLM", False),
    "clean: a socks5h proxy's password": ("", "https_proxy", False),
    "clean: TOKENIZERS_PARALLELISM, a setting": ("", "TOKENIZERS_PARALLELISM", True),
    "dedup of s3://: AWS_SECRET_ACCESS_KEY": ("S3_CREDENTIALS", "AWS_SECRET_ACCESS_KEY", True),
    "dedup of s3://: AWS_ACCESS_KEY_ID": ("S3_CREDENTIALS", "AWS_ACCESS_KEY_ID", True),
    "dedup of s3://: HF_TOKEN": ("S3_CREDENTIALS", "HF_TOKEN", False),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", sorted(RAY_ROWS))
def test_a_ray_worker_sees_only_the_secrets_its_step_reads(ray_runs, row):
    needs, name, seen = RAY_ROWS[row]
    run = ray_runs[needs]
    assert (run["seen"][name] is not None) is seen, run["seen"]
    assert run["driver"][name] is not None  # the driver's own environment is whole again


@pytest.mark.slow
@pytest.mark.parametrize("needs", ["", "S3_CREDENTIALS"])
def test_a_local_rays_session_folder_and_worker_logs_go_with_the_session(ray_runs, needs):
    run = ray_runs[needs]
    assert run["printed"], run  # a worker's print was in worker-*.out while Ray ran
    assert not run["after"], run["folder"]  # and is gone with the session
    assert not run["folder"].startswith("/tmp/ray/"), run["folder"]


# ---------------------------------------------------------------- 2. signing parameters the table lacked


def dalle3_url(url: str):
    def files(root: Path) -> dict:
        write_files(root, {"raw/data-000000.tar": tar_bytes([("a.png", PNG), ("a.json", dalle3_json(url=url))])})
        return source("dalle3", caption_field="short_caption")

    return files


SIGNATURE = "Zq8Rw2Lx5Vn7Kc3Hb9Tm"
SIGNED_URLS = {  # the source, what meta holds in the signature's place
    "cloudfront-policy": (
        dalle3_url(f"https://d.cloudfront.net/a.png?Policy=eyJ{SIGNATURE}&Signature=x&Key-Pair-Id=K2J"),
        "a.png?Policy=***&Signature=***&Key-Pair-Id=K2J",
    ),
    "camelcase-names": (
        openprompts_uri(f"https://api.example/img?accessToken={SIGNATURE}&clientSecret={SIGNATURE}&pageSize=3"),
        "img?accessToken=***&clientSecret=***&pageSize=3",
    ),
    "no-scheme-s3": (
        dalle3_url(f"b.s3.amazonaws.com/x.png?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=60"),
        "x.png?X-Amz-Signature=***&X-Amz-Expires=60",
    ),
    "escaped-inside-a-redirect": (
        dalle3_url(f"https://r.example/?to=https%3A%2F%2Fb%2Fk%3Fsig%3D{SIGNATURE}%26sv%3D2021"),
        "k%3Fsig%3D***%26sv%3D2021",
    ),
    "escaped-twice-inside-a-redirect": (
        dalle3_url(f"https://r.example/?to=https%253A%252F%252Fb%252Fk%253FX-Goog-Signature%253D{SIGNATURE}"),
        "k%253FX-Goog-Signature%253D***",
    ),
    "escaped-name": (
        openprompts_uri(f"https://b.s3.amazonaws.com/x.png?X%2DAmz%2DSignature={SIGNATURE}"),
        "x.png?X%2DAmz%2DSignature=***",
    ),
    "json-escaped-ampersand": (
        dalle3_url(f"https://a.blob.core.windows.net/c/a.png?se=2030\\u0026sig={SIGNATURE}"),
        "a.png?se=2030\\\\u0026sig=***",
    ),
}


def only_meta(root: Path, make, monkeypatch, capfd) -> str:
    result, _ = ingest(root, make(root), monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    [meta] = pq.read_table(root / "out" / "s.parquet")["meta"].to_pylist()
    return meta


@pytest.mark.parametrize("row", sorted(SIGNED_URLS))
def test_a_signature_under_any_name_or_escape_never_reaches_the_prompt_table(tmp_path, monkeypatch, capfd, row):
    make, redacted = SIGNED_URLS[row]
    meta = only_meta(tmp_path, make, monkeypatch, capfd)
    assert redacted in meta, meta  # the row is kept, its other parameters as they were
    for path in (tmp_path / "out").iterdir():
        assert SIGNATURE.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------- 3. user:password@ without a scheme


BARE = {  # the metadata's value, what meta holds
    "postgres-dsn": ("admin:hunter2x@db.internal:5432/prompts", "***@db.internal:5432/prompts"),
    "minio-host": ("key:s3cr3tValue@minio:9000/bucket/a.png", "***@minio:9000/bucket/a.png"),
    "in-a-sentence": ("mirrored from ftp0:Passw0rdX@files.example today", "from ***@files.example today"),
}
KEPT = {  # not a credential (or the prompt, which is the data): as the source wrote it
    "mail-address": "by jo.doe@example.com",
    "mailto": "mailto:jo@example.com",
    "a-time": "at 12:30 @ home",
}


@pytest.mark.parametrize("row", sorted(BARE))
def test_a_user_and_password_without_a_scheme_never_reach_the_prompt_table(tmp_path, monkeypatch, capfd, row):
    value, redacted = BARE[row]
    meta = only_meta(tmp_path, dalle3_url(value), monkeypatch, capfd)
    assert redacted in meta and value not in meta, meta


@pytest.mark.parametrize("row", sorted(KEPT))
def test_what_is_no_credential_is_kept(tmp_path, monkeypatch, capfd, row):
    meta = only_meta(tmp_path, dalle3_url(KEPT[row]), monkeypatch, capfd)
    assert json.loads(meta)["url"] == KEPT[row]


# ---------------------------------------------------------------- 4. a secret typed, or echoed in another case


TYPED = {  # the variables set, the command's arguments, the secret the line must not hold
    "synthesize-entry-is-the-key": ({"OPENAI_API_KEY": KEY}, ["synthesize", KEY, "out"], KEY),
    "ingest-source-is-hf-token": ({"HF_TOKEN": HF}, ["ingest", HF, "out/s.parquet"], HF),
    "api-key-env-named-variable": ({"MY_LLM": KEY[::-1]}, ["synthesize", f"x{KEY[::-1]}", "out"], KEY[::-1]),
    "socks5h-proxy-password": (
        {"ALL_PROXY": f"socks5h://u:{PROXY_PASSWORD}@proxy:1080"},
        ["ingest", f"data/{PROXY_PASSWORD}", "out/s.parquet"],
        PROXY_PASSWORD,
    ),
    "aws-secret-split-by-a-line-break": (
        {"AWS_SECRET_ACCESS_KEY": AWS},
        ["ingest", f"{AWS[:20]}\n{AWS[20:]}", "out/s.parquet"],
        AWS[20:],
    ),
    "key-upper-cased-in-turkish": (
        {"OPENAI_API_KEY": "sk-iiiiIIiiIIiiIIiiIIii"},
        ["synthesize", "SK-İİİİIIİİIIİİIIİİIIİİ", "out"],
        "İİİİ",
    ),
}


@pytest.mark.parametrize("row", sorted(TYPED))
def test_a_secret_the_user_typed_never_reaches_the_error_line(naming_my_llm, monkeypatch, capfd, row):
    env, argv, secret = TYPED[row]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = cli(argv, naming_my_llm, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2, result.stderr
    assert "***" in line and secret.lower() not in line.lower(), line
