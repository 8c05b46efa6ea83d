"""The artifact's WordPiece tokenizer as ONNX graph operators, merged in front of the model.

``export onnx --with-tokenizer`` adds ``model_with_tokenizer.onnx``: ``text`` (B,) UTF-8 strings ->
``logits`` (B, L). The tokenizer runs as operators of onnxruntime-extensions (domain
``ai.onnx.contrib``), so a session must register its library (:func:`export.ort.ort_session` with
``custom_ops=True``).

Why not the extensions' own ``BertTokenizer`` operator: it takes one text (or a text pair) per call,
so a batch needs an ONNX ``Loop``, and its ids differ from Hugging Face's on 287 of the 13,240 OLID
tweets (MiniLM vocabulary): a word with an unknown tail keeps its known head (``skilled😂`` ->
``skilled [UNK]`` where Hugging Face gives one ``[UNK]``), and it keeps U+FE0F (the emoji variation
selector) that Hugging Face's accent stripping removes. So the graph does Hugging Face's steps
itself, on the whole batch at once:

1. special tokens written in a text (``[SEP]``...) become placeholder words: Hugging Face splits
   them out of the raw text before anything else;
2. Hugging Face's normalizer and pre-tokenizer (clean-up, CJK spacing, accent stripping,
   lower-casing, punctuation splitting) act on each character on its own, so together they are one
   map character -> string. It is computed at export by running the artifact's own normalizer and
   pre-tokenizer over every Unicode code point. Every non-ASCII character (and each ASCII one that
   changes otherwise, such as a capital) is split out (``StringRegexSplitWithOffsets`` on
   ``[^\x01-\x7F]``), looked up in a table (``StringMapping``) and the pieces joined back
   (``StringJoin``); ASCII controls, whitespace and punctuation then go through three small RE2
   replacements. ONNX Runtime extensions compile a pattern on every call, so one class of all
   ~900 ranges that change costs ~10 ms per batch: hence the split on one range. The extensions'
   ``StringLower`` is not used: it lower-cases Greek code points Hugging Face leaves alone (U+1F16
   -> U+1F36) and changes letters (U+1F49 -> U+1F69, omicron to omega);
3. ``WordpieceTokenizer`` on the whole batch (greedy longest match), ``StringToVector`` for the ids.
   The operator keeps the pieces it found before an unknown part of a word (``skilled [UNK]``), so a
   marker word goes before every word, and a word with an unknown piece becomes one ``[UNK]``;
4. standard ONNX operators: truncation to ``max_length - 2`` word pieces, ``[CLS] ... [SEP]``,
   right padding to the batch's longest row, ``attention_mask``.

:func:`compare_ids` checks the result against the Hugging Face tokenizer; export runs it on every
validation text. Known limit: ONNX Runtime's string operators end a string at a NUL character, so
NULs must be removed before the graph (:mod:`export.runtime` does; Hugging Face's clean-up drops them
too). The normalizers and pre-tokenizers accepted are the ones that act per character
(:data:`PER_CHARACTER_NORMALIZERS`, ``BertPreTokenizer``); anything else is refused with one line.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compress.errors import UserError

CONTRIB = "ai.onnx.contrib"
TEXT_INPUT = "text"
TEXT_MODEL_FILE = "model_with_tokenizer.onnx"
PER_CHARACTER_NORMALIZERS = ("BertNormalizer", "Lowercase", "StripAccents", "NFD", "NFKD")
MAX_CODE_POINT = 0x10FFFF
# Letters only: no step of the character map changes it, so it reaches WordPiece as one word.
PLACEHOLDER = "modcompressaddedtoken{}"
# Texts every --with-tokenizer export checks (besides --tokenizer-texts): each step of the map, words
# past max_input_chars_per_word, texts past max_length, written special tokens, empty texts.
CHECK_TEXTS = (
    "you idiot, i will KILL you!!!",
    "@USER He is very skilled😂😂 #MAGA URL",
    "♥️ Love like you've never been hurt ✔️ Vote",
    "Café déjà-vu — naïve résumé, ÀÉÎÕÜ ÇÑ İstanbul Straße ǅ ΣΑΣ σας Ὀδυσσεύς",
    "日本語のテキスト and 中文 trash 한국어 텍스트 🙂 ¿qué? «quoted» „quoted“ ‘single’",
    "ﬁ ligature ½ ① Ⅻ ㎏ ＦＵＬＬＷＩＤＴＨ ℌ Ω K Å ;·`",
    "stupid\u00adhidden\u200bjoiners\u200d and\ttabs\nnewlines\r\x0bvt\x0cff\x85nel\u2028ls\u3000ideo",
    "a\x00b\ufffdc\x01d\x7fe \U000F0000private \U0010FFFD",
    "it's a can't-won't (test) [brackets] {braces} $100 50% a+b=c ^_^ `x` ~y | <z>",
    "[CLS] written [SEP] special[MASK]tokens [UNK] [PAD]x",
    "supercalifragilisticexpialidociousandthensomemorelettersthatmakethiswordverylong" * 2,
    "word " * 300,
    "",
    "   \t  ",
)
REMOVED = "\x01"
WORD_MARK = "\x02"  # goes before every word into WordpieceTokenizer; removed from texts like REMOVED  # what the table maps a removed character to; a control character, removed with them
# Joins code points for one batched normalizer call; a chunk whose output does not split back into
# as many parts is redone one code point at a time.
_JOIN = "\u2603"
_CHUNK = 8192


class TokenizerGraphError(UserError):
    """The artifact's tokenizer cannot be expressed as graph operators (or they disagree with it)."""


