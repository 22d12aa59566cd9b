"""generate and generate-prune delete only what their own record lists (the output's manifest or journal,
the store's index), never a file because its name looks like theirs: phone pictures are named
`IMG_20240101.jpg` like `<source>_<row:08d>.jpg`, and a content-addressed folder like the store."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pandas as pd
import pytest

from scripts.generate import generate, prune_generation_store
from scripts.lib.errors import DataError
from scripts.lib.image_store import JOURNAL, OutputFolder
from scripts.lib.params import Generate

JPEG = b"\xff\xd8\xff\xe0 a user's picture \xff\xd9"
HEX = hashlib.sha256(JPEG).hexdigest()


def one_prompt() -> pd.DataFrame:
    return pd.DataFrame({"id": ["row0"], "text": ["a lighthouse at night"], "prompt": ["a lighthouse at night"]})


def settings(model: Path, **overrides) -> Generate:
    return Generate(model=str(model), steps=2, batch_size=1).replace(**overrides)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def put(root: Path, names: list[str]) -> dict[str, bytes]:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(JPEG)
    return {name: JPEG for name in names}


def user_manifest(root: Path) -> dict[str, bytes]:
    """The user's own parquet named manifest.parquet, listing their pictures with file and key columns."""
    root.mkdir(parents=True, exist_ok=True)
    names = put(root, ["IMG_20240101.jpg"])
    pd.DataFrame({"file": ["IMG_20240101.jpg"], "key": [HEX]}).to_parquet(root / "manifest.parquet")
    return {**names, "manifest.parquet": (root / "manifest.parquet").read_bytes()}


# (case, what is in the image folder before generate runs on it, file_names)
OUTPUT_CASES = [
    (
        "phone pictures where the output goes",
        lambda out: put(out, ["IMG_20240101.jpg", "PXL_20231231_123456789.jpg"]),
        "index",
    ),
    (
        "a content-addressed folder of the user's",
        lambda out: put(out, [f"{HEX[:2]}/{HEX}.jpg", f"{HEX[:2]}/.{HEX}.jpg.tmp-1"]),
        "key",
    ),
    ("a parquet of the user's named manifest.parquet", user_manifest, "index"),
]


