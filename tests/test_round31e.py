"""Round 31e: secrets the SDKs read from files, and secrets inside an input value that reach a written file, one
table per class (every row failed before its fix), on real files, a real S3 server on loopback and real exports:

1. The AWS SDK signs with the credentials of `~/.aws/credentials` or a profile (AWS_SHARED_CREDENTIALS_FILE,
   AWS_PROFILE, AWS_CONFIG_FILE) when the environment names none; an S3 server echoing the request's session
   token or Authorization put them on the S3 failure's line (s3_input.redact_credentials redacted the AWS_*
   variables only). It now redacts every known secret (import_env.redact_line), the credential files' included.
2. A secret the SDKs read from a file (params.yaml refuses the environment's, not these) inside an input value
   reached a published file as written: a source's homepage, citation or a
   rendering model's path in the release card (README.md, uploaded by publish); a caption source's model or
   backend label in a bucketed release's manifest.json. Both are redacted of every known secret
   (card._without_secrets, bucketed.write_bucketed); the captions and prompts themselves are data, as written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_bucketed_export import jpeg_bytes, smooth
from test_release_card import RELEASES, RENDERED, SOURCES, STATS
from test_round18 import echoing_s3  # noqa: F401  (a fixture)

from scripts.lib.errors import DataError

# made-up credentials, long enough to be matched in any case and form
FILE_KEY_ID = "AKIAR31E" + "F" * 12
FILE_SECRET = "r31e-file-secret-" + "Wq7x" * 6
FILE_TOKEN = "r31efiletoken" + "Zk4Pq9" * 5


@pytest.fixture
def clean_aws(tmp_path, monkeypatch):
    """No AWS credential or profile of the machine's: HOME is tmp_path, the SDK never asks EC2's metadata."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_ENDPOINT_URL_S3",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HOME",
        "NETRC",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- 1. credentials of a credentials file or a profile, echoed by an S3 server --------------------------------

PROFILE_KEYS = (
    f"aws_access_key_id = {FILE_KEY_ID}\naws_secret_access_key = {FILE_SECRET}\naws_session_token = {FILE_TOKEN}\n"
)


def _shared_file_default(home: Path, monkeypatch) -> None:
    (home / "creds.ini").write_text(f"[default]\n{PROFILE_KEYS}")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "creds.ini"))


def _home_named_profile(home: Path, monkeypatch) -> None:
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(f"[default]\nregion = us-east-1\n\n[work]\n{PROFILE_KEYS}")
    monkeypatch.setenv("AWS_PROFILE", "work")


def _config_file_profile(home: Path, monkeypatch) -> None:
    (home / "aws.cfg").write_text(f"[profile ci]\nregion = us-east-1\n{PROFILE_KEYS}")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws.cfg"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "none"))
    monkeypatch.setenv("AWS_PROFILE", "ci")


# row -> (where the credentials are, what the server quotes of (token, Authorization))
S3_ROWS = {
    "AWS_SHARED_CREDENTIALS_FILE's default profile, the token as is": (_shared_file_default, lambda t, a: t),
    "~/.aws/credentials, AWS_PROFILE=work, Authorization upper-cased": (_home_named_profile, lambda t, a: a.upper()),
    "AWS_CONFIG_FILE's [profile ci], the token reversed": (_config_file_profile, lambda t, a: t[::-1]),
}


def _readable(text: str) -> list[str]:
    low = text.lower()
    return [form for key in (FILE_KEY_ID, FILE_TOKEN) for form in (key.lower(), key.lower()[::-1]) if form in low]


@pytest.mark.parametrize("row", S3_ROWS)
def test_a_profile_s_credentials_echoed_by_s3_never_reach_the_line(clean_aws, monkeypatch, echoing_s3, row):  # noqa: F811
    from scripts.lib import s3_input

    where, echo = S3_ROWS[row]
    where(clean_aws, monkeypatch)
    echoing_s3.echo = staticmethod(echo)
    monkeypatch.setenv("AWS_ENDPOINT_URL", echoing_s3.endpoint)  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(DataError) as failed:
        s3_input.shards("s3://b/shards/")
    line = str(failed.value)
    assert "AccessDenied" in line or "ACCESS_DENIED" in line, line  # the server's own words, starred in places
    assert not _readable(line), line


# --- 2. a secret inside an input value, in a release card or a bucketed manifest -------------------------------