@dataclass(frozen=True)
class WordPieceSpec:
    """What the graph needs from a Hugging Face WordPiece tokenizer (read from its ``tokenizer.json``).

    Attributes:
        vocab: token -> id.
        unk_token / prefix / max_chars: the WordPiece model's unknown token, continuing-subword
            prefix (``##``) and longest word (longer words are one unknown token).
        cls_id / sep_id: ids put before / after each text; pad_id: the padding id.
        added: added tokens (special tokens) -> id; Hugging Face finds them in the raw text.
        backend: the ``tokenizers.Tokenizer`` (its normalizer and pre-tokenizer make the character map).
    """

    vocab: dict[str, int]
    unk_token: str
    prefix: str
    max_chars: int
    cls_id: int
    sep_id: int
    pad_id: int
    added: dict[str, int]
    backend: Any


@dataclass(frozen=True)
class CharacterMap:
    """Hugging Face's normalizer + pre-tokenizer as graph steps, per code point.

    Attributes:
        split: RE2 class of the characters looked up one by one in ``table`` (every non-ASCII one,
            and the ASCII ones the three classes below do not cover, such as capitals).
        table: character -> its string, for the characters that change; a removed character maps
            to :data:`REMOVED` (``StringMapping`` holds no empty strings), which ``drop`` removes.
        drop / space / isolate: ASCII code point ranges replaced by "", " " and " c ".
    """

    split: str
    table: dict[str, str]
    drop: list[tuple[int, int]]
    space: list[tuple[int, int]]
    isolate: list[tuple[int, int]]


# ----------------------------------------------------------------------------------------------
# Reading the Hugging Face tokenizer


def _normalizer_types(node: Any) -> list[str]:
    if node is None:
        return []
    if node.get("type") == "Sequence":
        return [t for child in node.get("normalizers", []) for t in _normalizer_types(child)]
    return [str(node.get("type"))]


def _post_specials(post: Any, fix: str) -> tuple[str, str]:
    """(token before, token after) each text from a BERT-style post-processor."""
    if post is not None and post.get("type") == "BertProcessing":
        return str(post["cls"][0]), str(post["sep"][0])
    if post is not None and post.get("type") == "TemplateProcessing":
        single = post.get("single", [])
        shape = ["SpecialToken" if "SpecialToken" in p else "Sequence" if "Sequence" in p else "?" for p in single]
        if shape == ["SpecialToken", "Sequence", "SpecialToken"]:
            first, last = single[0]["SpecialToken"]["id"], single[2]["SpecialToken"]["id"]
            specials = post.get("special_tokens", {})
            if all(len(specials.get(t, {}).get("ids", [])) == 1 for t in (first, last)):
                return str(first), str(last)
    kind = "none" if post is None else post.get("type")
    raise TokenizerGraphError(f"the tokenizer's post-processor ({kind}) is not [CLS] text [SEP]; {fix}")


