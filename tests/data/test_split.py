import numpy as np
import pandas as pd
import pytest

from tasks.data.split import check_no_leak, make_splits, subset_rows
from tasks.errors import DatasetError


def _manifest(n_classes=4, per_class=20, folds=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_classes):
        for i in range(per_class):
            src = f"{c}{i // 2}"  # two takes per source
            rows.append(
                {
                    "class_id": c,
                    "label": f"c{c}",
                    "group": src,
                    "fold": 1 + (i // 2) % folds,
                    "recording_id": f"{c}-{i}",
                }
            )
    return pd.DataFrame(rows).sample(frac=1, random_state=int(rng.integers(1000))).reset_index(drop=True)


@pytest.mark.parametrize("scheme", ["official", "group_kfold", "book_holdout"])
@pytest.mark.parametrize("seed", [0, 7])
def test_no_source_on_both_sides(scheme, seed):
    m = _manifest(seed=seed)
    splits = make_splits(m, scheme=scheme, k=5, seed=seed)
    groups = m["group"].to_numpy()
    for tr, te in splits:
        assert set(groups[tr]).isdisjoint(groups[te])
        assert len(tr) + len(te) == len(m)


def test_kfold_covers_every_clip_once():
    m = _manifest()
    for scheme in ("official", "group_kfold"):
        tests = np.concatenate([te for _, te in make_splits(m, scheme=scheme, seed=1)])
        assert sorted(tests.tolist()) == list(range(len(m)))


def test_book_holdout_holds_out_about_8_per_class():
    m = _manifest(per_class=40)
    ((tr, te),) = make_splits(m, scheme="book_holdout", seed=3)
    counts = m.iloc[te]["class_id"].value_counts()
    assert counts.min() >= 8 and counts.max() <= 9  # whole sources of two takes: 8
    again = make_splits(m, scheme="book_holdout", seed=3)[0][1]
    assert np.array_equal(te, again)


def test_official_needs_folds_and_auto_falls_back_to_group_kfold():
    m = _manifest()
    m["fold"] = pd.array([None] * len(m), dtype="Int64")
    with pytest.raises(DatasetError, match="has none; use split='auto' or 'group_kfold'"):
        make_splits(m, scheme="official")
    auto = make_splits(m, scheme="auto", k=4, seed=2)
    assert [te.tolist() for _, te in auto] == [
        te.tolist() for _, te in make_splits(m, scheme="group_kfold", k=4, seed=2)
    ]
    with pytest.raises(DatasetError, match="needs at least 50 groups"):
        make_splits(m, scheme="group_kfold", k=50)


def test_leak_is_detected():
    groups = np.array(["a", "a", "b", "c"])
    with pytest.raises(DatasetError, match="both sides"):
        check_no_leak([(np.array([0, 2]), np.array([1, 3]))], groups)


def test_official_folds_on_real_esc10(esc10_dir):
    from tasks.data.layouts.esc10 import FOLDERS

    files = sorted(esc10_dir.glob("*/*.ogg"))
    m = pd.DataFrame(
        {
            "class_id": [list(FOLDERS).index(f.parent.name.split(" - ")[1]) for f in files],
            "group": [f.name.split("-")[1] for f in files],
            "fold": [int(f.name[0]) for f in files],
        }
    )
    splits = make_splits(m, scheme="official")
    assert len(splits) == 5 and all(len(te) == 80 for _, te in splits)


def test_subset_rows_per_class_and_fold():
    m = _manifest()
    rows = subset_rows(m, per_class_fold=1)
    sub = m.iloc[rows]
    assert sub.groupby(["class_id", "fold"]).size().max() == 1
    assert len(sub) == 4 * 5


def _esc50_subset():
    """ESC-50's layout as the issue met it: 50 classes, 414 clips, 400 of them in fold 4, none in fold 1."""
    rows = []
    for i in range(414):
        c = i % 50
        fold = 4 if i < 400 else [2] * 11 + [3] + [5, 5]
        rows.append(
            {
                "class_id": c,
                "label": f"class {c}",
                "group": f"src{i}",
                "fold": fold if isinstance(fold, int) else fold[i - 400],
                "recording_id": f"r{i}",
            }
        )
    return pd.DataFrame(rows)


def test_degenerate_official_folds_are_refused_naming_the_folds_and_what_works():
    from tasks.data.split import choose_splits

    m = _esc50_subset()
    with pytest.raises(DatasetError) as err:
        make_splits(m, scheme="official")
    text = str(err.value)
    assert "fold 4 holds 400 of 414 rows (97%)" in text
    assert "with fold 4 as the test fold, training lacks 36 of 50 classes" in text  # 14 clips left to train on
    assert "2: 11, 3: 1, 4: 400, 5: 2" in text and "--split group_kfold" in text
    # auto falls back to group k-fold and says why
    choice = choose_splits(m, scheme="auto", k=5, seed=0)
    assert choice.scheme == "group_kfold" and "fell back to 5-fold" in choice.note and "fold 4 holds" in choice.note
    assert len(choice.splits) == 5 and max(len(te) for _, te in choice.splits) < 0.5 * len(m)


def test_sound_official_folds_are_kept_as_they_are():
    from tasks.data.split import choose_splits

    choice = choose_splits(_manifest(), scheme="auto")
    assert choice.scheme == "official" and choice.note == "" and len(choice.splits) == 5


def test_group_kfold_with_a_class_in_one_group_is_refused_naming_the_class():
    m = _manifest(n_classes=3, per_class=20, folds=5)
    m.loc[m["class_id"] == 2, "group"] = "one microphone"
    m["label"] = m["class_id"].map({0: "0", 1: "wind gust", 2: "grillon des prés"})
    with pytest.raises(DatasetError) as err:
        make_splits(m, scheme="group_kfold", k=5)
    text = str(err.value)
    assert "training lacks 1 of 3 classes ('grillon des prés')" in text
    assert "fewer than k=5 groups: 'grillon des prés': 1" in text and "lower --k" in text


def test_a_subset_without_folds_keeps_whole_groups_per_class():
    """Windows of annotated recordings (no folds, one group per recording): a quick run's subset keeps each class's
    windows of its first 5 x per_class_fold recordings, so group k-fold still has groups to split."""
    import pandas as pd

    rows = [(f"r{g}.wav#{w}", g, c) for g in range(12) for w in range(6) for c in (w % 3,)]
    m = pd.DataFrame(rows, columns=["recording_id", "group", "class_id"]).assign(fold=pd.NA)
    sub = m.iloc[subset_rows(m, per_class_fold=1)]
    assert sub.groupby("class_id")["group"].nunique().tolist() == [5, 5, 5]
    assert sub.groupby(["class_id", "group"]).size().eq(2).all()  # every window of a chosen (class, recording)