@pytest.mark.parametrize("case, setup, names", OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_generate_refuses_an_output_folder_holding_files_it_did_not_write(tiny_model_dir, tmp_path, case, setup, names):
    out = tmp_path / "photos"
    before = setup(out)
    with pytest.raises(DataError, match="which generate did not write|not a generate manifest"):
        generate(one_prompt(), settings(tiny_model_dir, file_names=names), out, store=tmp_path / "store")
    assert {k: v for k, v in files(out).items() if k in before} == before  # every byte of theirs is still there


def test_a_picture_dropped_into_a_built_output_survives_the_next_run(tiny_model_dir, tmp_path):
    out = tmp_path / "openprompts"
    generate(one_prompt(), settings(tiny_model_dir, file_names="index"), out)
    (out / "openprompts_00000007.jpg").write_bytes(JPEG)  # named exactly as a row of ours would be
    with pytest.raises(DataError, match="holds 'openprompts_00000007.jpg', which generate did not write"):
        generate(one_prompt().iloc[:0], settings(tiny_model_dir, file_names="index"), out)
    assert (out / "openprompts_00000007.jpg").read_bytes() == JPEG and (out / "manifest.parquet").is_file()


STORE_CASES = [
    ("a key-named picture the index does not list", [f"{HEX[:2]}/{HEX}.jpg"]),
    ("a webp of the user's in an image folder", [f"ab/{'ab' * 32}.webp"]),
    ("a file of the user's in the temp folder", [".tmp/IMG_20240101.jpg", ".tmp/.IMG_0001.jpg.tmp-1-2"]),
]


@pytest.mark.parametrize("case, names", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_generate_prune_deletes_only_what_the_store_index_lists(tiny_model_dir, tmp_path, case, names):
    store = tmp_path / "store"
    generate(one_prompt(), settings(tiny_model_dir), tmp_path / "out", store=store)
    ours = [name for name in files(store) if name.endswith(".jpg") and not name.startswith(".tmp")]
    theirs = put(store, names)
    try:
        prune_generation_store(store, None, everything=True)
    except DataError as exc:
        assert "its index does not list" in str(exc)
    else:
        assert not any((store / name).exists() for name in ours)  # the run went through: ours are gone
    assert {k: v for k, v in files(store).items() if k in theirs} == theirs


# An image of the output changed since generate wrote it (retouched, replaced) is the user's: neither
# replaced, nor pruned, nor recorded in the manifest as the render of its row. Its manifest row's
# sha256 is what generate wrote.


def two_prompts() -> pd.DataFrame:
    texts = ["a lighthouse at night", "a red fox in the snow"]
    return pd.DataFrame({"id": ["row0", "row1"], "text": texts, "prompt": texts})


def _retouched(data: bytes) -> bytes:
    from PIL import Image, ImageDraw

    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    ImageDraw.Draw(image).rectangle((0, 0, 3, 3), fill=(255, 0, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def saved_by_an_editor(out: Path, name: str, other: str) -> None:  # a new file under the name
    data = _retouched((out / name).read_bytes())
    (out / name).unlink()
    (out / name).write_bytes(data)


def written_through_the_stores_link(out: Path, name: str, other: str) -> None:  # the inode the store shares
    (out / name).write_bytes(_retouched((out / name).read_bytes()))


def another_rows_render_copied_over(out: Path, name: str, other: str) -> None:
    (out / name).unlink()
    (out / name).write_bytes((out / other).read_bytes())


CHANGED_CASES = [
    ("retouched in an editor, its row still wanted", saved_by_an_editor, slice(None)),
    ("retouched through the store's hard link", written_through_the_stores_link, slice(None)),
    ("retouched, its row left out of the next run", saved_by_an_editor, slice(1, None)),
    ("another row's render copied over it", another_rows_render_copied_over, slice(None)),
]


@pytest.mark.parametrize("case, change, rows", CHANGED_CASES, ids=[c[0] for c in CHANGED_CASES])
def test_an_image_changed_since_generate_wrote_it_is_refused_untouched(tiny_model_dir, tmp_path, case, change, rows):
    out, store = tmp_path / "diffusiondb", tmp_path / "store"
    generate(two_prompts(), settings(tiny_model_dir), out, store=store)
    rendered = files(out)
    name, other = pd.read_parquet(out / "manifest.parquet")["file"].tolist()
    change(out, name, other)
    before = files(out)
    with pytest.raises(DataError, match=rf"{name}: changed since generate wrote it"):
        generate(two_prompts().iloc[rows], settings(tiny_model_dir), out, store=store)
    assert files(out) == before  # every byte of theirs is still there, the manifest as it was
    (out / name).rename(tmp_path / "mine.jpg")  # the user keeps the picture: the row's render comes back
    generate(two_prompts(), settings(tiny_model_dir), out, store=store)
    assert files(out)[name] == rendered[name] != (tmp_path / "mine.jpg").read_bytes()


# What sits in the output folder or the store under a name generate uses, but that generate did not
# write there: never read as a render, deleted or hung on.


def fifo_under_a_listed_name(out: Path, store: Path, name: str, key_file: str) -> None:
    (out / name).unlink()
    os.mkfifo(out / name)  # hashing it blocked in open(): generate hung


def users_file_named_as_the_manifests_temp(out: Path, store: Path, name: str, key_file: str) -> None:
    (out / ".manifest.parquet.tmp-old").write_bytes(b"my notes")  # pruned as generate's own before


def link_out_of_the_store(out: Path, store: Path, name: str, key_file: str) -> None:
    (out / name).unlink()  # the row is taken from the store again...
    (store / key_file).unlink()
    (store / key_file).symlink_to(out.parent / "outside.jpg")  # ...where a link now points out of it


def users_file_in_the_store_the_index_does_not_list(out: Path, store: Path, name: str, key_file: str) -> None:
    (out / name).unlink()
    index = store / "index.txt"
    index.write_text("".join(line + "\n" for line in index.read_text().splitlines() if line != key_file))
    (store / key_file).unlink()
    (store / key_file).write_bytes(JPEG)  # served as the render before


PLANTED_CASES = [
    fifo_under_a_listed_name,
    users_file_named_as_the_manifests_temp,
    link_out_of_the_store,
    users_file_in_the_store_the_index_does_not_list,
]


@pytest.mark.parametrize("plant", PLANTED_CASES, ids=lambda f: f.__name__)
def test_what_generate_did_not_write_is_never_its_render(tiny_model_dir, tmp_path, plant):
    out, store = tmp_path / "diffusiondb", tmp_path / "store"
    (tmp_path / "outside.jpg").write_bytes(JPEG)
    generate(two_prompts(), settings(tiny_model_dir), out, store=store)
    rendered = files(out)
    name = pd.read_parquet(out / "manifest.parquet")["file"].tolist()[0]
    key_file = name  # file_names: key, so the output names the store's file
    plant(out, store, name, key_file)
    refused = None
    try:
        generate(two_prompts(), settings(tiny_model_dir), out, store=store)
    except DataError as exc:  # refused in one line
        refused = str(exc)
    assert (tmp_path / "outside.jpg").read_bytes() == JPEG
    if plant is users_file_named_as_the_manifests_temp:  # the user's file is still there
        assert refused and (out / ".manifest.parquet.tmp-old").read_bytes() == b"my notes"
    elif refused is None:  # or rendered again: the row's own image, nothing else
        assert files(out)[name] == rendered[name] and not (out / name).is_symlink()
    else:
        assert "refusing" in refused


# A killed run's journal says which files are its own: names with the sha256 of what it wrote there. A
# name added to it by hand, or a file swapped in under a name it lists, is the user's. (The journal had
# names only: the first was pruned or recorded as a render, the second pruned or kept as one.)


def killed_after_start(out: Path, store: Path, model: Path, file_names: str) -> list[str]:
    """The output as a run killed right after it started leaves it: row 0 kept (journaled), the manifest gone."""
    generate(two_prompts(), settings(model, file_names=file_names), out, store=store)
    names = pd.read_parquet(out / "manifest.parquet")["file"].tolist()
    OutputFolder(out).start({names[0]})
    assert not (out / "manifest.parquet").exists() and (out / JOURNAL).is_file()
    return names


def phone_picture_listed_by_hand(out: Path, names: list[str]) -> str:
    put(out, ["IMG_20240101.jpg"])
    with open(out / JOURNAL, "a", encoding="utf-8") as journal:
        journal.write("IMG_20240101.jpg\n")
    return "IMG_20240101.jpg"


def picture_under_a_wanted_name_listed_by_hand(out: Path, names: list[str]) -> str:
    put(out, [names[1]])
    with open(out / JOURNAL, "a", encoding="utf-8") as journal:
        journal.write(f"{names[1]}\n")
    return names[1]


def picture_swapped_in_under_a_journaled_name(out: Path, names: list[str]) -> str:
    (out / names[0]).unlink()
    put(out, [names[0]])
    return names[0]


def file_named_as_a_journaled_names_temp(out: Path, names: list[str]) -> str:
    folder, _, name = names[0].rpartition("/")
    temp = f"{folder}/.{name}.tmp-123-4" if folder else f".{name}.tmp-123-4"
    put(out, [temp])
    return temp


JOURNAL_CASES = [
    (phone_picture_listed_by_hand, "index"),
    (phone_picture_listed_by_hand, "key"),
    (picture_under_a_wanted_name_listed_by_hand, "key"),
    (picture_swapped_in_under_a_journaled_name, "index"),
    (picture_swapped_in_under_a_journaled_name, "key"),
    (file_named_as_a_journaled_names_temp, "index"),
]


@pytest.mark.parametrize("plant, file_names", JOURNAL_CASES, ids=lambda c: getattr(c, "__name__", c))
def test_a_killed_runs_journal_proves_only_the_bytes_it_wrote(tiny_model_dir, tmp_path, plant, file_names):
    out, store = tmp_path / "diffusiondb", tmp_path / "store"
    names = killed_after_start(out, store, tiny_model_dir, file_names)
    theirs = plant(out, names)
    before = files(out)
    with pytest.raises(DataError, match="refusing") as refused:
        generate(two_prompts(), settings(tiny_model_dir, file_names=file_names), out, store=store)
    assert theirs.rpartition("/")[2] in str(refused.value)
    assert files(out) == before and (out / theirs).read_bytes() == JPEG  # nothing pruned, nothing recorded