def wordpiece_spec(tokenizer: Any, fix: str = "export without --with-tokenizer") -> WordPieceSpec:
    """Read a Hugging Face fast WordPiece tokenizer (BERT family).

    Raises:
        TokenizerGraphError: one line, when the tokenizer is not WordPiece, or uses a normalizer,
            pre-tokenizer, post-processor, added token or truncation side the graph cannot reproduce.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerGraphError(f"the artifact's tokenizer ({type(tokenizer).__name__}) has no tokenizer.json; "
                                  f"the in-graph tokenizer needs a fast WordPiece tokenizer; {fix}")
    data = json.loads(backend.to_str())
    model = data.get("model") or {}
    if model.get("type") != "WordPiece":
        raise TokenizerGraphError(f"the artifact's tokenizer is {model.get('type')}, not WordPiece; the in-graph "
                                  f"tokenizer reproduces BERT-family WordPiece tokenizers only; {fix}")
    bad = [t for t in _normalizer_types(data.get("normalizer")) if t not in PER_CHARACTER_NORMALIZERS]
    if bad:
        raise TokenizerGraphError(f"the tokenizer's normalizer {bad[0]} does not act per character; {fix}")
    pre = (data.get("pre_tokenizer") or {}).get("type")
    if pre != "BertPreTokenizer":
        raise TokenizerGraphError(f"the tokenizer's pre-tokenizer is {pre}, not BertPreTokenizer; {fix}")
    if getattr(tokenizer, "truncation_side", "right") != "right":
        raise TokenizerGraphError(f"the tokenizer truncates on the {tokenizer.truncation_side}; the graph keeps the "
                                  f"first tokens (right truncation); {fix}")
    added = {}
    for token in data.get("added_tokens", []):
        if token.get("normalized") or token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            raise TokenizerGraphError(f"added token {token.get('content')!r} is matched with options (normalized, "
                                      f"lstrip, rstrip or single_word) the graph does not reproduce; {fix}")
        added[str(token["content"])] = int(token["id"])
    vocab = {str(k): int(v) for k, v in model["vocab"].items()}
    first, last = _post_specials(data.get("post_processor"), fix)
    unk = str(model.get("unk_token", "[UNK]"))
    missing = [t for t in (unk, first, last) if t not in vocab]
    if missing:
        raise TokenizerGraphError(f"token {missing[0]!r} is not in the tokenizer's vocabulary; {fix}")
    pad = tokenizer.pad_token_id
    return WordPieceSpec(vocab=vocab, unk_token=unk, prefix=str(model.get("continuing_subword_prefix", "##")),
                         max_chars=int(model.get("max_input_chars_per_word", 100)), cls_id=vocab[first],
                         sep_id=vocab[last], pad_id=int(pad) if pad is not None else 0, added=added, backend=backend)


# ----------------------------------------------------------------------------------------------
# The character map


def _all_characters() -> list[str]:
    """Every code point but NUL (string operators end there) and the surrogates (not characters)."""
    return [chr(c) for c in range(1, MAX_CODE_POINT + 1) if not 0xD800 <= c <= 0xDFFF]


def _map_each(func: Any, chars: Sequence[str]) -> list[str]:
    """``[func(c) for c in chars]`` for a per-character ``func`` on strings, in chunks joined by :data:`_JOIN`."""
    out: list[str] = []
    for start in range(0, len(chars), _CHUNK):
        chunk = chars[start:start + _CHUNK]
        parts = func(_JOIN.join(chunk)).split(_JOIN)
        out.extend(parts if len(parts) == len(chunk) else [func(c) for c in chunk])
    return out


def _word_kinds(pre_tokenizer: Any, chars: Iterable[str]) -> dict[str, str]:
    """``punct`` (its own word) or ``space`` (splits words) for the characters the pre-tokenizer treats so.

    Only characters that Python's Unicode tables do not call letters, digits, marks, private-use or
    unassigned are asked (punctuation, symbols, separators, controls, modifier letters): Unicode
    moved a character from those categories to punctuation or whitespace in no version the
    tokenizers library could use. One call over ``a c1 a c2 a ...``: a character that comes out as a
    word of its own is punctuation, one that no word covers is whitespace.
    """
    chars = sorted(c for c in set(chars) if unicodedata.category(c) not in _NEVER_SPLIT)
    text = "a" + "a".join(chars) + "a"
    kinds = {}
    covered_to = 0
    for _word, (start, end) in pre_tokenizer.pre_tokenize_str(text):
        for gap in range(covered_to, start):  # uncovered positions: whitespace
            kinds[text[gap]] = "space"
        if end - start == 1 and start % 2 == 1:
            kinds[text[start]] = "punct"
        covered_to = end
    for gap in range(covered_to, len(text)):
        kinds[text[gap]] = "space"
    return kinds


_NEVER_SPLIT = frozenset({"Lu", "Ll", "Lt", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Co", "Cs", "Cn"})


def hf_character_strings(backend: Any) -> dict[str, str]:
    """character -> what Hugging Face's normalizer + pre-tokenizer make of it, for every character they change.

    Punctuation becomes ``" c "`` (its own word), whitespace ``" "``; the rest is the normalized
    string (a removed character: ``""``). Takes a few seconds (every code point goes through the
    normalizer); cached per normalizer and pre-tokenizer.
    """
    data = json.loads(backend.to_str())
    key = json.dumps([data.get("normalizer"), data.get("pre_tokenizer")], sort_keys=True)
    if key not in _CHARACTER_STRINGS:
        chars = _all_characters()
        normalizer = backend.normalizer
        normalized = _map_each(normalizer.normalize_str, chars) if normalizer is not None else chars
        kinds = _word_kinds(backend.pre_tokenizer, {x for n in normalized for x in n})
        out = {}
        for char, norm in zip(chars, normalized, strict=True):
            if norm == char and char not in kinds:
                continue
            pieces = "".join(f" {x} " if kinds.get(x) == "punct" else " " if kinds.get(x) == "space" else x
                             for x in norm)
            if pieces != char:
                out[char] = pieces
        _CHARACTER_STRINGS[key] = out
    return _CHARACTER_STRINGS[key]


_CHARACTER_STRINGS: dict[str, dict[str, str]] = {}


def _ranges(codes: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(codes):
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def character_map(spec: WordPieceSpec) -> CharacterMap:
    """The graph steps that reproduce Hugging Face's normalizer + pre-tokenizer on every character.

    ONNX Runtime extensions compile a regular expression on every call, and one class of all the
    characters that change (about 900 ranges: combining marks, capitals...) costs ~10 ms per call.
    So only ASCII goes through regular expressions (small classes); every non-ASCII character is
    split out by the one-range class ``[^\x01-\x7F]`` and looked up in a hash table.

    Raises:
        TokenizerGraphError: the normalizer keeps control characters (no clean-up), so
            :data:`REMOVED` and :data:`WORD_MARK` could not be told from text.
    """
    target = hf_character_strings(spec.backend)
    if target.get(REMOVED) != "" or target.get(WORD_MARK) != "":
        raise TokenizerGraphError("the tokenizer's normalizer keeps control characters (no clean-up); the in-graph "
                                  "tokenizer needs BertNormalizer(clean_text=True); export without --with-tokenizer")
    drop, space, isolate, table, ascii_table = [], [], [], {}, []
    for char, want in target.items():
        if ord(char) > 0x7F:
            table[char] = want or REMOVED
        elif want == "":
            drop.append(ord(char))
        elif want == " ":
            space.append(ord(char))
        elif want == f" {char} ":
            isolate.append(ord(char))
        else:
            table[char] = want or REMOVED
            ascii_table.append(ord(char))
    split = "([^\\x{1}-\\x{7F}]" + ("|" + _class_pattern(_ranges(ascii_table))[1:-1] if ascii_table else "") + ")"
    return CharacterMap(split, table, _ranges(drop), _ranges(space), _ranges(isolate))


# ----------------------------------------------------------------------------------------------
# The graph


def _class_pattern(ranges: Sequence[tuple[int, int]]) -> str:
    """An RE2 character class, one capture group (``StringRegexSplitWithOffsets`` needs it)."""
    items = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"([{items}])"


class _Builder:
    """Nodes and constants of the tokenizer graph, every name under ``tokenizer/``."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"tokenizer/{hint}_{self.count}"

    def const(self, value: Any, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        array = np.array(value, dtype=object) if isinstance(value, (str, list)) and \
            (isinstance(value, str) or all(isinstance(v, str) for v in value)) else np.asarray(value)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, domain: str = "", hint: str = "",
           **attrs: Any) -> list[str]:
        from onnx import helper

        outs = [self.name(hint or op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), domain=domain,
                                           **attrs))
        return outs

    def one(self, op_type: str, inputs: Sequence[str], domain: str = "", **attrs: Any) -> str:
        return self.op(op_type, inputs, 1, domain, **attrs)[0]


