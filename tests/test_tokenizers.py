"""Tokenizers: cleaning, EOS/padding/truncation, and finding the tokenizer inside or beside a file."""
from __future__ import annotations

import os
import warnings

import pytest
import torch
from safetensors.torch import save_file

from selfforcing_core.text_encoder import UMT5Config
from selfforcing_core.text_encoder_loading import load_text_encoder
from selfforcing_core.tokenizers import (
    ByteTokenizer,
    HFTokenizer,
    PromptWarning,
    SentencePieceTokenizer,
    clean_prompt,
    find_tokenizer,
    load_tokenizer,
)
from umt5_helpers import comfy_names, random_encoder, train_spiece

SPM_VOCAB = 48
PROMPTS = ["a cat walks along the river", "the  dog\n runs   through tall grass", ""]


@pytest.fixture(scope="module")
def spiece() -> bytes:
    return train_spiece(SPM_VOCAB)


def _hf_json_from_spiece(spiece: bytes, path: str) -> str:
    """The same unigram vocabulary as a HF `tokenizer.json` with T5's `$A </s>` template."""
    import sentencepiece
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    processor = sentencepiece.SentencePieceProcessor(model_proto=spiece)
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=processor.unk_id()))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(path)
    return path


def test_clean_prompt_collapses_whitespace_and_unescapes_html_twice():
    assert clean_prompt("  a\tcat\n\n walks  ") == "a cat walks"
    assert clean_prompt("Tom &amp;amp; Jerry &lt;3") == "Tom & Jerry <3"
    assert clean_prompt("a\u00a0b\u2003c") == "a b c"
    assert clean_prompt("\u201cquoted\u201d it\u2019s") == '"quoted" it\'s'
    assert clean_prompt("\uff21\uff22\u3000\ufb01ne") == "AB fine"


def test_byte_tokenizer_ids_mask_and_eos():
    batch = ByteTokenizer(text_len=8)(["ab", "é"])
    assert batch.ids.tolist() == [[100, 101, 1, 0, 0, 0, 0, 0], [0xC3 + 3, 0xA9 + 3, 1, 0, 0, 0, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]] * 2
    assert batch.ids.dtype == torch.long and ByteTokenizer.VOCAB_SIZE == 259


def test_byte_tokenizer_truncates_keeping_eos_last():
    tokenizer = ByteTokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = tokenizer(["x" * 511])
    assert exact.mask.sum() == 512 and exact.ids[0, -1] == ByteTokenizer.EOS_ID
    with pytest.warns(PromptWarning, match=r"601 tokens .* reads 512: the last 89 tokens are dropped"):
        cut = tokenizer(["y" * 600])
    assert cut.mask.sum() == 512
    assert cut.ids[0, -1] == ByteTokenizer.EOS_ID and (cut.ids[0, :-1] == ord("y") + 3).all()


@pytest.mark.parametrize("prompt", ["", "  \n\t "])
def test_empty_prompt_warns_and_is_eos_only(prompt):
    with pytest.warns(PromptWarning, match="empty prompt"):
        batch = ByteTokenizer(text_len=4)([prompt])
    assert batch.ids.tolist() == [[1, 0, 0, 0]] and batch.mask.tolist() == [[1, 0, 0, 0]]


