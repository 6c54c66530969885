"""A file dataset's checkpoint names the files that changed before a resume (changes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tensorfeed as tfd
from tensorfeed.sources.files import changes

from .files_helpers import ids_of_images, tagged_pixels


def _checkpoint(root: Path) -> tuple[list[int], dict]:
    loader = tfd.DataLoader(tfd.ImageFolder(str(root)), batch_size=2, shuffle=True, seed=3)
    it = iter(loader)
    head = [i for _ in range(2) for i in ids_of_images(next(it)[0])]
    return head, loader.state_dict()


def test_an_unchanged_folder_resumes_exactly(tree):
    head, state = _checkpoint(tree)
    resumed = tfd.DataLoader(tfd.ImageFolder(str(tree)), batch_size=2, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    rest = [i for x, _ in resumed for i in ids_of_images(x)]
    assert sorted(head + rest) == list(range(12))


@pytest.mark.parametrize("change", ["added", "removed", "rewritten"])
def test_a_changed_folder_is_named_on_resume(tree, change):
    _, state = _checkpoint(tree)
    victim = tree / "dog" / "0005.png"
    if change == "added":
        victim = tree / "dog" / "0005b.png"
        Image.fromarray(tagged_pixels(99)).save(victim)
    elif change == "removed":
        victim.unlink()
    else:
        Image.fromarray(tagged_pixels(98)).save(victim)
        os.utime(victim, ns=(10**18, 10**18))
    resumed = tfd.DataLoader(tfd.ImageFolder(str(tree)), batch_size=2, shuffle=True, seed=3)
    with pytest.raises(tfd.SourceChangedError, match=rf"1 file\(s\) {change}: .*{victim.name}"):
        resumed.load_state_dict(state)


def test_a_large_folder_names_the_ranges_that_changed():
    paths = [f"/data/c{i // 1000}/{i:05d}.png" for i in range(4000)]
    stats = np.tile(np.array([[100, 7]], dtype=np.int64), (4000, 1))
    old = changes.manifest(paths, stats)
    assert "files" not in old and len(old["buckets"]) == changes.BUCKETS  # flat, not per file
    assert changes.describe_change(old, paths, stats) is None
    stats[2600] = [101, 8]  # one file rewritten
    what = changes.describe_change(old, paths[:100] + paths[101:], stats[np.arange(4000) != 100])
    assert what is not None and what.startswith("4000 files then, 3999 now")
    assert "from '/data/c0/00000.png' and before '/data/c0/00250.png' (250 files then, 249" in what
    assert "from '/data/c2/02500.png'" in what and what.count("from ") == 2


def test_on_change_continue_goes_on_over_the_folder_as_it_is_now(tree):
    """Paths are the rows' keys: a file removed is not delivered, one added joins or is
    counted as skipped, none twice."""

    def loader(workers=0):
        ds = tfd.ImageFolder(str(tree))
        return tfd.DataLoader(
            ds, batch_size=2, shuffle=True, seed=3, num_workers=workers, on_change="continue"
        )

    first = loader()
    it = iter(first)
    head = [i for _ in range(2) for i in ids_of_images(next(it)[0])]
    state = first.state_dict()
    del it
    left = sorted(set(range(12)) - set(head))
    gone = next(tree.rglob(f"{left[0]:04d}.png"))
    gone.unlink()
    for i in (50, 51, 52):
        Image.fromarray(tagged_pixels(i)).save(tree / "emu" / f"{i:04d}.png")
    resumed = loader(workers=2)
    resumed.load_state_dict(state)
    rest = [i for x, _ in resumed for i in ids_of_images(x)]
    c = resumed.stats.source_changes
    now = (set(range(12)) - {left[0]}) | {50, 51, 52}
    assert not set(rest) & set(head) and len(rest) == len(set(rest)) and set(rest) <= now
    assert len(rest) == len(now) - c["done_now"] and c["done_then"] == 4