def _replace(b: _Builder, text: str, pattern: str, rewrite: str) -> str:
    return b.one("StringRegexReplace", [text, b.const([pattern]), b.const([rewrite])], domain=CONTRIB)


def _ragged_rows(b: _Builder, offsets: str) -> tuple[str, str]:
    """(starts (B,), lengths (B,)) of the rows of a ragged tensor from its (B + 1,) row offsets."""
    starts = b.one("Slice", [offsets, b.const([0]), b.const([-1])])
    ends = b.one("Slice", [offsets, b.const([1]), b.const([np.iinfo(np.int64).max])])
    return starts, b.one("Sub", [ends, starts])


def _dense_index(b: _Builder, starts: str, lengths: str, values: str, width: str) -> tuple[str, str, str]:
    """Gather indices (B, width) into ``values`` + one fill element: row b, column j -> starts[b] + j while
    j < lengths[b], else the fill. Returns (indices, columns (1, width), count of values)."""
    count = b.one("Gather", [b.one("Shape", [values]), b.const(0)])
    cols = b.one("Unsqueeze", [b.one("Range", [b.const(0), width, b.const(1)]), b.const([0])])
    start_col = b.one("Unsqueeze", [starts, b.const([1])])
    inside = b.one("Less", [cols, b.one("Unsqueeze", [lengths, b.const([1])])])
    index = b.one("Where", [inside, b.one("Add", [start_col, cols]), count])
    return index, cols, count