def test_sentencepiece_tokenizer_appends_eos_and_pads(spiece):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=spiece)
    tokenizer = SentencePieceTokenizer(spiece, text_len=24)
    with pytest.warns(PromptWarning, match="empty prompt"):
        batch = tokenizer(PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        expected = processor.encode(clean_prompt(prompt)) + [1]
        assert batch.ids[row, : len(expected)].tolist() == expected
        assert batch.mask[row].sum() == len(expected)
        assert (batch.ids[row, len(expected):] == 0).all()


def test_sentencepiece_truncation_warns_and_keeps_eos(spiece):
    tokenizer = SentencePieceTokenizer(spiece, text_len=512)
    with pytest.warns(PromptWarning, match="reads 512"):
        batch = tokenizer(["a cat walks along the river bank " * 200])
    assert batch.mask.sum() == 512 and batch.ids[0, -1] == 1


def test_hf_tokenizer_json_matches_sentencepiece(spiece, tmp_path):
    hf = HFTokenizer(_hf_json_from_spiece(spiece, str(tmp_path / "tokenizer.json")), text_len=24)
    with pytest.warns(PromptWarning):
        ours, theirs = hf(PROMPTS), SentencePieceTokenizer(spiece, text_len=24)(PROMPTS)
    assert torch.equal(ours.ids, theirs.ids) and torch.equal(ours.mask, theirs.mask)
    assert hf.pad_id == 0 and hf.vocab_size == SPM_VOCAB


def test_hf_tokenizer_truncation_counts_dropped_tokens(spiece, tmp_path):
    hf = HFTokenizer(_hf_json_from_spiece(spiece, str(tmp_path / "tokenizer.json")), text_len=6)
    full = int(SentencePieceTokenizer(spiece)(["a cat walks along the river bank"]).mask.sum())
    with pytest.warns(PromptWarning, match=rf"{full} tokens .* reads 6: the last {full - 6} tokens"):
        batch = hf(["a cat walks along the river bank"])
    assert batch.mask.sum() == 6 and batch.ids[0, -1] == 1


def _spm_sized_encoder():
    return random_encoder(UMT5Config(vocab=SPM_VOCAB, dim=16, dim_attn=16, dim_ffn=24, num_heads=2, num_layers=2))


def test_sentencepiece_inside_comfy_safetensors_is_used(spiece, tmp_path):
    encoder = _spm_sized_encoder()
    tensors = comfy_names(encoder.state_dict(), 2)
    tensors["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    path = str(tmp_path / "umt5_xxl_fp16.safetensors")
    save_file({key: value.contiguous() for key, value in tensors.items()}, path)
    loaded = load_text_encoder(path, dtype=torch.float32)
    assert isinstance(loaded.tokenizer, SentencePieceTokenizer)
    expected = SentencePieceTokenizer(spiece)(["a cat walks"])
    out = loaded(["a cat walks"])
    assert torch.equal(out.mask, expected.mask)
    torch.testing.assert_close(out.embeddings, encoder(expected.ids, expected.mask))


def test_sentencepiece_next_to_original_pth_is_found(spiece, tmp_path):
    encoder = _spm_sized_encoder()
    path = str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(encoder.state_dict(), path)
    (tmp_path / "spiece.model").write_bytes(spiece)
    loaded = load_text_encoder(path, dtype=torch.float32)
    assert isinstance(loaded.tokenizer, SentencePieceTokenizer)
    assert loaded(["a cat"]).lengths.tolist() == [len(SentencePieceTokenizer(spiece).processor.encode("a cat")) + 1]


def test_official_release_folder_layout_is_found_and_prefers_tokenizer_json(spiece, tmp_path):
    folder = tmp_path / "google" / "umt5-xxl"
    folder.mkdir(parents=True)
    (folder / "spiece.model").write_bytes(spiece)
    weights = str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    assert isinstance(find_tokenizer(weights, model_vocab=SPM_VOCAB), SentencePieceTokenizer)
    _hf_json_from_spiece(spiece, str(folder / "tokenizer.json"))
    assert isinstance(find_tokenizer(weights, model_vocab=SPM_VOCAB), HFTokenizer)


def test_embedded_sentencepiece_wins_over_files_beside(spiece, tmp_path):
    _hf_json_from_spiece(spiece, str(tmp_path / "tokenizer.json"))
    found = find_tokenizer(str(tmp_path / "umt5.safetensors"), embedded_spiece=spiece, model_vocab=SPM_VOCAB)
    assert isinstance(found, SentencePieceTokenizer)


def test_no_tokenizer_found_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        find_tokenizer(str(tmp_path / "umt5.safetensors"), model_vocab=256384)
    assert isinstance(find_tokenizer(str(tmp_path / "tiny.safetensors"), model_vocab=259), ByteTokenizer)


def test_tokenizer_larger_than_the_model_vocab_is_refused(spiece, tmp_path):
    with pytest.raises(ValueError, match="do not belong together"):
        find_tokenizer(str(tmp_path / "x.pth"), embedded_spiece=spiece, model_vocab=SPM_VOCAB - 1)


def test_load_tokenizer_by_path_folder_and_name(spiece, tmp_path):
    (tmp_path / "spiece.model").write_bytes(spiece)
    assert isinstance(load_tokenizer(str(tmp_path)), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(str(tmp_path / "spiece.model")), SentencePieceTokenizer)
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(os.path.join(str(tmp_path), "missing.json"))


def test_tokenizer_json_without_end_token_is_refused(tmp_path):
    from tokenizers import Tokenizer, models

    path = str(tmp_path / "tokenizer.json")
    Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).save(path)
    with pytest.raises(ValueError, match="no end-of-text token"):
        HFTokenizer(path)