def _secret_from(kind: str, home: Path, monkeypatch) -> str:
    """A secret the SDKs read from a file, as `kind` says. params.yaml refuses an environment secret in any
    value (yaml_text.secret_env_values), not these: a source's fields hold them as the user wrote them."""
    if kind == "credentials file":
        _shared_file_default(home, monkeypatch)
    elif kind == "~/.aws profile":
        _home_named_profile(home, monkeypatch)
    elif kind == "~/.netrc":
        (home / ".netrc").write_text(f"machine hub.example login me password {FILE_SECRET}\n")
    else:  # the Hub's stored_tokens
        (home / "hf").mkdir()
        (home / "hf" / "stored_tokens").write_text(f"[laptop]\nhf_token = {FILE_SECRET}\n")
        monkeypatch.setenv("HF_HOME", str(home / "hf"))
    return FILE_SECRET


def _card(sources: dict, generation: dict) -> str:
    from scripts.lib.card import data_card
    from scripts.lib.params import Dedup, Split
    from scripts.lib.recipe import resolve_recipe

    return data_card(resolve_recipe("r", RELEASES), STATS, sources, Dedup(threshold=0.85), Split(), generation)


def _homepage(secret: str) -> tuple[dict, dict]:
    entry = SOURCES["diffusiondb"].model_copy(update={"homepage": f"https://example.org/data?token={secret}"})
    return {**SOURCES, "diffusiondb": entry}, {}


def _citation(secret: str) -> tuple[dict, dict]:
    entry = SOURCES["diffusiondb"].model_copy(update={"citation": f"@misc{{x,\n  note = {{{secret}}}\n}}"})
    return {**SOURCES, "diffusiondb": entry}, {}


def _model_path(secret: str) -> tuple[dict, dict]:
    from scripts.lib.card import generation_settings

    rendered = [text.replace("models/tiny-sd2", f"models/{secret}/sd2") for text in RENDERED]
    return SOURCES, {"diffusiondb": generation_settings(rendered), "chatgpt": []}


# row -> (how the secret is known, where the input value holds it)
CARD_ROWS = {
    "a homepage's ?token= holding a stored Hub token": ("stored_tokens", _homepage),
    "a citation holding an AWS profile's secret key": ("~/.aws profile", _citation),
    "a rendering model's path holding a credentials file's secret": ("credentials file", _model_path),
}


@pytest.mark.parametrize("row", CARD_ROWS)
def test_no_known_secret_reaches_a_release_card(clean_aws, monkeypatch, row):
    kind, values = CARD_ROWS[row]
    secret = _secret_from(kind, clean_aws, monkeypatch)
    text = _card(*values(secret))
    assert secret.lower() not in text.lower(), text
    assert "## Sources and licences" in text and "***" in text  # the card, its secret starred


def _manifest_of(home: Path, source: dict) -> dict:
    from scripts.lib.bucketed import write_bucketed

    image = home / "a.jpg"
    image.write_bytes(jpeg_bytes(smooth(512, 512, 1)))
    rows = pd.DataFrame(
        [
            {
                "id": "a1",
                "source": "s",
                "text": "a caption",
                "image": str(image),
                "caption_variant": "caption_v",
                "caption_selector_index": 0,
                "caption_source_id": 1,
            }
        ]
    )
    rows.attrs["caption_sources"] = {1: source}
    write_bucketed(rows, home / "out", {"base_resolution": [512]})
    return json.loads((home / "out" / "manifest.json").read_text(encoding="utf-8"))


# row -> (how the secret is known, the caption source's table entry holding it)
MANIFEST_ROWS = {
    "a model name holding a credentials file's secret": (
        "credentials file",
        lambda s: {"backend": "openrouter", "model": f"org/{s}", "created_at": 1},
    ),
    "a backend label that is a ~/.netrc password": (
        "~/.netrc",
        lambda s: {"backend": s, "model": "m/x", "created_at": 1},
    ),
    "a prompt hash field holding an AWS profile's secret key": (
        "~/.aws profile",
        lambda s: {"backend": "openrouter", "model": "m/x", "created_at": 1, "user_prompt_sha256": s},
    ),
}


@pytest.mark.parametrize("row", MANIFEST_ROWS)
def test_no_known_secret_reaches_a_bucketed_manifest(clean_aws, monkeypatch, row):
    kind, entry = MANIFEST_ROWS[row]
    secret = _secret_from(kind, clean_aws, monkeypatch)
    manifest = _manifest_of(clean_aws, entry(secret))
    text = json.dumps(manifest)
    assert secret.lower() not in text.lower(), text
    assert manifest["caption_sources"]["1"]["created_at"] == 1 and "***" in text
    assert (clean_aws / "out" / "buckets").is_dir()  # the export itself written