def _apply_table(b: _Builder, text: str, split: str, table: dict[str, str]) -> str:
    """Replace each ``split`` character by its ``table`` string: split around them, map, join the pieces back per row."""
    pieces, _begin, _end, offsets = b.op("StringRegexSplitWithOffsets", [text, b.const([split]),
                                                                          b.const(["(?s:.)"])], 4, CONTRIB)
    mapped = b.one("StringMapping", [pieces], domain=CONTRIB,
                   map="\n".join(f"{k}\t{v}" for k, v in sorted(table.items())))
    starts, lengths = _ragged_rows(b, offsets)
    width = b.one("ReduceMax", [lengths], keepdims=0)
    index, _cols, _count = _dense_index(b, starts, lengths, mapped, width)
    dense = b.one("Gather", [b.one("Concat", [mapped, b.const([""])], axis=0), index])  # (B, pieces)
    return b.one("StringJoin", [dense, b.const([""]), b.const([1])], domain=CONTRIB)


def _words(b: _Builder, text: str, spec: WordPieceSpec, chars: CharacterMap) -> str:
    """(B,) raw texts -> (B,) normalized texts, words separated by spaces."""
    for k, token in sorted(enumerate(spec.added), key=lambda kv: -len(kv[1])):
        text = _replace(b, text, re.escape(token), " " + PLACEHOLDER.format(k) + " ")
    text = _apply_table(b, text, chars.split, chars.table)
    if chars.drop:
        text = _replace(b, text, _class_pattern(chars.drop), "")
    if chars.space:
        text = _replace(b, text, _class_pattern(chars.space), " ")
    if chars.isolate:
        text = _replace(b, text, _class_pattern(chars.isolate), " \\1 ")
    return text


def _usable(token: str) -> bool:
    """A vocabulary entry WordPiece can produce (words never hold whitespace) that the map formats can hold."""
    return bool(token) and not any(c in token for c in " \t\n")


