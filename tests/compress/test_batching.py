import numpy as np

from compress.batching import Encoded, bucketed_batches, collate, micro_batches


def test_batches_cover_every_row_once_and_are_seeded():
    lengths = np.random.default_rng(0).integers(1, 100, size=1003)
    batches = bucketed_batches(lengths, 32, shuffle=True, seed=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    assert all(len(b) <= 32 for b in batches)
    again = bucketed_batches(lengths, 32, shuffle=True, seed=1)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))
    other = bucketed_batches(lengths, 32, shuffle=True, seed=2)
    assert any((a != b).any() for a, b in zip(batches, other, strict=True) if len(a) == len(b))


def test_bucketing_cuts_padding():
    lengths = np.random.default_rng(0).integers(1, 128, size=4096)
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(4096), 4096 // 32)

    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    assert padded(bucketed_batches(lengths, 32, shuffle=True)) < 0.7 * padded(random_batches)


def test_micro_batches_cover_every_text_once_and_limit_padding():
    lengths = np.array([5, 40, 38, 12, 19, 40, 3, 21, 22, 39])
    batches = micro_batches(lengths, max_batch_size=3, min_fill=0.5)
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert all(len(b) <= 3 for b in batches)
    for b in batches:
        assert lengths[b].min() >= 0.5 * lengths[b].max()  # nobody padded to more than twice its length
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)
    assert [len(b) for b in micro_batches(lengths, 4, 0.0)] == [4, 4, 2]  # min_fill 0: fixed batches (GPU)


def test_micro_batches_stop_at_the_token_cap():
    lengths = np.array([5, 40, 38, 12, 19, 40, 3, 21, 22, 39])
    batches = micro_batches(lengths, max_batch_size=32, min_fill=0.5, max_tokens=80)
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert all(len(b) * lengths[b].max() <= 80 for b in batches)  # padded size within the cap
    assert [lengths[b].tolist() for b in batches] == [[40, 40], [39, 38], [22, 21, 19], [12], [5, 3]]
    assert [len(b) for b in micro_batches(np.array([90, 10]), 32, 0.0, max_tokens=80)] == [1, 1]  # too long: alone
    assert [len(b) for b in micro_batches(lengths, 4, 0.0, max_tokens=None)] == [4, 4, 2]  # no cap: fixed cuts


def test_collate_pads_to_the_longest_in_batch():
    enc = Encoded([[5, 6, 7], [8], [9, 10]], np.eye(3, dtype=np.float32), pad_id=0)
    batch = collate(enc, np.array([1, 2]))
    assert batch["input_ids"].tolist() == [[8, 0], [9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert batch["labels"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert batch["index"].tolist() == [1, 2]
