"""sample-data: write the small embedded sample sources in their NATIVE formats (docs/contracts.md §5).

`python -m scripts sample-data data/raw` rewrites data/raw/ byte for byte the same on every run:
one seeded RNG, fixed tar/zip timestamps and owners, parquet without pandas metadata. `--seed` writes
another sample over a folder it wrote (its marker, as every folder output's).

The prompts are built from word lists and carry planted work for the later stages:
- exact duplicates, and near duplicates (one-word edits of long prompts) with word-3-gram Jaccard
  in [0.7, 0.8) and >= 0.8, so `dedup.threshold` 0.7 -> 0.8 keeps more rows;
- rows the cleaner must drop (links, >= 10 commas, ban words, too short, "thought" texts) and rows
  it must rewrite (artist names, "trending on artstation");
- cross-source overlap: OpenPrompts and Gustavosta rows near-duplicating DiffusionDB ones.

Over 500 lines on purpose: one writer per native format (seven), each short, kept together so the
sample's planted cases read in one place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import random
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Protocol

import typer

from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path, check_replaceable, shown
from scripts.lib.marks import edited_since, holds_marker
from scripts.lib.safe_paths import MadeHere
from scripts.lib.temps import output_lock

SEED = 20240823
FIXED_MTIME = 1_700_000_000  # tar member mtime (2023-11-14): a constant keeps shard bytes stable
FIXED_ZIP_TIME = (2022, 8, 1, 0, 0, 0)
# every file the sample writes, at any seed (a test checks it against write_all): a folder holding another is
# refused before the work, not at the final rename after the whole sample was written to a temp folder
SAMPLE_FILES = (
    "chatgpt/prompts.txt",
    "dalle3/data-000000.tar",
    "diffusiondb/metadata.parquet",
    "diffusiondb/part-000001.zip",
    "diffusiondb/part-000002.zip",
    "gustavosta/data/eval.parquet",
    "gustavosta/data/train.parquet",
    "laion_buckets/buckets/p1024x1024/shard-000000.tar",
    "laion_buckets/buckets/p1216x832/shard-000000.tar",
    "laion_buckets/buckets/p832x1216/shard-000000.tar",
    "laion_buckets/manifest.json",
    "openprompts/openprompts.csv",
)


class Sink(Protocol):
    """Where a source writer puts its files: a MadeHere on disk, or InMemory."""

    def sub(self, name: str) -> Sink: ...

    def new_file(self, rel: str, data: bytes) -> None: ...


class InMemory:
    """The sample's files as bytes (rel -> data): compared with a folder's files before anything is written."""

    def __init__(self, files: dict[str, bytes] | None = None, prefix: str = ""):
        self.files = {} if files is None else files
        self.prefix = prefix

    def sub(self, name: str) -> InMemory:
        return InMemory(self.files, f"{self.prefix}{name}/")

    def new_file(self, rel: str, data: bytes) -> None:
        self.files[self.prefix + rel] = data


# ---------------------------------------------------------------- word lists for prompt-like text
SUBJECTS = [
    "an old lighthouse keeper",
    "a red fox",
    "a clockwork owl",
    "a lone samurai",
    "a tiny robot",
    "a floating castle",
    "a giant tortoise",
    "a street musician",
    "a crystal dragon",
    "an astronaut cat",
    "a victorian greenhouse",
    "a desert caravan",
    "a paper boat",
    "a mountain monastery",
    "a neon tiger",
    "a wizard librarian",
    "a sunken cathedral",
    "a steam locomotive",
    "a jellyfish forest",
    "a knight in armor",
    "a cozy bakery",
    "a polar bear cub",
    "a cyberpunk alley",
    "an ancient oak tree",
    "a hot air balloon",
    "a koi pond",
    "a ghost ship",
    "a mechanical heart",
    "a sleeping giant",
    "a flower market",
]
ACTIONS = [
    "standing in",
    "wandering through",
    "resting beside",
    "hovering above",
    "hidden inside",
    "reflected in",
    "glowing within",
    "emerging from",
    "drifting across",
    "guarding",
]
PLACES = [
    "a misty pine forest",
    "a rainy tokyo street",
    "a frozen lake",
    "an endless library",
    "a coral reef",
    "a crumbling temple",
    "a field of sunflowers",
    "a moonlit harbor",
    "a volcanic valley",
    "a quiet village",
    "a glass city",
    "a canyon at dawn",
    "a snowy mountain pass",
    "an abandoned subway",
    "a lavender field",
]
STYLES = [
    "oil painting",
    "watercolor",
    "digital painting",
    "pencil sketch",
    "studio photograph",
    "ukiyo-e woodblock print",
    "concept art",
    "pixel art",
    "charcoal drawing",
    "isometric illustration",
    "art nouveau poster",
    "cinematic still",
    "gouache painting",
    "low poly render",
    "linocut print",
]
MODIFIERS = [
    "highly detailed",
    "soft lighting",
    "volumetric fog",
    "golden hour",
    "muted colors",
    "sharp focus",
    "dramatic shadows",
    "pastel palette",
    "intricate patterns",
    "wide angle",
    "shallow depth of field",
    "warm tones",
    "cold blue light",
    "dreamy atmosphere",
    "rich textures",
    "symmetrical composition",
]
# long sentences for planted near duplicates: every word distinct, no commas, no cleaner triggers
LONG_WORDS = [
    "ancient",
    "weathered",
    "stone",
    "bridge",
    "crossing",
    "slow",
    "silver",
    "river",
    "under",
    "heavy",
    "storm",
    "clouds",
    "while",
    "tiny",
    "lanterns",
    "float",
    "beside",
    "drifting",
    "willow",
    "branches",
    "near",
    "quiet",
    "farmhouses",
    "painted",
    "ochre",
    "green",
    "amber",
    "violet",
    "crimson",
    "teal",
    "ivory",
    "cobalt",
    "scarlet",
    "emerald",
    "bronze",
    "copper",
    "marble",
    "velvet",
    "linen",
    "canvas",
    "feathers",
    "pebbles",
    "acorns",
    "thistles",
    "meadows",
    "orchards",
    "vineyards",
    "glaciers",
    "dunes",
    "fjords",
    "lagoons",
    "cliffs",
    "caverns",
    "towers",
    "spires",
    "domes",
    "arches",
    "gardens",
    "fountains",
    "statues",
    "mosaics",
    "tapestries",
]
SWAP_WORDS = ["golden", "frosted", "hidden", "distant", "gentle", "broken", "silent", "faded"]

# rows the cleaner must drop (docs/cleaning.md), and rows it must rewrite
DROP_ROWS = [
    "a castle on a hill http://example.com/castle.png",
    "see more at https://art.example.org/gallery/42 beautiful sunset painting",
    "red, blue, green, yellow, purple, orange, pink, black, white, grey, brown, cyan",
    "portrait of a knight, armor, sword, shield, helmet, cape, horse, banner, castle, dragon, fire",
    "a beautiful landscape photo final_render.jpg high quality",
    "#fantasy #art #dragon a dragon flying over mountains",
    "cat",
    "a dog",
    "i'm trying to draw a picture of my dog sitting on the couch",
    "help me make a logo for my coffee shop with a cup",
    "i need a picture of a house for my school project",
    "shot on canon EOS R3 a forest path in autumn morning",
]
REWRITE_ROWS = [
    "portrait of a warrior queen by greg rutkowski, trending on artstation",
    "a fantasy city at night, by wlop and ilya kuvshinov, artstation, 8k",
    "an elven archer in a forest, octane render, unreal engine, trending on cgsociety",
    "a cyberpunk samurai, art by alphonse mucha, deviantart, highly detailed, 4k",
    "a dragon sleeping on gold coins by craig mullins, concept art, trending on artstation",
]
CHATGPT_OPENERS = [
    "A surreal painting of",
    "A whimsical illustration of",
    "A detailed sketch of",
    "A neon-soaked scene of",
    "A dreamy watercolor of",
    "A cinematic photograph of",
    "A vibrant poster of",
    "A quiet study of",
]


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def word_jaccard(a: str, b: str, n: int = 3) -> float:
    """Jaccard of word n-gram sets, the docs/contracts.md §4 shingling (short texts: one shingle of all tokens)."""

    def shingles(text: str) -> set[tuple[str, ...]]:
        toks = tokens(text)
        if len(toks) < n:
            return {tuple(toks)}
        return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def short_prompt(rng: random.Random) -> str:
    mods = rng.sample(MODIFIERS, rng.randint(1, 3))
    return f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}, {rng.choice(STYLES)}, " + ", ".join(
        mods
    )


def long_prompt(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.sample(LONG_WORDS, n_words))


def near_duplicate(rng: random.Random, text: str, low: float, high: float) -> str:
    """A one-word edit of `text` whose word-3-gram Jaccard with it lies in [low, high)."""
    words = text.split()
    for _ in range(500):
        edited = list(words)
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            edited[i] = rng.choice(SWAP_WORDS)
        else:
            del edited[i]
        candidate = " ".join(edited)
        if low <= word_jaccard(text, candidate) < high:
            return candidate
    raise AssertionError(f"no one-word edit of {text!r} lands in [{low}, {high})")


def planted_pairs(rng: random.Random, count: int, low: float, high: float, n_words: tuple[int, int]) -> list[str]:
    """`count` (original, near duplicate) pairs, flattened."""
    rows: list[str] = []
    for _ in range(count):
        original = long_prompt(rng, rng.randint(*n_words))
        rows += [original, near_duplicate(rng, original, low, high)]
    return rows


def unique_short_prompts(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    rows: list[str] = []
    while len(rows) < count:
        text = short_prompt(rng)
        if text not in taken:
            taken.add(text)
            rows.append(text)
    return rows


def shuffled(rng: random.Random, rows: list[str]) -> list[str]:
    rows = list(rows)
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------- tiny deterministic images
def tiny_image(rng: random.Random, width: int, height: int, fmt: str) -> bytes:
    """A smooth gradient with a rectangle: compresses to a few hundred bytes, bytes stable."""
    from PIL import Image, ImageDraw

    base = [rng.randrange(256) for _ in range(3)]
    img = Image.new("RGB", (width, height))
    img.putdata(
        [((base[0] + 2 * x) % 256, (base[1] + 2 * y) % 256, base[2]) for y in range(height) for x in range(width)]
    )
    x0, y0 = rng.randrange(width // 2), rng.randrange(height // 2)
    ImageDraw.Draw(img).rectangle(
        [x0, y0, x0 + width // 3, y0 + height // 3], fill=tuple(rng.randrange(256) for _ in range(3))
    )
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=False, compress_level=9)
    else:
        img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A ustar archive with fixed owner, mode and mtime, members in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def fake_uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ---------------------------------------------------------------- the sources
def diffusiondb_prompts(rng: random.Random) -> list[str]:
    taken: set[str] = set()
    base = unique_short_prompts(rng, 200, taken)
    # 20-27 words: a middle edit gives J in [0.7, 0.8); 31-34 words: J >= 0.8
    near_low = planted_pairs(rng, 12, 0.7, 0.8, (20, 27))
    near_high = planted_pairs(rng, 12, 0.8, 1.0, (31, 34))
    exact = [rng.choice(base) for _ in range(15)]
    rows = base + near_low + near_high + exact + DROP_ROWS + REWRITE_ROWS
    return shuffled(rng, rows)


def write_diffusiondb(root: Sink, rng: random.Random) -> list[str]:
    """metadata.parquet (13 native columns and dtypes) + part-00000{1,2}.zip with images and part json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompts = diffusiondb_prompts(rng)
    samplers = {
        1: "ddim",
        2: "plms",
        3: "k_euler",
        4: "k_euler_ancestral",
        5: "k_heun",
        6: "k_dpm_2",
        7: "k_dpm_2_ancestral",
        8: "k_lms",
    }
    start = dt.datetime(2022, 8, 7, tzinfo=dt.UTC)
    rows = []
    for i, prompt in enumerate(prompts):
        size = rng.choice([(512, 512), (512, 512), (512, 768), (768, 512)])
        rows.append(
            {
                "image_name": f"{fake_uuid(rng)}.png",
                "prompt": prompt,
                "part_id": 1 + i * 2 // len(prompts),
                "seed": rng.getrandbits(32),
                "step": rng.choice([50, 50, 30, 100]),
                "cfg": float(rng.choice([7.0, 7.5, 9.0, 12.0])),
                "sampler": rng.choice(list(samplers)),
                "width": size[0],
                "height": size[1],
                "user_name": hashlib.sha256(f"user{rng.randrange(40)}".encode()).hexdigest(),
                "timestamp": start + dt.timedelta(seconds=rng.randrange(30 * 86400)),
                "image_nsfw": round(rng.random() * 0.3, 4),
                "prompt_nsfw": round(rng.random() * 0.2, 4),
            }
        )
    schema = pa.schema(
        [
            ("image_name", pa.string()),
            ("prompt", pa.string()),
            ("part_id", pa.uint16()),
            ("seed", pa.uint32()),
            ("step", pa.uint16()),
            ("cfg", pa.float32()),
            ("sampler", pa.uint8()),
            ("width", pa.uint16()),
            ("height", pa.uint16()),
            ("user_name", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("image_nsfw", pa.float32()),
            ("prompt_nsfw", pa.float32()),
        ]
    )
    table = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), table, compression="zstd")
    root.new_file("metadata.parquet", table.getvalue())
    for part in (1, 2):
        part_rows = [r for r in rows if r["part_id"] == part]
        part_json = {
            r["image_name"]: {
                "p": r["prompt"],
                "se": r["seed"],
                "c": r["cfg"],
                "st": r["step"],
                "sa": samplers[r["sampler"]],
            }
            for r in part_rows
        }
        name = f"part-{part:06d}"
        members = [(r["image_name"], tiny_image(rng, 16, 16, "png")) for r in part_rows]
        members.append((f"{name}.json", json.dumps(part_json, indent=1).encode()))
        root.new_file(f"{name}.zip", zip_bytes(members))
    return prompts