def _word_pieces(b: _Builder, text: str, spec: WordPieceSpec) -> tuple[str, str]:
    """(B,) space-separated words -> (ids (N,), kept pieces before each row (B + 1,)): the word pieces of the
    whole batch, in order.

    ``WordpieceTokenizer`` keeps the pieces it found before an unknown part of a word and appends one
    unknown token (``skilled😂`` -> ``skilled [UNK]``); Hugging Face makes the whole word one unknown
    token. The output does not show where words end, so a marker word (:data:`WORD_MARK`, a control
    character the character map has removed from the text) goes before every word; a word with the
    unknown id among its pieces keeps only its first piece, as the unknown id.
    """
    from onnx import TensorProto

    unk = spec.vocab[spec.unk_token]
    vocab = {t: i for t, i in spec.vocab.items() if _usable(t)}
    vocab.update({PLACEHOLDER.format(k): i for k, i in enumerate(spec.added.values())})
    marked = _replace(b, text, "^| +", f" {WORD_MARK} ")
    tokens, offsets, _begins, _ends = b.op(
        "WordpieceTokenizer", [marked, b.const(np.zeros(0, dtype=np.int64))], 4, CONTRIB,
        # the operator reads id -1 as "not found", and outputs tokens, not ids: any other id will do
        vocab=json.dumps({**vocab, WORD_MARK: 0}, ensure_ascii=False), suffix_indicator=spec.prefix,
        unknown_token=spec.unk_token, max_input_chars_per_word=spec.max_chars)
    ids = b.one("StringToVector", [tokens], domain=CONTRIB, unk=str(unk),
                map="\n".join(f"{t}\t{i}" for t, i in {**vocab, WORD_MARK: -1}.items()))
    ids = b.one("Reshape", [ids, b.const([-1])])  # (P,) markers (-1) and pieces of every word
    marker = b.one("Equal", [ids, b.const(np.int64(-1))])
    word = b.one("Sub", [b.one("CumSum", [b.one("Cast", [marker], to=TensorProto.INT64), b.const(np.int64(0))]),
                         b.const(np.int64(1))])  # (P,) word of each piece (its marker's)
    # a piece with the unknown id is a failed word; the only other source of that id is a written
    # unknown token (a placeholder word of one piece), which the collapse leaves as it is
    unknown = b.one("Cast", [b.one("Equal", [ids, b.const(np.int64(unk))])], to=TensorProto.INT64)
    words = b.one("Reshape", [b.one("ReduceSum", [b.one("Cast", [marker], to=TensorProto.INT64)], keepdims=0),
                              b.const([1])])
    zeros = b.one("ConstantOfShape", [words], value=_int64_zero())
    bad_word = b.one("ScatterElements", [zeros, word, unknown], axis=0, reduction="add")  # (W,) unknowns per word
    bad = b.one("Greater", [b.one("Gather", [bad_word, word]), b.const(np.int64(0))])  # (P,)
    after_marker = b.one("Concat", [b.const(np.array([False])),
                                    b.one("Slice", [marker, b.const([0]), b.const([-1])])], axis=0)
    keep = b.one("And", [b.one("Not", [marker]), b.one("Or", [b.one("Not", [bad]), after_marker])])
    ids = b.one("Compress", [b.one("Where", [bad, b.const(np.int64(unk)), ids]), keep], axis=0)
    kept_before = b.one("Concat", [b.const(np.zeros(1, dtype=np.int64)),
                                   b.one("CumSum", [b.one("Cast", [keep], to=TensorProto.INT64), b.const(np.int64(0))])],
                        axis=0)  # (P + 1,) kept pieces before each piece
    return ids, b.one("Gather", [kept_before, offsets])


def _int64_zero() -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor("zero", TensorProto.INT64, [1], [0])


def tokenizer_graph(spec: WordPieceSpec, chars: CharacterMap, max_length: int, opset: int) -> Any:
    """The tokenizer as an ONNX model: ``text`` (B,) string -> ``input_ids``, ``attention_mask`` (B, T) int64.

    T = 2 + the longest row's word pieces in the batch, at most ``max_length``. Rows are
    ``[CLS] pieces [SEP]`` right-padded with ``pad_id``; B must be >= 1.
    """
    from onnx import TensorProto, helper

    b = _Builder()
    text = _words(b, TEXT_INPUT, spec, chars)
    ids, offsets = _word_pieces(b, text, spec)
    starts, lengths = _ragged_rows(b, offsets)  # (B,) each text's pieces in ids
    kept = b.one("Min", [lengths, b.const(np.int64(max(0, max_length - 2)))])
    width = b.one("Add", [b.one("ReduceMax", [kept], keepdims=0), b.const(np.int64(2))])
    # column j of a row holds piece j - 1: shift the rows one column right, behind [CLS]
    index, cols, count = _dense_index(b, b.one("Sub", [starts, b.const(np.int64(1))]),
                                      b.one("Add", [kept, b.const(np.int64(1))]), ids, width)
    index = b.one("Where", [b.one("Equal", [cols, b.const(np.int64(0))]), count, index])
    body = b.one("Gather", [b.one("Concat", [ids, b.const(np.array([spec.pad_id], dtype=np.int64))], axis=0), index])
    last = b.one("Unsqueeze", [b.one("Add", [kept, b.const(np.int64(1))]), b.const([1])])  # (B, 1) [SEP] column
    ids_out = b.one("Where", [b.one("Equal", [cols, b.const(np.int64(0))]), b.const(np.int64(spec.cls_id)),
                              b.one("Where", [b.one("Equal", [cols, last]), b.const(np.int64(spec.sep_id)), body])])
    mask = b.one("Cast", [b.one("LessOrEqual", [cols, last])], to=TensorProto.INT64)
    b.nodes.append(helper.make_node("Identity", [ids_out], ["input_ids"], name="tokenizer/input_ids"))
    b.nodes.append(helper.make_node("Identity", [mask], ["attention_mask"], name="tokenizer/attention_mask"))
    graph = helper.make_graph(
        b.nodes, "tokenizer", [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch_size"])],
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch_size", "sequence_length"])
         for n in ("input_ids", "attention_mask")], initializer=b.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB, 1)],
                             producer_name="modcompress")


