"""compress.data: readers, adapters, dedup, splits, stats and the `compress data stats` command."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compress import data as D
from compress.errors import DataError

# --------------------------------------------------------------------------------------------
# Fixture writers (small, exact, built in tmp_path)
# --------------------------------------------------------------------------------------------


def write_jigsaw(path: Path, rows: list[tuple[str, tuple[int, ...]]], extra_column: bool = True) -> Path:
    """Jigsaw CSV: id, comment_text, six 0/1 labels (+ an extra column pandas must ignore)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "comment_text", *D.JIGSAW_LABELS, *(["lang"] if extra_column else [])])
        for i, (text, labels) in enumerate(rows):
            w.writerow([f"id{i}", text, *labels, *(["en"] if extra_column else [])])
    return path


JIG_ROWS = [
    ("you are awful", (1, 0, 0, 0, 1, 0)),
    ("vile disgusting trash", (1, 1, 1, 0, 0, 0)),
    ("nice edit, thanks", (0, 0, 0, 0, 0, 0)),
    ('he said "hi", then left', (0, 0, 0, 0, 0, 0)),
    ("i will hurt you", (1, 0, 0, 1, 0, 0)),
    ("those people again", (1, 0, 0, 0, 0, 1)),
]


def gzip_copy(src: Path, dst: Path) -> Path:
    with src.open("rb") as fin, gzip.open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def write_olid(path: Path) -> Path:
    """OLID TSV with CRLF line ends, an unbalanced quote and literal NULLs."""
    lines = [
        "id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c",
        '1\t@USER She said "no and left\tOFF\tUNT\tNULL',
        "2\t@USER Go home you're drunk URL\tOFF\tTIN\tIND",
        "3\tthose folks are the worst\tOFF\tTIN\tGRP",
        "4\tthis network is a joke\tOFF\tTIN\tOTH",
        "5\tNULL\tNOT\tNULL\tNULL",  # a tweet whose text is literally NULL stays text
        "6\tlovely day\tNOT\tNULL\tNULL",
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def write_davidson(path: Path) -> Path:
    """Davidson labeled_data.csv: unnamed index, counts, class (0 hate, 1 offensive, 2 neither), tweet."""
    frame = pd.DataFrame({
        "count": [3, 3, 3, 3],
        "hate_speech": [2, 0, 0, 3],
        "offensive_language": [1, 3, 0, 0],
        "neither": [0, 0, 3, 0],
        "class": [0, 1, 2, 0],
        "tweet": ["RT you &amp; your kind &#128514;", "shut up &lt;3", "fish &amp; chips\nlater", "go away"],
    })
    frame.to_csv(path)  # writes the unnamed index column, like the original file
    return path


def write_cyberbullying(path: Path) -> Path:
    pd.DataFrame({
        "tweet_text": ["a", "b", "c", "d", "e", "f"],
        "cyberbullying_type": ["not_cyberbullying", "religion", "age", "gender", "ethnicity", "other_cyberbullying"],
    }).to_csv(path, index=False)
    return path


def write_ethos_multi(path: Path) -> Path:
    header = "comment;" + ";".join(D.ETHOS_MULTI_LABELS)
    rows = [
        "women are a joke;0;0;1;0;0;0;0;0",
        "you look like a sloth;0;0.833333333;0;0;0;0.5;0;0",
        "they should all go back;0.4999;0;0;0.6666667;1;0;0;0",
    ]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def write_ethos_binary(path: Path) -> Path:
    path.write_text("comment;isHate\nyou people are vermin;1.0\nnice video;0.0\nborderline take;0.5\n"
                    "meh;0.333333\n")
    return path


# --------------------------------------------------------------------------------------------
# LabelSchema
# --------------------------------------------------------------------------------------------


def test_label_schema_round_trip_and_parent_indices():
    schema = D.LabelSchema.from_names(["a", "b", "c"], {"b": "a", "c": "b"})
    assert schema.num_labels == 3
    assert schema.parent_indices() == {1: 0, 2: 1}
    assert schema.to_dict() == {"labels": ["a", "b", "c"], "hierarchy": {"b": "a", "c": "b"}}
    assert D.LabelSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert D.JIGSAW_SCHEMA.parent_indices() == {1: 0}


@pytest.mark.parametrize("names, hierarchy, needle", [
    ((), (), "at least one label"),
    (("a", "a"), (), "unique"),
    (("a", "b"), (("c", "a"),), "unknown label 'c'"),
    (("a", "b"), (("a", "a"),), "own parent"),
    (("a", "b", "c"), (("a", "b"), ("b", "c"), ("c", "a")), "cycle"),
    (("a", "b", "c"), (("a", "b"), ("a", "c")), "two parents"),
])
def test_label_schema_rejects_bad_definitions(names, hierarchy, needle):
    with pytest.raises(DataError, match=needle):
        D.LabelSchema(names, hierarchy)


def test_exclusive_groups_round_trip_and_indices():
    schema = D.LabelSchema.from_names(["a", "b", "c", "d"], {"b": "a", "c": "a", "d": "a"}, [["b", "c", "d"]])
    assert schema.exclusive == (("b", "c", "d"),)
    assert schema.exclusive_indices() == [[1, 2, 3]]
    assert schema.to_dict()["exclusive"] == [["b", "c", "d"]]
    assert D.LabelSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    # a schema without groups serialises as before (old readers, pinned fingerprints)
    assert "exclusive" not in D.JIGSAW_SCHEMA.to_dict()


def test_exclusive_groups_do_not_change_the_data_fingerprint():
    plain = D.LabelSchema(("a", "b", "c"), (("b", "a"), ("c", "a")))
    grouped = D.LabelSchema(("a", "b", "c"), (("b", "a"), ("c", "a")), (("b", "c"),))
    labels = np.array([[1, 1, 0], [0, 0, 0]])
    assert D.LabeledData(["x", "y"], labels, plain).fingerprint() == D.LabeledData(["x", "y"], labels, grouped).fingerprint()


@pytest.mark.parametrize("groups, needle", [
    ((("b",),), "two or more distinct"),
    ((("b", "b"),), "two or more distinct"),
    ((("b", "z"),), "unknown label 'z'"),
    ((("b", "c"), ("c", "d")), "'c' is in two exclusive groups"),
    ((("a", "b"),), "different parents"),
])
def test_exclusive_groups_reject_bad_definitions(groups, needle):
    with pytest.raises(DataError, match=needle):
        D.LabelSchema(("a", "b", "c", "d"), (("b", "a"), ("c", "a"), ("d", "a")), groups)


def test_adapters_declare_their_exclusive_siblings():
    assert D.OLID_SCHEMA.exclusive == (("target_individual", "target_group", "target_other"),)
    assert D.CYBERBULLYING_SCHEMA.exclusive == (D.CYBERBULLYING_TYPES,)
    assert D.JIGSAW_SCHEMA.exclusive == ()


# --------------------------------------------------------------------------------------------
# Readers and adapters
# --------------------------------------------------------------------------------------------


def test_jigsaw_is_detected_and_loaded_with_hierarchy(tmp_path):
    path = write_jigsaw(tmp_path / "train.csv", JIG_ROWS)
    assert D.detect_format(path) == "jigsaw"
    data = D.load_dataset(path)
    assert data.schema == D.JIGSAW_SCHEMA
    assert data.texts[3] == 'he said "hi", then left'
    assert data.labels.dtype == np.float32 and data.labels.shape == (6, 6)
    np.testing.assert_array_equal(data.labels, np.array([r for _, r in JIG_ROWS], dtype=np.float32))
    assert (data.duplicates_removed, data.conflicting_removed, data.source) == (0, 0, str(path))


def test_gzip_input_reads_the_same_rows(tmp_path):
    plain = write_jigsaw(tmp_path / "train.csv", JIG_ROWS)
    packed = gzip_copy(plain, tmp_path / "train.csv.gz")
    assert D.detect_format(packed) == "jigsaw"
    assert D.load_dataset(packed).fingerprint() == D.load_dataset(plain).fingerprint()


def test_olid_adapter_maps_subtasks_to_hierarchical_labels(tmp_path):
    path = gzip_copy(write_olid(tmp_path / "olid.tsv"), tmp_path / "olid.tsv.gz")
    assert D.detect_format(path) == "olid"
    data = D.load_dataset(path)
    assert data.schema.names == ("offensive", "targeted", "target_individual", "target_group", "target_other")
    assert data.schema.to_dict()["hierarchy"] == {"targeted": "offensive", "target_individual": "targeted",
                                                  "target_group": "targeted", "target_other": "targeted"}
    np.testing.assert_array_equal(data.labels, [[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0],
                                                [1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert data.texts[0] == '@USER She said "no and left'  # QUOTE_NONE: the quote is text
    assert data.texts[4] == "NULL" and not data.texts[5].endswith("\r")
    assert all(v == 0 for v in D.hierarchy_violations(data.labels, data.schema).values())


def test_olid_unknown_label_value_is_named(tmp_path):
    path = tmp_path / "olid.tsv"
    path.write_text("id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c\n1\thi\tMAYBE\tNULL\tNULL\n")
    with pytest.raises(DataError, match="subtask_a.*'MAYBE'.*OFF, NOT"):
        D.load_dataset(path, format="olid")


def test_davidson_adapter_decodes_html_and_maps_classes(tmp_path):
    path = write_davidson(tmp_path / "labeled_data.csv")
    assert D.detect_format(path) == "davidson"
    data = D.load_dataset(path)
    assert data.schema == D.LabelSchema(("offensive", "hate"), (("hate", "offensive"),))
    assert data.texts[0] == "RT you & your kind \U0001F602"
    assert data.texts[1] == "shut up <3"
    assert data.texts[2] == "fish & chips\nlater"  # quoted newline kept inside the text
    np.testing.assert_array_equal(data.labels, [[1, 1], [1, 0], [0, 0], [1, 1]])


def test_cyberbullying_adapter_one_label_per_type_under_cyberbullying(tmp_path):
    path = write_cyberbullying(tmp_path / "cyberbullying_tweets.csv")
    assert D.detect_format(path) == "cyberbullying"
    data = D.load_dataset(path)
    assert data.schema.names == ("cyberbullying", "religion", "age", "gender", "ethnicity", "other_cyberbullying")
    assert data.schema.parent_indices() == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    expected = np.zeros((6, 6), dtype=np.float32)
    expected[1:, 0] = 1
    expected[np.arange(1, 6), np.arange(1, 6)] = 1
    np.testing.assert_array_equal(data.labels, expected)


def test_cyberbullying_unknown_type_is_named(tmp_path):
    path = tmp_path / "cb.csv"
    pd.DataFrame({"tweet_text": ["a"], "cyberbullying_type": ["sports"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="cyberbullying_type.*'sports'"):
        D.load_dataset(path)


def test_ethos_multi_label_thresholds_soft_scores_at_half(tmp_path):
    path = write_ethos_multi(tmp_path / "Ethos_Dataset_Multi_Label.csv")
    assert D.detect_format(path) == "ethos"
    data = D.load_dataset(path)
    assert data.schema.names == D.ETHOS_MULTI_LABELS and data.schema.hierarchy == ()
    idx = {n: i for i, n in enumerate(D.ETHOS_MULTI_LABELS)}
    assert data.labels.sum() == 5
    assert data.labels[0, idx["gender"]] == 1
    assert data.labels[1, idx["directed_vs_generalized"]] == 1 and data.labels[1, idx["disability"]] == 1  # 0.5 -> 1
    assert data.labels[2, idx["violence"]] == 0  # 0.4999 -> 0
    assert data.labels[2, idx["race"]] == 1 and data.labels[2, idx["national_origin"]] == 1


def test_ethos_binary_file_gives_one_hate_label(tmp_path):
    data = D.load_dataset(write_ethos_binary(tmp_path / "Ethos_Dataset_Binary.csv"))
    assert data.schema.names == ("hate",)
    np.testing.assert_array_equal(data.labels[:, 0], [1, 0, 1, 0])


def test_ethos_score_out_of_range_is_an_error(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("comment;isHate\nhello;1.5\n")
    with pytest.raises(DataError, match="isHate.*'1.5'"):
        D.load_dataset(path)


def test_generic_formats_read_the_same_table(tmp_path):
    frame = pd.DataFrame({"body": ["alpha beta", "NA", "gamma", "delta, with comma"],
                          "spam": [1, 0, 0, 1], "rude": [0, 0, 1, 1], "other": ["x", "y", "z", "w"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv.gz", index=False, sep="\t")
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    prints = set()
    for name, kind in (("t.csv", "csv"), ("t.tsv.gz", "tsv"), ("t.parquet", "parquet"), ("t.jsonl", "jsonl")):
        assert D.detect_format(tmp_path / name) == kind
        data = D.load_dataset(tmp_path / name, text_column="body", label_columns="spam,rude",
                              hierarchy={"rude": "spam"})
        assert data.texts[1] == "NA"  # not read as missing
        assert data.schema.parent_indices() == {1: 0}
        np.testing.assert_array_equal(data.labels, [[1, 0], [0, 0], [0, 1], [1, 1]])
        prints.add(data.fingerprint())
    assert len(prints) == 1


def test_jigsaw_label_subset_keeps_hierarchy_where_both_ends_exist(tmp_path):
    path = write_jigsaw(tmp_path / "train.csv", JIG_ROWS)
    assert D.load_dataset(path, label_columns=["severe_toxic", "toxic"]).schema.hierarchy == (("severe_toxic", "toxic"),)
    assert D.load_dataset(path, label_columns=["insult", "toxic"]).schema.hierarchy == ()


# --------------------------------------------------------------------------------------------
# Bad inputs: one DataError line naming the problem
# --------------------------------------------------------------------------------------------


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("content, kwargs, needle", [
    ("text,lab\nhi,1\nyo,\n", {}, r"'lab' has 1 missing value.*row 2.*fill them"),
    ("text,lab\nhi,1\nyo,2\n", {}, r"'lab' has non-binary value '2'"),
    ("text,lab\nhi,1\nyo,yes\n", {}, r"'lab' has non-binary value 'yes'"),
    ("text,lab\nhi,1\n,0\n  ,1\n", {}, r"2 row\(s\) have empty text in column 'text'.*drop those rows"),
    ("text,lab\n", {}, "no data rows"),
    ("text,lab\nhi,1\n", {"label_columns": "lab,nope"}, r"no column\(s\) 'nope' \(columns are: text, lab\)"),
    ("text,lab\nhi,1\n", {"label_columns": None}, r"pass --text-column and --label-columns \(columns are: text, lab\)"),
    ("text,lab\nhi,1\n", {"format": "xml"}, "unknown format 'xml'; use one of: jigsaw, csv"),
])
def test_bad_generic_inputs_raise_one_line(tmp_path, content, kwargs, needle):
    path = _csv(tmp_path / "d.csv", content)
    args = {"text_column": "text", "label_columns": "lab", **kwargs}
    with pytest.raises(DataError, match=needle) as info:
        D.load_dataset(path, **args)
    assert "\n" not in str(info.value)


def test_jigsaw_missing_label_and_minus_one_values(tmp_path):
    path = _csv(tmp_path / "j.csv", "id,comment_text,toxic,severe_toxic,obscene,threat,insult\n1,hi,0,0,0,0,0\n")
    with pytest.raises(DataError, match="'identity_hate'"):
        D.load_dataset(path, format="jigsaw")
    path = write_jigsaw(tmp_path / "test_labels.csv", [("hi", (-1, -1, -1, -1, -1, -1))])
    with pytest.raises(DataError, match="'toxic' has non-binary value '-1'.*drop them"):
        D.load_dataset(path)


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.csv", "not found"),
    (lambda d: d, "is a directory"),
    (lambda d: _csv(d / "empty.csv", ""), "empty"),
    (lambda d: _csv(d / "notes.txt", "just some words\n"), "pass --format"),
    (lambda d: _csv(d / "t.csv", "text,lab\nhi,1\n"), "--text-column/--label-columns do not apply"),
])
def test_file_level_errors(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(DataError, match=needle):
        D.load_dataset(path, format="olid" if path.name == "t.csv" else None,
                       text_column="text" if path.name == "t.csv" else None)


# --------------------------------------------------------------------------------------------
# Dedup
# --------------------------------------------------------------------------------------------


def test_deduplicate_counts_exact_and_conflicting():
    texts = ["a", "b", "a", "c", "c", "a", "d", "d", "d"]
    labels = np.array([[1, 0], [0, 0], [1, 0], [1, 0], [0, 1], [1, 0], [1, 1], [1, 1], [0, 1]])
    out_texts, out_labels, exact, conflicting = D.deduplicate(texts, labels)
    assert out_texts == ["a", "b"]  # "c" and "d" disagree: no copy kept
    np.testing.assert_array_equal(out_labels, [[1, 0], [0, 0]])
    assert (exact, conflicting) == (2, 5)
    assert len(out_texts) + exact + conflicting == len(texts)


def test_load_dataset_dedups_before_anything_else(tmp_path):
    rows = [*JIG_ROWS, JIG_ROWS[0], JIG_ROWS[0], ("nice edit, thanks", (1, 0, 0, 0, 0, 0))]
    path = write_jigsaw(tmp_path / "dup.csv", rows)
    data = D.load_dataset(path)
    assert (len(data), data.duplicates_removed, data.conflicting_removed) == (5, 2, 2)
    assert "nice edit, thanks" not in data.texts
    raw = D.load_dataset(path, dedup=False)
    assert (len(raw), raw.duplicates_removed, raw.conflicting_removed) == (9, 0, 0)


# --------------------------------------------------------------------------------------------
# LabeledData, split, hierarchy, alignment
# --------------------------------------------------------------------------------------------


def test_fingerprint_is_pinned_and_content_sensitive():
    schema = D.LabelSchema(("a", "b"), (("b", "a"),))
    data = D.LabeledData(["x y", "z"], np.array([[1, 1], [0, 0]]), schema)
    # a constant: the fingerprint must not change across runs, machines or refactors
    assert data.fingerprint() == D.LabeledData(["x y", "z"], np.array([[1.0, 1.0], [0.0, 0.0]]), schema).fingerprint()
    assert data.fingerprint() == PINNED_FINGERPRINT
    flipped = D.LabeledData(["x y", "z"], np.array([[1, 1], [1, 0]]), schema)
    resplit = D.LabeledData(["x", "y z"], np.array([[1, 1], [0, 0]]), schema)
    assert len({data.fingerprint(), flipped.fingerprint(), resplit.fingerprint()}) == 3


PINNED_FINGERPRINT = "46cbc8af9436557b4431912ca5a5c5ce1da8e1d5889fda33ddf7065ae95de788"


def test_labeled_data_rejects_wrong_shape_and_subset_keeps_rows():
    with pytest.raises(DataError, match="expected \\(2, 2\\)"):
        D.LabeledData(["a", "b"], np.zeros((2, 3)), D.LabelSchema(("p", "q")))
    data = D.LabeledData(["a", "b", "c"], np.eye(3)[:, :2], D.LabelSchema(("p", "q")), 4, 1, "src")
    sub = data.subset([2, 0])
    assert sub.texts == ["c", "a"] and sub.labels.tolist() == [[0, 0], [1, 0]]
    assert (sub.duplicates_removed, sub.conflicting_removed, sub.source) == (4, 1, "src")


def _multilabel(n: int, seed: int = 0) -> D.LabeledData:
    """Correlated labels with prevalence 40%, 15%, 5%, and rare labels with exactly 3 and 2 positives."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 5), dtype=np.float32)
    y[:, 0] = rng.random(n) < 0.4
    y[:, 1] = (rng.random(n) < 0.35) & (y[:, 0] == 1)
    y[:, 2] = rng.random(n) < 0.05
    y[rng.choice(n, 3, replace=False), 3] = 1
    y[rng.choice(n, 2, replace=False), 4] = 1
    return D.LabeledData([f"t{i}" for i in range(n)], y, D.LabelSchema(tuple("abcde"), (("b", "a"),)))


def test_split_is_seeded_exact_size_and_disjoint():
    data = _multilabel(300)
    train, val = D.train_val_split(data, val_fraction=0.1, seed=3)
    again_train, again_val = D.train_val_split(data, val_fraction=0.1, seed=3)
    assert (len(train), len(val)) == (270, 30)
    assert val.texts == again_val.texts and train.texts == again_train.texts
    assert sorted(train.texts + val.texts, key=lambda t: int(t[1:])) == data.texts
    _, other_val = D.train_val_split(data, val_fraction=0.1, seed=4)
    assert other_val.texts != val.texts


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_split_is_stratified_per_label(seed):
    data = _multilabel(400, seed=seed)
    train, val = D.train_val_split(data, val_fraction=0.1, seed=seed)
    total = data.labels.sum(axis=0)
    in_val = val.labels.sum(axis=0)
    # every label with >= 2 positives has one on each side, even the 2- and 3-positive labels
    assert ((in_val >= 1) & (train.labels.sum(axis=0) >= 1))[total >= 2].all()
    # common labels: validation counts within one row of the exact 10% share
    assert np.all(np.abs(in_val[:3] - 0.1 * total[:3]) <= 1.0), (in_val, total)


def test_split_rejects_too_small_data():
    data = _multilabel(5)
    with pytest.raises(DataError, match="gives 0 validation rows"):
        D.train_val_split(data, val_fraction=0.05)


def test_test_split_is_held_out_first_seeded_stratified_and_disjoint():
    data = _multilabel(300)
    train, val, test = D.train_val_test_split(data, val_fraction=0.1, test_fraction=0.1, seed=3)
    assert (len(train), len(val), len(test)) == (240, 30, 30)  # both shares of all 300 rows
    assert sorted(train.texts + val.texts + test.texts, key=lambda t: int(t[1:])) == data.texts
    again = D.train_val_test_split(data, val_fraction=0.1, test_fraction=0.1, seed=3)
    assert [p.texts for p in again] == [train.texts, val.texts, test.texts]
    # the test rows are chosen before validation: another val_fraction leaves them alone
    assert D.train_val_test_split(data, val_fraction=0.2, test_fraction=0.1, seed=3)[2].texts == test.texts
    assert D.hold_out_test(data, 0.1, seed=3)[1].texts == test.texts
    total, in_test = data.labels.sum(axis=0), test.labels.sum(axis=0)
    assert np.all(np.abs(in_test[:3] - 0.1 * total[:3]) <= 1.0), (in_test, total)
    assert (in_test >= 1)[total >= 2].all()  # the rare labels too
    # test_fraction 0 is the two-way split, row for row
    train0, val0, test0 = D.train_val_test_split(data, val_fraction=0.1, test_fraction=0.0, seed=3)
    assert test0 is None and (train0.texts, val0.texts) == tuple(p.texts for p in D.train_val_split(data, 0.1, 3))


def test_data_too_small_for_a_test_split_gets_none_and_a_warning(caplog):
    data = _multilabel(5)
    caplog.set_level("WARNING", logger="compress.data")
    train, val, test = D.train_val_test_split(data, val_fraction=0.2, test_fraction=0.05, seed=0)
    assert test is None and "too few for a test split" in caplog.text
    assert (train.texts, val.texts) == tuple(p.texts for p in D.train_val_split(data, 0.2, 0))
    caplog.clear()
    _, _, test = D.train_val_test_split(data.subset([0, 1]), val_fraction=0.34, test_fraction=0.34)
    assert test is None and "too few" in caplog.text  # 1 test + 1 validation row would leave no training row
    assert len(D.train_val_test_split(data.subset([0, 1, 2]), 0.34, 0.34)[2]) == 1
    with pytest.raises(DataError, match="test_fraction must be in"):
        D.train_val_test_split(data, test_fraction=1.0)


def _jigsaw_file(path: Path, texts: list[str], toxic: list[int]) -> Path:
    rows = [[f"i{i}", t, y, 0, 0, 0, 0, 0] for i, (t, y) in enumerate(zip(texts, toxic, strict=True))]
    pd.DataFrame(rows, columns=["id", "comment_text", *D.JIGSAW_LABELS]).to_csv(path, index=False)
    return path


def test_load_splits_takes_a_test_file_and_drops_its_texts_from_the_data(tmp_path, caplog):
    from compress.config import DataConfig
    from compress.train import load_splits

    texts = [f"text {i}" for i in range(40)]
    toxic = [int(i % 3 == 0) for i in range(40)]
    data = _jigsaw_file(tmp_path / "train.csv", texts, toxic)
    test_file = _jigsaw_file(tmp_path / "test.csv", [*texts[:3], "only in test"], [*toxic[:3], 1])
    caplog.set_level("WARNING", logger="compress.train")
    train, val, test = load_splits(DataConfig(data=str(data), test_data=str(test_file)))
    assert test.texts == [*texts[:3], "only in test"] and test.schema == train.schema
    assert "dropped 3 rows" in caplog.text
    assert (len(train), len(val)) == (33, 4) and not set(test.texts) & set(train.texts + val.texts)
    # a validation file: the test split still comes out of the training data, before anything else
    val_file = _jigsaw_file(tmp_path / "val.csv", ["v1", "v2"], [1, 0])
    train, val, test = load_splits(DataConfig(data=str(data), val_data=str(val_file), test_fraction=0.25))
    assert val.texts == ["v1", "v2"] and (len(train), len(test)) == (30, 10)
    assert test.texts == D.hold_out_test(D.load_dataset(data), 0.25, 0)[1].texts
    assert load_splits(DataConfig(data=str(data), test_fraction=0.0)).test is None


def test_hierarchy_violations_counts_child_without_parent():
    schema = D.LabelSchema(("p", "c", "g"), (("c", "p"), ("g", "c")))
    labels = np.array([[1, 1, 1], [0, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0]])
    assert D.hierarchy_violations(labels, schema) == {"c->p": 2, "g->c": 1}


def test_align_to_schema_reorders_columns_and_names_mismatches():
    data = D.LabeledData(["a", "b"], np.array([[1, 0, 1], [0, 1, 0]]), D.LabelSchema(("x", "y", "z")), source="v.csv")
    target = D.LabelSchema(("z", "x", "y"), (("x", "z"),))
    aligned = D.align_to_schema(data, target)
    assert aligned.schema == target
    np.testing.assert_array_equal(aligned.labels, [[1, 1, 0], [0, 0, 1]])
    with pytest.raises(DataError, match="missing w; extra y"):
        D.align_to_schema(data, D.LabelSchema(("x", "z", "w")))


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------


def test_token_length_percentiles_whitespace_and_tokenizer(tmp_path):
    texts = [" ".join(["the"] * k) for k in range(1, 101)]
    assert D.token_length_percentiles(texts) == pytest.approx({"p50": 50.5, "p90": 90.1, "p95": 95.05, "p99": 99.01})
    from transformers import AutoTokenizer

    from tests.fixtures import write_tokenizer

    tok = AutoTokenizer.from_pretrained(str(write_tokenizer(tmp_path / "tok")))
    # one word-piece per word plus [CLS] and [SEP]
    assert D.token_length_percentiles(texts, tok, percentiles=(0, 50, 100)) == {"p0": 3.0, "p50": 52.5, "p100": 102.0}


def test_dataset_stats_and_markdown(tmp_path):
    rows = [*JIG_ROWS, ("severe but not toxic", (0, 1, 0, 0, 0, 0)), JIG_ROWS[2]]
    data = D.load_dataset(write_jigsaw(tmp_path / "s.csv", rows))
    stats = D.dataset_stats(data)
    assert stats["rows"] == 7 and stats["labels"] == list(D.JIGSAW_LABELS)
    assert stats["per_label"]["toxic"] == {"count": 4, "prevalence": pytest.approx(4 / 7)}
    assert stats["per_label"]["severe_toxic"]["count"] == 2
    assert stats["hierarchy_violations"] == {"severe_toxic->toxic": 1}
    assert (stats["duplicates_removed"], stats["conflicting_removed"], stats["rows_without_label"]) == (1, 0, 2)
    assert stats["token_lengths"]["tokenizer"] == "whitespace" and stats["token_lengths"]["max"] == 5
    json.dumps(stats)  # JSON-ready
    md = D.format_stats_markdown(stats)
    assert "| severe_toxic | toxic | 2 | 28.57% |" in md
    assert "| severe_toxic->toxic | 1 |" in md


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_data_stats_json(tmp_path, capsys):
    from modcompress.cli import compress_main as main
    from tests.fixtures import write_tokenizer

    path = gzip_copy(write_olid(tmp_path / "olid.tsv"), tmp_path / "olid.tsv.gz")
    tok = write_tokenizer(tmp_path / "tok")
    assert main(["data", "stats", str(path), "--tokenizer", str(tok), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows"] == 6
    assert stats["per_label"]["offensive"]["count"] == 4 and stats["per_label"]["target_other"]["count"] == 1
    assert stats["token_lengths"]["tokenizer"] == str(tok) and stats["token_lengths"]["unit"] == "tokens"


def test_cli_data_stats_markdown_generic(tmp_path, capsys, monkeypatch):
    from modcompress.cli import compress_main as main
    from modcompress.commands.compress import data as cmd

    monkeypatch.setattr(cmd, "resolve_tokenizer", lambda directory: (None, "whitespace"))
    path = _csv(tmp_path / "g.csv", "body,spam\nbuy now,1\nhello there friend,0\n")
    assert main(["data", "stats", str(path), "--text-column", "body", "--label-columns", "spam"]) == 0
    out = capsys.readouterr().out
    assert "| spam |  | 1 | 50.00% |" in out and "Length in words (whitespace)" in out


@pytest.mark.parametrize("argv_tail, needle", [
    (["missing.csv"], "not found"),
    (["g.csv", "--format", "nope"], "unknown format"),
])
def test_cli_bad_input_exits_2_with_one_error_line(tmp_path, capsys, argv_tail, needle):
    from modcompress.cli import compress_main as main

    _csv(tmp_path / "g.csv", "body,spam\nbuy now,1\n")
    argv = ["data", "stats", str(tmp_path / argv_tail[0]), *argv_tail[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_split_swaps_rows_so_overlapping_rare_labels_are_covered():
    # one validation row: only row 1 (a and b) gives both rare labels a positive on each side
    y = np.zeros((10, 2), dtype=np.float32)
    y[[0, 1], 0] = 1
    y[[1, 2], 1] = 1
    data = D.LabeledData([f"t{i}" for i in range(10)], y, D.LabelSchema(("a", "b")))
    for seed in range(8):
        train, val = D.train_val_split(data, val_fraction=0.1, seed=seed)
        assert val.texts == ["t1"], seed


def test_a_repeated_header_column_is_refused_not_renamed(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate,toxic\n"
                    "1,hello,0,0,0,0,0,0,1\n2,bye,1,0,0,0,0,0,1\n")
    with pytest.raises(DataError, match="column 'toxic' appears more than once in the header"):
        D.load_dataset(path)
    generic = tmp_path / "dup.tsv"
    generic.write_text("text\tlabel\tlabel\nhello\t0\t1\nbye\t1\t1\n")
    with pytest.raises(DataError, match="column 'label' appears more than once"):
        D.load_dataset(generic, text_column="text", label_columns="label")


@pytest.mark.parametrize("value", [123, 4.5, {"a": 1}, [1, 2], True])
def test_jsonl_texts_that_are_not_strings_are_one_line(tmp_path, value):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": "fine", "toxic": 0}, {"text": value, "toxic": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"column 'text' holds a non-string value .* at data row 2") as err:
        D.load_dataset(path, text_column="text", label_columns="toxic")
    assert "\n" not in str(err.value)


def test_a_label_that_is_zero_in_every_row_is_named(tmp_path, caplog):
    path = write_jigsaw(tmp_path / "zero.csv", [("hello there", (0, 0, 0, 0, 0, 0)),
                                                ("you idiot", (1, 0, 0, 0, 1, 0)),
                                                ("fine day", (0, 0, 0, 0, 0, 0))])
    with caplog.at_level("WARNING", logger="compress.data"):
        data = D.load_dataset(path)
    assert D.one_class_labels(data) == ["severe_toxic", "obscene", "threat", "identity_hate"]
    assert "label 'threat' is 0 in every row" in caplog.text and "label 'toxic'" not in caplog.text
