"""The WordPiece tokenizer as ONNX operators: token ids identical to the Hugging Face tokenizer's.

Vocabularies are built here: the tiny fixture vocabulary, or WordPiece trained (tokenizers' trainer)
on the texts under test, so emoji, accents and sub-words occur in it. Never downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer, BertTokenizerFast

from export import wordpiece_graph as wg
from export.ort import ort_session
from tests import fixtures
from tests.export.helpers import TRICKY_TEXTS

# (lower-case, strip accents, split CJK): BERT uncased, cased, uncased keeping accents, no CJK split
OPTIONS = {"uncased": (True, None, True), "cased": (False, None, True), "keep-accents": (True, False, True),
           "no-cjk": (False, True, False)}
TEXTS = [*wg.CHECK_TEXTS, *TRICKY_TEXTS, *(t.upper() for t in TRICKY_TEXTS),
         "Ünïcödé ÀÉÎÕÜ İstanbul ﬁ ½ ①", "a\x00b\ufffdc", "ǅemal ΣΑΣ ὈΔΥΣΣΕΎΣ \u1f16\u1f49"]


def _session(tokenizer, max_length: int):
    spec = wg.wordpiece_spec(tokenizer)
    graph = wg.tokenizer_graph(spec, wg.character_map(spec), max_length, 17)
    return ort_session(graph.SerializeToString(), custom_ops=True)


def _assert_same_ids(report: dict) -> None:
    lines = [f"text {e['index']}: {e['text']!r}\n  hf    {e['hf']}\n  graph {e['graph']}" for e in report["examples"]]
    assert report["mismatches"] == 0, f"{report['mismatches']} of {report['texts']} texts differ:\n" + "\n".join(lines)


def _fixture_tokenizer(directory: Path, options: tuple) -> BertTokenizerFast:
    lower, strip, chinese = options
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(fixtures.vocabulary()) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=lower, strip_accents=strip,
                      tokenize_chinese_chars=chinese).save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory) -> BertTokenizerFast:
    """Uncased WordPiece trained on the tricky texts (emoji, accents, CJK and punctuation become tokens)."""
    directory = tmp_path_factory.mktemp("wordpiece")
    fixtures.write_wordpiece_tokenizer(directory, [*TEXTS, *fixtures.synthetic_rows(300)[0]] * 3, vocab_size=600)
    return AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("max_length", [6, 32])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_ids_match_hf_on_tricky_texts_for_each_bert_option(tmp_path, name, max_length):
    tokenizer = _fixture_tokenizer(tmp_path, OPTIONS[name])
    report, _ = wg.compare_ids(_session(tokenizer, max_length), tokenizer, TEXTS, max_length)
    _assert_same_ids(report)


def test_ids_match_hf_with_a_trained_vocabulary(trained_tokenizer):
    report, bad = wg.compare_ids(_session(trained_tokenizer, 64), trained_tokenizer, TEXTS, 64)
    _assert_same_ids(report)
    assert bad == []


def test_a_word_with_an_unknown_part_is_one_unknown_token(tmp_path):
    """onnxruntime-extensions' WordPiece keeps the known head (``idiot [UNK]``); Hugging Face does not."""
    tokenizer = _fixture_tokenizer(tmp_path, OPTIONS["uncased"])
    session = _session(tokenizer, 32)
    texts = ["idiot😂", "idiot 😂", "😂idiot", "idiots!"]
    got = wg.graph_ids(session, texts)
    assert got == tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    cls, sep, unk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    idiot = tokenizer.convert_tokens_to_ids("idiot")
    assert got[0] == [cls, unk, sep] and got[1] == [cls, idiot, unk, sep]


def test_a_text_gets_the_same_ids_alone_and_in_any_batch(trained_tokenizer):
    session = _session(trained_tokenizer, 16)
    alone = [wg.graph_ids(session, [t])[0] for t in TEXTS]
    assert wg.graph_ids(session, TEXTS, batch_size=len(TEXTS)) == alone
    assert wg.graph_ids(session, TEXTS[::-1], batch_size=5) == alone[::-1]
    ids, mask = session.run(None, {wg.TEXT_INPUT: np.array(["", "   ", "\x01"], dtype=object)})
    cls, sep = trained_tokenizer.cls_token_id, trained_tokenizer.sep_token_id
    assert ids.tolist() == [[cls, sep]] * 3 and mask.tolist() == [[1, 1]] * 3
    ids, mask = session.run(None, {wg.TEXT_INPUT: np.array(["hello", "word " * 40], dtype=object)})
    assert ids.shape == mask.shape == (2, 16) and mask[0].sum() < 16 == mask[1].sum()  # padded to the longest
    assert (ids[0][mask[0] == 0] == trained_tokenizer.pad_token_id).all()


def test_tokenizers_the_graph_cannot_reproduce_are_refused_in_one_line(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from compress.errors import UserError

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(UserError, match="is WordLevel, not WordPiece"):
        wg.wordpiece_spec(PreTrainedTokenizerFast(tokenizer_object=words))
    bert = _fixture_tokenizer(tmp_path, OPTIONS["uncased"])
    composed = Tokenizer.from_str(bert.backend_tokenizer.to_str())
    composed.normalizer = normalizers.NFC()
    with pytest.raises(UserError, match="normalizer NFC does not act per character"):
        wg.wordpiece_spec(PreTrainedTokenizerFast(tokenizer_object=composed))
    composed = Tokenizer.from_str(bert.backend_tokenizer.to_str())
    composed.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(UserError, match="pre-tokenizer is Whitespace, not BertPreTokenizer"):
        wg.wordpiece_spec(PreTrainedTokenizerFast(tokenizer_object=composed))


@pytest.fixture(scope="module")
def olid(tmp_path_factory):
    if fixtures.olid_path() is None:
        pytest.skip("the shared OLID file (shared/data/olid) is not on this machine")
    return fixtures.olid_texts()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["uncased", "cased"])
def test_ids_match_hf_on_every_olid_tweet(tmp_path, olid, name):
    """13,240 real tweets (emoji, @USER, hashtags, accents, HTML entities), WordPiece trained on them."""
    lower, strip, chinese = OPTIONS[name]
    fixtures.write_wordpiece_tokenizer(tmp_path, olid, vocab_size=3000, lower=lower, strip_accents=strip,
                                       chinese=chinese)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    report, _ = wg.compare_ids(_session(tokenizer, 128), tokenizer, olid, 128)
    assert report["texts"] == len(olid) == 13240
    _assert_same_ids(report)