def merge_in_front(tokenizer_model: Any, model: Any) -> Any:
    """One model: the tokenizer's ``input_ids`` / ``attention_mask`` feed the model's inputs of those names."""
    from onnx import compose, helper

    tok = type(tokenizer_model)()
    tok.CopyFrom(tokenizer_model)
    tok.ir_version = model.ir_version
    merged = compose.merge_models(tok, model, io_map=[("input_ids", "input_ids"),
                                                      ("attention_mask", "attention_mask")])
    if not any(o.domain == CONTRIB for o in merged.opset_import):
        merged.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return merged


def strip_nul(texts: Iterable[str]) -> list[str]:
    """Texts without NUL characters: string operators end a string at the first one (Hugging Face drops them)."""
    return [t.replace("\x00", "") if "\x00" in t else t for t in texts]


def graph_ids(session: Any, texts: Sequence[str], batch_size: int = 64) -> list[list[int]]:
    """Unpadded token ids of each text from a tokenizer-graph session (batches of ``batch_size``)."""
    rows: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        batch = np.array(strip_nul(texts[start:start + batch_size]), dtype=object)
        ids, mask = session.run(["input_ids", "attention_mask"], {TEXT_INPUT: batch})
        rows.extend(row[: int(m.sum())].tolist() for row, m in zip(ids, mask, strict=True))
    return rows


def compare_ids(session: Any, tokenizer: Any, texts: Sequence[str], max_length: int,
                examples: int = 20) -> tuple[dict[str, Any], list[int]]:
    """Token ids of the tokenizer graph vs the Hugging Face tokenizer, text by text.

    Returns:
        (``{"texts": N, "mismatches": M, "examples": [{"index", "text", "hf", "graph"}]}`` with at
        most ``examples`` examples, texts cut to 300 characters; the indices of every mismatch).
    """
    from compress.batching import encode

    want = encode(tokenizer, list(texts), max_length).input_ids
    got = graph_ids(session, texts)
    bad = [i for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g]
    report = {"texts": len(texts), "mismatches": len(bad),
              "examples": [{"index": i, "text": texts[i][:300], "hf": want[i], "graph": got[i]} for i in bad[:examples]]}
    return report, bad


def text_model(tokenizer: Any, model: Any, max_length: int) -> tuple[Any, Any]:
    """(the tokenizer graph, the tokenizer graph merged in front of ``model``), at ``model``'s opset.

    Raises:
        TokenizerGraphError: the tokenizer cannot be expressed (one line).
    """
    spec = wordpiece_spec(tokenizer)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    graph = tokenizer_graph(spec, character_map(spec), max_length, opset)
    return graph, merge_in_front(graph, model)


def probabilities_diff(text_session: Any, id_session: Any, tokenizer: Any, texts: Sequence[str], max_length: int,
                       batch_size: int = 32) -> float:
    """Largest |p_text - p_ids| over ``texts``: the merged model on strings vs the token-id model on the
    Hugging Face tokenizer's ids, batch by batch (both pad a batch to its longest text)."""
    from compress.batching import encode, pad_batch
    from compress.predict import sigmoid

    worst = 0.0
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        encoded = encode(tokenizer, batch, max_length)
        ids, mask = pad_batch(encoded.input_ids, encoded.pad_id)
        want = sigmoid(id_session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0])
        got = sigmoid(text_session.run(["logits"], {TEXT_INPUT: np.array(strip_nul(batch), dtype=object)})[0])
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0)
    return worst