def write_chatgpt(root: Sink, rng: random.Random) -> None:
    """One prompt per line; GPT-4 style sentences, some with a leading '- '."""
    taken: set[str] = set()
    rows: list[str] = []
    while len(rows) < 180:
        text = f"{rng.choice(CHATGPT_OPENERS)} {rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}."
        if text not in taken:
            taken.add(text)
            rows.append(text)
    rows += [rng.choice(rows) for _ in range(10)]  # exact duplicates
    rows += DROP_ROWS[6:10] + REWRITE_ROWS[:2]
    lines = [("- " if rng.random() < 0.3 else "") + r for r in shuffled(rng, rows)]
    root.new_file("prompts.txt", ("\n".join(lines) + "\n").encode("utf-8"))


def write_gustavosta(root: Sink, rng: random.Random, diffusiondb: list[str]) -> None:
    """data/train.parquet + data/eval.parquet with the single column `Prompt`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    taken = set(diffusiondb)
    train = unique_short_prompts(rng, 170, taken)
    train += [rng.choice(train) for _ in range(8)]  # exact duplicates within train
    train += [near_duplicate(rng, p, 0.7, 1.0) for p in diffusiondb if len(p.split()) >= 24][:6]  # cross-source
    train += DROP_ROWS[:4] + REWRITE_ROWS[2:4]
    train += planted_pairs(rng, 3, 0.8, 1.0, (31, 34))
    evaluation = unique_short_prompts(rng, 40, taken)
    evaluation += [rng.choice(train[:170]) for _ in range(5)]  # validation rows whose text is in train
    evaluation += [rng.choice(diffusiondb) for _ in range(3)] + DROP_ROWS[4:6]
    for name, rows in (("train", train), ("eval", evaluation)):
        table = io.BytesIO()
        pq.write_table(pa.table({"Prompt": pa.array(shuffled(rng, rows), pa.string())}), table, compression="snappy")
        root.new_file(f"data/{name}.parquet", table.getvalue())


def openprompts_row(rng: random.Random, prompt: str, null_seed: bool) -> list[str]:
    """One CSV row in the krea production schema: prompt, raw_data (JSON string)."""
    seed = None if null_seed else rng.getrandbits(32)
    ts = 1_660_000_000 + rng.randrange(2_000_000)
    slug = re.sub(r"\W+", "_", prompt)[:80]
    size = rng.choice([(512, 512), (512, 512), (512, 768), (768, 512)])
    raw = {
        "image_uri": f"https://example.supabase.co/storage/v1/object/public/dev.generations/scraped/{fake_uuid(rng)}.png",
        "modifiers": [m.strip() for m in prompt.split(",")[1:] if m.strip()],
        "thumbnail_uri": "PENDING",
        "raw_discord_data": {
            "seed": seed,
            "width": size[0],
            "height": size[1],
            "content": "",
            "is_grid": 0,
            "num_step": rng.choice([50, 50, 150]),
            "cfg_scale": float(rng.choice([7.0, 7.5, 15.0])),
            "image_uri": f"https://cdn.discordapp.com/attachments/{rng.getrandbits(60)}/{rng.getrandbits(60)}/{slug}_-S_{seed}_ts-{ts}_idx-{rng.randrange(9)}.png",
            "timestamp": ts,
            "content_type": "image/png",
            "image_proxy_uri": "",
            "num_generations": 9,
        },
    }
    return [prompt, json.dumps(raw)]


def openprompts_batch(rng: random.Random, diffusiondb: list[str], batch: int) -> list[list[str]]:
    """One batch of OpenPrompts CSV rows (prompt, raw_data): fresh prompts, repeats, near-duplicates of
    DiffusionDB rows (cross-dedup work), rows the cleaner drops or rewrites."""
    taken = set(diffusiondb)
    rows = unique_short_prompts(rng, 125, taken)
    rows += [rng.choice(rows) for _ in range(5)]
    long_db = [p for p in diffusiondb if len(p.split()) >= 24]
    rows += [near_duplicate(rng, p, 0.7, 1.0) for p in rng.sample(long_db, 6)]  # cross-dedup work
    rows += [rng.choice(diffusiondb[:150]) for _ in range(4)]
    rows += rng.sample(DROP_ROWS, 6) + rng.sample(REWRITE_ROWS, 2)
    if batch == 1:
        rows += [" ", ""]  # the real CSV has empty prompts; ingest keeps them, clean drops them
    else:
        rows += unique_short_prompts(rng, 2, taken)
    return [openprompts_row(rng, prompt, null_seed=rng.random() < 0.1) for prompt in shuffled(rng, rows)]


def write_openprompts(root: Sink, batches: list[list[list[str]]]) -> None:
    """openprompts.csv: the batches one after the other, as the team's one deduplicated list (a release
    takes a batch as a row range: params.yaml releases, `rows: [a, b]`)."""
    import csv

    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["prompt", "raw_data"])
    for batch in batches:
        writer.writerows(batch)
    root.new_file("openprompts.csv", text.getvalue().encode("utf-8"))


def write_dalle3(root: Sink, rng: random.Random) -> None:
    """data-000000.tar: <name>.png + <name>.json pairs (a few records without width)."""
    captions: list[str] = []
    members: list[tuple[str, bytes]] = []
    for i in range(30):
        width, height = rng.choice([(64, 64), (64, 64), (96, 64), (64, 96)])
        png = tiny_image(rng, width, height, "png")
        name = f"{i:08d}"
        short = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}".capitalize() + "."
        if i in (7, 19):
            short = REWRITE_ROWS[i % 2]
        if i == 11:  # exact duplicate caption of record 3
            short = captions[3]
        captions.append(short)
        record = {
            "image_name": f"{name}.png",
            "md5_pil_hash": hashlib.md5(png[::2]).hexdigest(),
            "md5_file_hash": hashlib.md5(png).hexdigest(),
            "sha512_hash": hashlib.sha512(png).hexdigest(),
            "short_caption": short,
            "long_caption": f"{short} The image is a {rng.choice(STYLES)} with {', '.join(rng.sample(MODIFIERS, 3))}.",
            "resolution": f"{width}x{height}",
            "width": width,
            "height": height,
            "url": f"https://example.com/dalle3/{fake_uuid(rng)}.png",
            "source": rng.choice(["reddit", "discord", "twitter"]),
            "original_prompt": f"{short} {rng.choice(STYLES)}",
            "short_caption2": [f"{rng.choice(SUBJECTS)} in {rng.choice(STYLES)}."],
            "long_caption2": [f"A {rng.choice(STYLES)} showing {rng.choice(SUBJECTS)} in {rng.choice(PLACES)}."],
        }
        if i in (5, 17, 26):  # published records lacking width: the reader skips and counts them
            del record["width"], record["height"], record["resolution"]
        members += [(f"{name}.png", png), (f"{name}.json", json.dumps(record).encode())]
    root.new_file("data-000000.tar", tar_bytes(members))


def write_laion_buckets(root: Sink, rng: random.Random) -> None:
    """manifest.json (bucketed_shards_v1) + buckets/<bucket_id>/shard-000000.tar of jpg/txt/json."""
    # a bucketed export at base resolution 64 (divisible 4), so every target is the JPEG's real size
    buckets = {"p1024x1024": (64, 64, 64, 64), "p1216x832": (76, 52, 76, 52), "p832x1216": (52, 76, 52, 76)}
    manifest_buckets = []
    index = 0
    for bucket_id, (target_w, target_h, w, h) in buckets.items():
        members: list[tuple[str, bytes]] = []
        for _ in range(10):
            key = f"{index:09d}"
            caption = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}, {rng.choice(STYLES)}"
            if index in (4, 23):
                caption = REWRITE_ROWS[2 + index % 2]
            meta: dict = {
                "caption_variant": rng.choice(["short", "long"]),
                "caption_selector_index": rng.randrange(3),
                "caption_source_id": rng.choice(["blip2", "cogvlm", "alt_text"]),
            }
            if index % 7 == 3:  # older exports name the size w/h and leave the bucket to the path
                meta.update(w=target_w, h=target_h)
            else:
                meta.update(target_w=target_w, target_h=target_h, bucket_id=bucket_id)
            members += [
                (f"{key}.jpg", tiny_image(rng, w, h, "jpg")),
                (f"{key}.txt", (caption + "\n").encode()),
                (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
            ]
            index += 1
        shard = f"buckets/{bucket_id}/shard-000000.tar"
        root.new_file(shard, tar_bytes(members))
        manifest_buckets.append(
            {"bucket_id": bucket_id, "width": target_w, "height": target_h, "shards": [shard], "num_samples": 10}
        )
    manifest = {
        "format": "bucketed_shards_v1",
        "base_resolution": 64,
        "divisible": 4,
        "proto_buckets_1024": [
            {"width": 1024, "height": 1024},
            {"width": 1216, "height": 832},
            {"width": 832, "height": 1216},
        ],
        "buckets": manifest_buckets,
        "caption_sources": [{"id": "blip2"}, {"id": "cogvlm"}, {"id": "alt_text"}],
    }
    root.new_file("manifest.json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


def write_sources(made: Sink, seed: int) -> None:
    """Every sample source into `made` (one seeded RNG per source: adding one leaves the others)."""

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    diffusiondb = write_diffusiondb(made.sub("diffusiondb"), rng("diffusiondb"))
    write_chatgpt(made.sub("chatgpt"), rng("chatgpt"))
    write_gustavosta(made.sub("gustavosta"), rng("gustavosta"), diffusiondb)
    write_openprompts(
        made.sub("openprompts"),
        [
            openprompts_batch(rng("openprompts1"), diffusiondb, batch=1),
            openprompts_batch(rng("openprompts2"), diffusiondb, batch=2),
        ],
    )
    write_dalle3(made.sub("dalle3"), rng("dalle3"))
    write_laion_buckets(made.sub("laion_buckets"), rng("laion_buckets"))


def sample_files(seed: int = SEED) -> dict[str, bytes]:
    """rel -> bytes of the sample at `seed`, nothing written."""
    memory = InMemory()
    write_sources(memory, seed)
    return memory.files


def write_all(output: Path, seed: int = SEED, files: dict[str, bytes] | None = None) -> None:
    """Write every sample source under `output` (`files`: sample_files(seed), already made).
    Every folder and file is a new one made through MadeHere: a link, FIFO or file put at one of their names
    mid-run (in the temp folder atomic_path gives) is refused, never written through."""
    output.mkdir(parents=True, exist_ok=True)  # atomic_path's temp, or a test's folder
    made = MadeHere(output)
    try:
        if files is None:
            write_sources(made, seed)
        else:
            for rel, data in files.items():
                made.new_file(rel, data)
    finally:
        made.close()


def check_sample_bytes(output: Path) -> dict[str, bytes] | None:
    """Refuse, before anything is written, a folder without our marker holding one of the sample's names with
    other bytes (the user's, or edited since): it was judged only at the final rename, the whole sample written
    first. Returns SEED's sample when it was made for this (the first write uses it), else None."""
    present = [rel for rel in SAMPLE_FILES if os.path.lexists(output / rel)]
    if not present or holds_marker(output):
        return None
    expected = sample_files(SEED)
    for rel in present:  # check_replaceable proved each a regular file; a size apart is told without a read
        path = output / rel
        if os.lstat(path).st_size != len(expected[rel]) or path.read_bytes() != expected[rel]:
            if edited_since(path):  # ours once (its mark says so), changed since: io.check_replaceable's words
                raise DataError(
                    f"{shown(output)}: holds {rel!r}, edited since this command wrote it (so it cannot prove it its "
                    "own); refusing to replace the folder (move that file out of it, or delete it yourself)"
                )
            raise DataError(
                f"{shown(output)}: holds {rel!r}, which this command did not write (not the bytes it writes there); "
                "refusing to replace the folder (move that file out of it, or the folder away)"
            )
    return expected


def cli(output: Path = typer.Argument(Path("data/raw"), help="folder to (re)write"), seed: int = SEED) -> None:
    """Write the embedded sample sources (deterministic: same bytes on every run)."""
    # The folder carries the marker, as every folder output does (marks.mark_folder): a run at any seed
    # replaces a folder it wrote, unchanged since; one holding a file it did not write, or an edited one,
    # is refused untouched. data/raw is committed with its marker, but git keeps no extended attribute,
    # so a clone's data/raw is proved ours by its bytes: a run at another seed first writes SEED's sample
    # over it (refused, untouched, unless every file is that sample's), which marks it ours.
    # one lock for both writes: a second run took it between them and wrote its own sample in the gap
    with output_lock(output, whole_run=True):
        # a file, link or folder the sample does not write is refused now, and one of its names with other bytes
        check_replaceable(output, writes=SAMPLE_FILES)
        prepared = check_sample_bytes(output)
        if seed != SEED and os.path.lexists(output) and not holds_marker(output):
            with atomic_path(output, is_dir=True) as tmp:
                write_all(tmp, SEED, prepared)
        with atomic_path(output, is_dir=True) as tmp:
            write_all(tmp, seed, prepared if seed == SEED else None)
    print(f"sample-data: wrote {shown(output)}")
