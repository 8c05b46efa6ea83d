import numpy as np

from compress.batching import Encoded, bucketed_batches, collate


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


def test_collate_pads_to_the_longest_in_batch():
    enc = Encoded([[5, 6, 7], [8], [9, 10]], np.eye(3, dtype=np.float32), pad_id=0)
    batch = collate(enc, np.array([1, 2]))
    assert batch["input_ids"].tolist() == [[8, 0], [9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert batch["labels"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert batch["index"].tolist() == [1, 2]
