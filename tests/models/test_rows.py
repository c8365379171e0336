import numpy as np
import pytest

from tasks.models.rows import Rows, fit, streams, training_rows


@pytest.fixture
def on_disk(tmp_path):
    """Features and 3 augmented copies as .npy files opened memory-mapped, each value naming its (row, copy)."""
    n, d = 20, 4
    X = np.repeat(np.arange(n, dtype=np.float32)[:, None], d, axis=1)
    X_aug = X[:, None, :] + (np.arange(1, 4, dtype=np.float32)[None, :, None] / 10)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "X_aug.npy", X_aug)
    return np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "X_aug.npy", mmap_mode="r")


def test_training_rows_index_originals_then_their_copies(on_disk):
    X, X_aug = on_disk
    y, groups = np.arange(20) % 2, np.array([f"g{i // 2}" for i in range(20)])
    train = np.array([7, 2, 11])
    rows, yt, gt = training_rows(X, y, groups, train, X_aug)
    assert len(rows) == 12 and rows.shape == (12, 4)
    got = np.asarray(rows)[:, 0]
    assert np.allclose(got[:3], [7, 2, 11])
    assert np.allclose(got[3:], [7.1, 7.2, 7.3, 2.1, 2.2, 2.3, 11.1, 11.2, 11.3])
    assert (yt == y[np.floor(got).astype(int)]).all() and (gt == groups[np.floor(got).astype(int)]).all()


def test_take_keeps_the_asked_order_and_subset_stays_unread(on_disk):
    X, X_aug = on_disk
    rows, _, _ = training_rows(X, np.zeros(20, int), np.zeros(20), np.arange(20), X_aug)
    idx = np.array([50, 3, 21, 3])
    assert np.allclose(rows.take(idx)[:, 0], [rows.row[i] + (rows.copy[i] + 1) / 10 for i in idx])
    sub = rows.subset(idx)
    assert isinstance(sub, Rows) and len(sub) == 4
    assert np.array_equal(np.asarray(sub), rows.take(idx))
    assert np.array_equal(np.concatenate(list(rows.batches(7))), np.asarray(rows))


def test_copies_without_their_array_are_refused(on_disk):
    X, _ = on_disk
    with pytest.raises(ValueError, match="augmented copies"):
        Rows(X, [0, 1], [0, -1])


def test_scikit_learn_models_get_an_array(on_disk):
    X, _ = on_disk
    seen = []

    class Spy:
        def fit(self, X, y):
            seen.append(type(X))
            return self

    assert not streams(Spy())
    fit(Spy(), Rows(X, np.arange(5)), np.zeros(5), np.zeros(5))
    assert seen == [np.ndarray]
