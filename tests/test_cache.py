"""Atomic writes and dropping the pages of memory-mapped files."""

from pathlib import Path

import numpy as np
import pytest

from tasks.cache import atomic_path, cached_folder, drop_pages


def _rss_file_kb() -> int:
    """This process's resident pages of mapped files (RssFile + RssShmem, kB; Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return sum(int(fields[k].split()[0]) for k in ("RssFile", "RssShmem"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_drop_pages_releases_a_written_mapping_and_keeps_its_data(tmp_path):
    path = tmp_path / "big.npy"
    data = np.arange(16 * 1024 * 1024, dtype=np.float32).reshape(1024, -1)  # 64 MB
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=data.shape)
    out[:] = data
    view = out.reshape(-1)  # a view finds its mapping too
    before = _rss_file_kb()
    drop_pages(view)
    after = _rss_file_kb()
    assert before - after > 48 * 1024, (before, after)
    out.flush()
    del out, view
    np.testing.assert_array_equal(np.load(path), data)  # nothing written was lost

    back = np.load(path, mmap_mode="r")
    assert float(back[:, 0].sum()) == float(data[:, 0].sum())
    drop_pages(back)
    np.testing.assert_array_equal(back[5], data[5])  # still readable after its pages went


def test_drop_pages_ignores_arrays_in_memory_and_none():
    a = np.ones(10)
    drop_pages(a)
    drop_pages(a[2:])
    drop_pages(None)
    assert a.sum() == 10


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    dest = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_cached_folder_is_written_once_whole_or_not_at_all(tmp_path):
    calls = []

    def write(folder: Path) -> None:
        calls.append(folder)
        (folder / "a.txt").write_text("first")

    target = tmp_path / "deep" / "art"
    assert cached_folder(target, write) == target and (target / "a.txt").read_text() == "first"
    assert cached_folder(target, lambda f: (f / "a.txt").write_text("second")) == target
    assert (target / "a.txt").read_text() == "first" and len(calls) == 1  # reused, not written again

    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("x")
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        cached_folder(tmp_path / "other", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]  # no half-written folder left behind
