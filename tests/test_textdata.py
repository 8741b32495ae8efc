"""Tests for adaloss.textdata: the file split pinned to fixed paths, the stdlib corpus (no tests, no
site-packages, the same bytes on every load), user corpora as a folder or one .txt file, every
refusal naming its file, the seeded window sampler and its resume, and the evaluation windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaloss.textdata import (EXCLUDED_DIRS, CorpusError, WindowSampler, eval_windows, load_corpus, split_of,
                              stdlib_files)


def test_the_split_of_a_path_is_pinned_so_every_machine_agrees():
    # SHA-256 of the relative path: these hold on every machine and every Python
    assert [split_of(p, 0.05, 0.05) for p in ("os.py", "asynchat.py", "chunk.py")] == ["train", "val", "test"]
    assert [split_of(f"f{i}.txt", 0.3, 0.3) for i in range(5)] == ["train", "val", "train", "train", "test"]


def test_stdlib_corpus_is_the_librarys_own_source_split_by_file_and_recorded():
    root, files = stdlib_files()
    assert files == sorted(files) and "os.py" in files and all(f.endswith(".py") for f in files)
    assert not any(EXCLUDED_DIRS & set(f.split("/")[:-1]) for f in files)
    corpus, again = load_corpus("stdlib"), load_corpus("stdlib")
    info = corpus.info()
    assert info["python"] and info["source"] == str(root) and info["split_by"] == "file"
    assert sum(info["files"].values()) == len(files) and min(info["files"].values()) > 0
    assert info == again.info()  # the same bytes, hashes included
    assert (root / "os.py").read_bytes() in corpus.splits["train"].numpy().tobytes()


def test_a_folder_corpus_is_split_by_file_and_skips_hidden_files(tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        (folder / f"f{i}.txt").write_bytes(f"file {i} ".encode() * 10)
    (folder / ".hidden").write_text("never read")
    corpus = load_corpus("mine", tmp_path, val_fraction=0.3, test_fraction=0.3)
    assert corpus.files == {"train": 3, "val": 1, "test": 1}  # splits pinned above
    assert corpus.splits["val"].numpy().tobytes() == b"file 1 " * 10
    assert b"never" not in b"".join(t.numpy().tobytes() for t in corpus.splits.values())


def test_one_text_file_is_split_by_position(tmp_path):
    (tmp_path / "tiny.txt").write_bytes(bytes(range(100)))
    corpus = load_corpus("tiny", tmp_path, val_fraction=0.1, test_fraction=0.2)
    assert [corpus.splits[s].tolist() for s in ("train", "val", "test")] == [
        list(range(70)), list(range(70, 80)), list(range(80, 100))]
    assert corpus.split_by == "position" and corpus.python == ""


@pytest.mark.parametrize("setup,name,message", [
    (lambda root: None, "absent", r"absent\.txt: no such file.*unknown corpus 'absent'.*stdlib"),
    (lambda root: (root / "empty.txt").write_bytes(b""), "empty", r"empty\.txt: corpus 'empty' is empty"),
    (lambda root: (root / "nothing").mkdir(), "nothing", r"nothing: corpus 'nothing' is empty"),
    (lambda root: ((root / "both").mkdir(), (root / "both.txt").write_text("x")), "both",
     "both a folder and both.txt exist"),
    (lambda root: ((root / "two").mkdir(), (root / "two" / "f0.txt").write_text("x" * 50)), "two",
     "no file of the 1 went to split 'val'.*split by position"),
    (lambda root: None, "../etc", "not a valid corpus name"),
])
def test_unusable_corpora_are_one_line_naming_the_file(tmp_path, setup, name, message):
    setup(tmp_path)
    with pytest.raises(CorpusError, match=message):
        load_corpus(name, tmp_path)


def test_a_split_too_short_for_one_window_and_bad_fractions_are_refused(tmp_path):
    (tmp_path / "short.txt").write_bytes(b"x" * 100)
    corpus = load_corpus("short", tmp_path, val_fraction=0.1, test_fraction=0.1)
    corpus.check_windows(9)  # 10 bytes per held-out split: one window of 9 + 1
    with pytest.raises(CorpusError, match=r"short\.txt: split 'val' .* has 10 bytes, fewer than .* 11"):
        corpus.check_windows(10)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        load_corpus("short", tmp_path, val_fraction=0.0)
    with pytest.raises(ValueError, match="must be < 1"):
        load_corpus("short", tmp_path, val_fraction=0.5, test_fraction=0.5)


def test_sampler_windows_are_seeded_shifted_by_one_and_resume_where_they_stopped():
    data = torch.randint(0, 256, (1000,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    a, b = WindowSampler(data, 16, 4, seed=3), WindowSampler(data, 16, 4, seed=3)
    x, y = a.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    text = data.numpy().tobytes()
    assert all(bytes(row.tolist()) in text for row in torch.cat([x, y[:, -1:]], 1))
    state = a.state_dict()
    expected = a.next_batch()
    b.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(b.next_batch(), expected))
    assert not torch.equal(WindowSampler(data, 16, 4, seed=4).next_batch()[0], x)


def test_eval_windows_tile_the_split_without_overlap_or_pick_evenly_spread_ones():
    data = torch.arange(100, dtype=torch.uint8)
    every = eval_windows(data, 10)
    assert every.shape == (9, 11) and every[:, 0].tolist() == list(range(0, 90, 10))
    assert eval_windows(data, 10, 3)[:, 0].tolist() == [0, 40, 80]
    assert torch.equal(eval_windows(data, 10, 50), every)  # more than there are: all of them
    with pytest.raises(ValueError, match="no window"):
        eval_windows(data[:10], 10)
