"""bench inputs: fixed-length synthetic texts, texts read from files, the built-in samples."""

from __future__ import annotations

import pytest

from bench import inputs
from compress.errors import ConfigError, DataError
from tests import fixtures


@pytest.mark.parametrize("length", [3, 8, 16, 64])
def test_fixed_length_text_tokenizes_to_exactly_that_length(tmp_path, length):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(fixtures.write_tokenizer(tmp_path / "tok")))
    text = inputs.fixed_length_text(length, tokenizer)
    assert len(tokenizer(text)["input_ids"]) == length
    assert len(inputs.fixed_length_text(length).split()) == length  # no tokenizer: words


def test_fixed_length_text_refuses_lengths_without_room_for_text(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(fixtures.write_tokenizer(tmp_path / "tok")))
    with pytest.raises(ConfigError, match="special tokens"):
        inputs.fixed_length_text(2, tokenizer)  # [CLS] [SEP] only


def test_texts_from_a_file_a_seeded_sample_or_the_samples(tmp_path, jigsaw_csv):
    assert inputs.texts_from(None) == inputs.DEFAULT_TEXTS
    every = inputs.read_texts(jigsaw_csv)
    sample = inputs.texts_from(str(jigsaw_csv), limit=50)
    assert len(sample) == 50 and set(sample) <= set(every)
    assert inputs.texts_from(str(jigsaw_csv), limit=50) == sample  # seeded
    lines = tmp_path / "texts.txt"
    lines.write_text("first comment\n\n  second one  \n")
    assert inputs.read_texts(lines) == ["first comment", "second one"]
    with pytest.raises(DataError, match="texts file not found"):
        inputs.read_texts(tmp_path / "missing.txt")
