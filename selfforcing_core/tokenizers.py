"""Prompt tokenizers for the text encoder: sentencepiece, HF `tokenizer.json`, and raw bytes.

All of them clean the prompt as the reference does, append EOS, and pad or truncate to
`text_len` (512 for Wan), giving ids and a mask like the reference's HuggingFace call with
`add_special_tokens=True, padding="max_length", truncation=True`. Over-long prompts are cut
(keeping EOS last) with a `PromptWarning`; an empty prompt is valid and encodes to EOS alone.
"""
from __future__ import annotations

import html
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

try:  # optional: repairs mojibake exactly as the reference's cleaning does
    import ftfy
except ImportError:
    ftfy = None

DEFAULT_TEXT_LEN = 512
# Names looked for beside a text encoder file, best first; the `google/umt5-xxl` folder is the
# layout of the official Wan2.1 release. tokenizer.json first: it is what the reference loads.
NEARBY_TOKENIZER_FILES = (
    "tokenizer.json",
    "spiece.model",
    os.path.join("google", "umt5-xxl", "tokenizer.json"),
    os.path.join("google", "umt5-xxl", "spiece.model"),
)


class PromptWarning(UserWarning):
    """A prompt was used with a change the user should know of (truncated, or empty)."""


@dataclass
class TokenBatch:
    """Token ids [B, text_len] (int64) and the mask [B, text_len] (1 = real token, EOS included)."""

    ids: torch.Tensor
    mask: torch.Tensor


_TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufeff]")
_SINGLE_QUOTES = re.compile(r"[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile(r"[\u201c-\u201f]")
_COMPAT_CHARS = re.compile(r"[\u0132\u0133\u0149\u01c4-\u01cc\u01f1-\u01f3\ufb00-\ufb06\u3000\uff01-\uff5e]")
# Unicode White_Space; Python's \s would also take the separators \x1c-\x1f (removed above anyway).
_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")


def _fix_text(text: str) -> str:
    """ftfy's `fix_text` when installed; otherwise its deterministic parts (no mojibake repair).

    Without ftfy: terminal escapes and control characters removed, NFC, curly quotes made
    straight, Latin ligatures and full-width ASCII/space expanded to plain characters.
    """
    if ftfy is not None:
        return ftfy.fix_text(text)
    text = _CONTROL.sub("", _TERMINAL_ESCAPE.sub("", text))
    text = unicodedata.normalize("NFC", text)
    text = _DOUBLE_QUOTES.sub('"', _SINGLE_QUOTES.sub("'", text))
    return _COMPAT_CHARS.sub(lambda match: unicodedata.normalize("NFKC", match.group()), text)


def clean_prompt(text: str) -> str:
    """The reference's `clean='whitespace'`: fix text, unescape HTML twice, collapse whitespace."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


class Tokenizer:
    """Common part: cleaning, EOS, truncation with a warning, padding, the mask."""

    text_len: int
    vocab_size: int
    pad_id: int

    def encode_text(self, text: str) -> tuple[list[int], int]:
        """Ids of a cleaned prompt with EOS, cut to `text_len`, and the uncut length."""
        raise NotImplementedError

    def __call__(self, prompts: str | Sequence[str]) -> TokenBatch:
        """Prompts -> padded ids and mask [B, text_len]; warns on empty or over-long prompts."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = torch.full((len(prompts), self.text_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), self.text_len), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            cleaned = clean_prompt(prompt)
            if not cleaned:
                warnings.warn(
                    "empty prompt: it encodes to the end-of-text token alone (as an empty negative "
                    "prompt does)", PromptWarning, stacklevel=2,
                )
            tokens, full_length = self.encode_text(cleaned)
            if full_length > self.text_len:
                warnings.warn(
                    f"prompt is {full_length} tokens long (end-of-text included) but the text encoder "
                    f"reads {self.text_len}: the last {full_length - self.text_len} tokens are dropped "
                    f"(prompt starts {cleaned[:60]!r})", PromptWarning, stacklevel=2,
                )
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return TokenBatch(ids, mask)

    def _with_eos(self, content: list[int], eos_id: int) -> tuple[list[int], int]:
        """`content` + EOS cut to text_len as HF truncation does: the content is cut, EOS stays last."""
        return content[: self.text_len - 1] + [eos_id], len(content) + 1


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model (umT5's `spiece.model`, or the bytes ComfyUI stores as `spiece_model`)."""

    def __init__(self, model: bytes | str | os.PathLike, text_len: int = DEFAULT_TEXT_LEN):
        import sentencepiece

        if isinstance(model, (bytes, bytearray)):
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=bytes(model))
        else:
            self.processor = sentencepiece.SentencePieceProcessor(model_file=os.fspath(model))
        self.eos_id = self.processor.eos_id()
        if self.eos_id < 0:
            raise ValueError("this sentencepiece model defines no end-of-text token; T5 needs one")
        self.pad_id = max(self.processor.pad_id(), 0)
        self.vocab_size = self.processor.get_piece_size()
        self.text_len = text_len

    def encode_text(self, text: str) -> tuple[list[int], int]:
        return self._with_eos(self.processor.encode(text, out_type=int), self.eos_id)


class HFTokenizer(Tokenizer):
    """A HuggingFace `tokenizer.json` (the fast tokenizer the reference's AutoTokenizer loads).

    The file's own post-processor adds the special tokens and its own truncation cuts, so the ids
    equal the reference's; pad is the `<pad>` token (0 if the file has none).
    """

    def __init__(self, path: str | os.PathLike, text_len: int = DEFAULT_TEXT_LEN):
        from tokenizers import Tokenizer as RustTokenizer

        self.tokenizer = RustTokenizer.from_file(os.fspath(path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=text_len)
        pad = self.tokenizer.token_to_id("<pad>")
        self.pad_id = 0 if pad is None else pad
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.text_len = text_len
        if not self.tokenizer.encode("", add_special_tokens=True).ids:
            raise ValueError(f"{path}: this tokenizer adds no end-of-text token, which T5 needs")

    def encode_text(self, text: str) -> tuple[list[int], int]:
        encoding = self.tokenizer.encode(text, add_special_tokens=True)
        if not encoding.overflowing:
            return list(encoding.ids), len(encoding.ids)
        processor = self.tokenizer.post_processor
        added = 0 if processor is None else processor.num_special_tokens_to_add(False)
        return list(encoding.ids), self._content_length(text) + added

    def _content_length(self, text: str) -> int:
        """Token count of `text` without special tokens and without truncation."""
        self.tokenizer.no_truncation()
        try:
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
        finally:
            self.tokenizer.enable_truncation(max_length=self.text_len)


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes for the project's own small models, ByT5's id layout.

    Ids: 0 = pad, 1 = EOS, 2 = unknown (reserved, never produced), byte b -> b + 3; vocab 259.
    """

    PAD_ID = 0
    EOS_ID = 1
    UNK_ID = 2
    BYTE_OFFSET = 3
    VOCAB_SIZE = 256 + BYTE_OFFSET

    def __init__(self, text_len: int = DEFAULT_TEXT_LEN):
        self.text_len = text_len
        self.pad_id = self.PAD_ID
        self.vocab_size = self.VOCAB_SIZE

    def encode_text(self, text: str) -> tuple[list[int], int]:
        return self._with_eos([b + self.BYTE_OFFSET for b in text.encode("utf-8")], self.EOS_ID)


def load_tokenizer(source: str | os.PathLike, text_len: int = DEFAULT_TEXT_LEN) -> Tokenizer:
    """A tokenizer from a `tokenizer.json`, a sentencepiece `.model`, a folder holding one, or "byte"."""
    if os.fspath(source) == "byte":
        return ByteTokenizer(text_len)
    path = os.fspath(source)
    if os.path.isdir(path):
        for name in ("tokenizer.json", "spiece.model", "tokenizer.model"):
            if os.path.isfile(os.path.join(path, name)):
                return load_tokenizer(os.path.join(path, name), text_len)
        raise FileNotFoundError(f"no tokenizer.json or spiece.model in folder {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    if path.endswith(".json"):
        return HFTokenizer(path, text_len)
    return SentencePieceTokenizer(path, text_len)


def find_tokenizer(
    weights_path: str | os.PathLike,
    embedded_spiece: bytes | None = None,
    model_vocab: int | None = None,
    text_len: int = DEFAULT_TEXT_LEN,
) -> Tokenizer:
    """The tokenizer that belongs to a text encoder file.

    Looks, in order, at the sentencepiece model stored inside the file, then beside it
    (`NEARBY_TOKENIZER_FILES`); a model with the byte vocabulary (259) falls back to bytes.
    The tokenizer's vocabulary must fit the model's embedding table.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(weights_path)))
    candidates = [os.path.join(folder, name) for name in NEARBY_TOKENIZER_FILES]
    nearby = next((path for path in candidates if os.path.isfile(path)), None)
    if embedded_spiece is not None:
        tokenizer: Tokenizer = SentencePieceTokenizer(embedded_spiece, text_len)
    elif nearby is not None:
        tokenizer = load_tokenizer(nearby, text_len)
    elif model_vocab == ByteTokenizer.VOCAB_SIZE:
        tokenizer = ByteTokenizer(text_len)
    else:
        raise FileNotFoundError(
            f"no tokenizer for {weights_path}: the file holds no `spiece_model` and none of "
            f"{', '.join(candidates)} exists; pass the tokenizer (tokenizer.json or spiece.model) explicitly"
        )
    if model_vocab is not None and tokenizer.vocab_size > model_vocab:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the text encoder only {model_vocab}: "
            "they do not belong together"
        )
    return tokenizer
