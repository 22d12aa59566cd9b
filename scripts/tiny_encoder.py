"""tiny_encoder stage: an offline sentence encoder with seeded random weights, in all-MiniLM-L6-v2's layout.

`dedup.method: embedding` uses sentence-transformers/all-MiniLM-L6-v2 (the team's dedup model). Tests
and offline runs need a model without a download, so we build one the way tiny_model builds tiny-sd2:
a BERT (BertModel, WordPiece tokenizer, lower-cased) at toy widths with seeded random weights, saved
as a sentence-transformers folder (modules.json: Transformer -> Pooling(mean) -> Normalize,
sentence_bert_config.json, 1_Pooling/config.json). It encodes nonsense semantics, but texts that share
most words get close vectors, and every code path a real checkpoint takes is taken. Same params, same
bytes (and the same dvc.lock md5) on every machine.

Knobs live in params.yaml `tiny_encoder:`; the command is `python -m scripts tiny-encoder OUT_DIR`.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import typer

from scripts.lib.io import atomic_path, shown
from scripts.lib.nesting import dumps_json
from scripts.lib.params import TinyEncoder, load_section, parse
from scripts.tiny_model import _MERGE_CORPUS, _strip_volatile_fields

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_encoder_params(params: TinyEncoder | dict | None) -> TinyEncoder:
    return params if isinstance(params, TinyEncoder) else parse(TinyEncoder, params or {}, at=("tiny_encoder",))


def build_vocab() -> list[str]:
    """WordPiece vocabulary: specials, single characters and letter pairs (word-initial and ## continuations),
    then whole words of a fixed prompt-like list. Any lower-case ASCII text splits into known pieces, and
    pairs keep unlisted words apart (with single characters only, every long text is the same bag)."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pairs = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
    words = sorted(set(_MERGE_CORPUS) - set(chars) - set(pairs))
    pieces = chars + pairs + ["##" + c for c in string.ascii_lowercase + string.digits] + ["##" + p for p in pairs]
    return SPECIAL + pieces + words


def build_encoder(params: TinyEncoder | dict | None):
    """(BertModel in eval mode with seeded random weights, BertTokenizerFast) for these params."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # no progress bars or backend notes in the stage log
    transformers_logging.disable_progress_bar()
    p = tiny_encoder_params(params)
    vocab = build_vocab()
    tokenizer = BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True, model_max_length=p.max_seq_length
    )
    if tokenizer.vocab_size != len(vocab):  # a transformers that ignores the vocab would give all [UNK]
        raise RuntimeError(f"tokenizer holds {tokenizer.vocab_size} tokens, expected {len(vocab)}")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=p.hidden,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        intermediate_size=p.hidden * 4,  # all-MiniLM-L6-v2: 384 -> 1536
        max_position_embeddings=512,
        hidden_act="gelu",
        pad_token_id=0,
    )
    torch.manual_seed(p.seed)
    model = BertModel(config).eval()  # with the pooler, as all-MiniLM-L6-v2 (mean pooling never reads it)
    with torch.no_grad():
        # Freshly drawn, the token-type row and the position rows are shared by every text as much as its
        # words are, so mean pooling makes any two prompts ~0.99 alike. A trained model has learned them
        # away; we zero the one and shrink the others: unrelated prompts then spread over cosine ~0-0.9,
        # one-word edits stay above ~0.9 (measured on the gpt4 fixture), and word order still counts.
        model.embeddings.token_type_embeddings.weight.zero_()
        model.embeddings.position_embeddings.weight.mul_(0.1)
    return model, tokenizer


def save_tiny_encoder(params: TinyEncoder | dict | None, output: Path) -> None:
    """Build and save atomically, in the sentence-transformers folder layout."""
    p = tiny_encoder_params(params)
    model, tokenizer = build_encoder(p)
    with atomic_path(output, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _write_json(
            tmp / "modules.json",
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
        )
        _write_json(tmp / "sentence_bert_config.json", {"max_seq_length": p.max_seq_length, "do_lower_case": False})
        (tmp / "1_Pooling").mkdir()
        _write_json(
            tmp / "1_Pooling" / "config.json",
            {
                "word_embedding_dimension": p.hidden,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
        )
        _strip_volatile_fields(tmp)
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp/mkstemp make private files; a model reads like any other
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def _write_json(path: Path, data) -> None:
    # dumps_json: no NaN, Infinity or lone surrogate in a config transformers then reads (params.yaml's values)
    path.write_text(dumps_json(data, path, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def cli(
    output: Path = typer.Argument(..., help="directory to write the encoder to (e.g. models/tiny-encoder)"),
) -> None:
    """Build the offline tiny sentence encoder from params.yaml `tiny_encoder`."""
    save_tiny_encoder(load_section("tiny_encoder"), output)
    print(shown(f"tiny-encoder: wrote {output}"))
