"""Token shards and tokenizing: the modded-nanogpt / llm.c format read token for token, a folder of text
tokenized with a real Hugging Face tokenizer (trained here, nothing downloaded) with exact byte counts,
and every malformed input refused in one sentence with nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grug_core import shards

pytest.importorskip("tokenizers", reason="tokenizing needs the data extra: pip install -e '.[data]'")

TEXTS = {
    "a_play.txt": "To be, or not to be, that is the question.\n" * 40,
    "b_poem.txt": "Shall I compare thee to a summer's day?\n" * 30,
    "c_café.txt": "Un café crème, s'il vous plaît. Ça coûte 3 €.\n" * 25,  # multi-byte UTF-8
    "d_haiku.txt": "古池や蛙飛び込む水の音\n" * 20,
    "e_notes.txt": "Notes on the text, with numbers 1 2 3 and symbols & % $.\n" * 35,
}


def write_like_modded_nanogpt(path: Path, tokens: list[int]) -> None:
    """What modded-nanogpt's data/fineweb.py and llm.c's write_datafile do: a 256 x int32 header (magic,
    version, token count), then the tokens as uint16, in one file."""
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as handle:
        handle.write(header.tobytes())
        handle.write(np.array(tokens, dtype=np.uint16).tobytes())


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXTS.values(), trainer)
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture()
def texts(tmp_path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def tokenize(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grug_core.data", "tokenize", *args], cwd=cwd, capture_output=True, text=True
    )


def test_a_shard_written_as_modded_nanogpt_does_is_read_token_for_token(tmp_path):
    tokens = list(np.random.default_rng(0).integers(0, 50257, 10_000))
    write_like_modded_nanogpt(tmp_path / "fineweb_val_000000.bin", tokens)
    read = shards.read_shard(tmp_path / "fineweb_val_000000.bin")
    assert isinstance(read, np.memmap) and read.dtype == np.uint16 and list(read) == tokens
    # Two train shards of consecutive ids: a window is a run of one shard when its ids count up by one.
    write_like_modded_nanogpt(tmp_path / "fineweb_train_000001.bin", list(range(1000, 7000)))
    write_like_modded_nanogpt(tmp_path / "fineweb_train_000002.bin", list(range(20000, 21000)))
    train = shards.shard_set(tmp_path, "train")  # no meta.json: vocabulary from the largest id
    assert train.tokens == (6000, 1000) and train.vocab_size == 21000 and train.bytes is None
    first = next(shards.shard_windows(train, 64, 64, seed=3))
    again = next(shards.shard_windows(train, 64, 64, seed=3))
    assert first.shape == (64, 65) and first.dtype == np.int32 and (first == again).all()
    assert (np.diff(first, axis=1) == 1).all()  # inside one shard, never across the two
    assert {int(w[0]) >= 20000 for w in first} == {True, False}  # both shards are drawn from
    val = shards.shard_set(tmp_path, "val")
    evals = shards.shard_eval_windows(val, 2, 32, 3)
    assert [e.shape for e in evals] == [(2, 33)] * 3 and list(evals[0][0]) == tokens[:33]


def test_tokenize_writes_shards_with_exact_utf8_bytes_and_they_decode_back(tmp_path, texts, tokenizer_file):
    from tokenizers import Tokenizer

    out = tmp_path / "shards"
    done = tokenize("--tokenizer", str(tokenizer_file), "--input", str(texts), "--out", str(out),
                    "--val-fraction", "0.2", "--shard-tokens", "700", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "val: 1 documents" in done.stdout and "bytes per token" in done.stdout
    meta = json.loads((out / "meta.json").read_text())
    names = sorted(TEXTS)
    total = sum(len(TEXTS[n].encode("utf-8")) for n in names)
    assert meta["split_bytes"]["val"] == len(TEXTS["e_notes.txt"].encode())  # the 5th of 5 documents
    assert meta["split_bytes"]["train"] + meta["split_bytes"]["val"] == total
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    assert meta["vocab_size"] == tokenizer.get_vocab_size() > 256 and len(meta["tokenizer"]) == 64
    train, val = shards.shard_set(out, "train"), shards.shard_set(out, "val")
    assert len(train.files) > 1 and all(n <= 700 for n in train.tokens)  # packed into 700-token shards
    assert train.bytes == meta["split_bytes"]["train"] and val.vocab_size == meta["vocab_size"]
    eot = tokenizer.token_to_id("<|endoftext|>")
    ids = [int(t) for t in shards.read_shard(val.files[0])]
    assert ids[0] == eot and tokenizer.decode(ids[1:]) == TEXTS["e_notes.txt"]
    train_ids = np.concatenate([np.asarray(shards.read_shard(f)) for f in train.files]).tolist()
    documents = [tokenizer.decode(part) for part in _split(train_ids, eot)]
    assert documents == [TEXTS[n] for n in names[:4]]


def _split(ids: list[int], eot: int) -> list[list[int]]:
    parts = []
    for token in ids:
        if token == eot:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda p: p.write_bytes(b"\x00" * 100), "shorter than the 1024-byte header"),
        (lambda p: _header(p, 0, 1234), "not the shard magic 20240520"),
        (lambda p: _header(p, 1, 2), "shard version 2; only version 1"),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "declares 100 tokens but holds 95"),
        (lambda p: _header(p, 2, 90), "declares 90 tokens but holds 100"),
    ],
)
def test_a_malformed_shard_is_one_sentence(tmp_path, damage, words):
    path = tmp_path / "x_train_000000.bin"
    shards.write_shard(path, np.arange(100))
    damage(path)
    with pytest.raises(shards.ShardError, match=words):
        shards.shard_set(tmp_path, "train")


def _header(path: Path, slot: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[slot * 4 : slot * 4 + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(data))


def test_a_token_outside_the_vocabulary_and_an_empty_folder_are_refused(tmp_path):
    shards.write_shard(tmp_path / "x_train_000000.bin", np.array([1, 2, 300]))
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 256, "bytes": {"x_train_000000.bin": 3}}))
    with pytest.raises(shards.ShardError, match="token id 300, outside its tokenizer's vocabulary of 256"):
        shards.shard_set(tmp_path, "train")
    with pytest.raises(shards.ShardError, match=r"no \*_val_\*.bin shards"):
        shards.shard_set(tmp_path, "val")


def test_bad_tokenize_input_is_one_sentence_exit_2_and_writes_nothing(tmp_path, texts, tokenizer_file):
    broken = tmp_path / "broken.json"
    broken.write_text('{"not": "a tokenizer"')
    (tmp_path / "empty").mkdir()
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "a.txt").write_text("fine\n")
    (latin / "b.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (broken, texts, "out1", "is not a tokenizer.json that tokenizers can load"),
        (tokenizer_file, tmp_path / "empty", "out2", "no .txt files under"),
        (tokenizer_file, latin, "out3", "b.txt is not UTF-8 text (byte 3)"),
        (tokenizer_file, texts, "taken", "exists and is not an empty folder"),
    ]
    for tokenizer, source, out, words in cases:
        done = tokenize("--tokenizer", str(tokenizer), "--input", str(source), "--out", str(tmp_path / out),
                        cwd=tmp_path)  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.json", "empty", "latin", "taken", "texts"]
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


def test_token_byte_lengths_sum_to_the_exact_utf8_bytes_of_the_text(tmp_path, texts, tokenizer_file):
    """Byte-level BPE splits multi-byte characters (é, €, 古) across tokens; the per-token lengths in
    meta.json still add up to the text's UTF-8 bytes exactly, which is what makes bits per byte exact."""
    out = tmp_path / "shards"
    done = tokenize("--tokenizer", str(tokenizer_file), "--input", str(texts), "--out", str(out),
                    "--val-fraction", "0.2", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "meta.json").read_text())
    table = np.asarray(meta["token_bytes"])
    assert table.shape == (meta["vocab_size"],) and table.min() == 0  # the end-of-text token covers nothing
    for split in ("train", "val"):
        ids = np.concatenate([np.asarray(shards.read_shard(f)) for f in shards.shard_set(out, split).files])
        assert int(table[ids].sum()) == meta["split_bytes"][split]


def byte_tokenizer(path: Path) -> Path:
    """A byte-level tokenizer whose id for each byte is the byte itself: its tokens are today's bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = {b: ch for ch, b in shards._byte_alphabet().items()}
    tokenizer = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(path))
    return path


def test_bits_per_byte_on_a_byte_tokenizer_equal_the_text_path(tmp_path):
    """The same model scored on the same validation text through shards of a byte tokenizer and through
    today's byte path: the same windows, the same bytes, the same bits per byte."""
    import jax
    import jax.numpy as jnp

    from grug_core import data
    from grug_core.loss import next_token_loss
    from grug_core.model import GrugConfig, forward, init_parameters

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "café", "naïve", "\n"]
    for number in range(10):  # every 10th file is validation, on both paths
        text = " ".join(rng.choice(words, 600))
        (corpus / f"play{number:02d}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "shards"
    done = tokenize("--tokenizer", str(byte_tokenizer(tmp_path / "bytes.json")), "--input", str(corpus),
                    "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text_data, shard_data = data.open_dataset(corpus), data.open_dataset(out)
    assert (text_data.kind, shard_data.kind, shard_data.vocab_size) == ("bytes", "shards", 256)
    text_windows = data.eval_windows(text_data, 4, 64, 3)
    shard_windows = data.eval_windows(shard_data, 4, 64, 3)
    assert all(np.array_equal(a, b) for a, b in zip(text_windows, shard_windows, strict=True))

    cfg = GrugConfig(vocab_size=256, hidden_dim=32, intermediate_dim=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, max_seq_len=64)  # fmt: skip
    params = init_parameters(cfg, jax.random.key(0))

    def bits_per_byte(dataset, windows):
        nats = [float(next_token_loss(forward(params, jnp.asarray(w[:, :-1]), cfg), params.lm_head,
                                      jnp.asarray(w[:, 1:]))) for w in windows]  # fmt: skip
        tokens = sum(w[:, 1:].size for w in windows)
        return float(np.mean(nats)) * tokens / data.bytes_covered(dataset, windows) / np.log(2)

    assert data.bytes_covered(text_data, text_windows) == data.bytes_covered(shard_data, shard_windows)
    assert bits_per_byte(shard_data, shard_windows) == pytest.approx(
        bits_per_byte(text_data, text_windows), rel=1e-6
    )


def test_a_shard_folder_without_token_byte_lengths_is_refused_for_training(tmp_path):
    from grug_core import data

    write_like_modded_nanogpt(tmp_path / "fineweb_train_000001.bin", list(range(300)))
    write_like_modded_nanogpt(tmp_path / "fineweb_val_000000.bin", list(range(300)))
    with pytest.raises(shards.ShardError, match="bits per byte cannot be exact"):
        data.open_dataset(tmp_path)


def test_shards_made_elsewhere_are_described_by_their_tokenizer_then_train(tmp_path, tokenizer_file):
    """modded-nanogpt's FineWeb shards come without meta.json; `describe` adds it from the tokenizer."""
    from tokenizers import Tokenizer

    from grug_core import data

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    for split, name in (("train", "a_play.txt"), ("val", "c_café.txt")):
        write_like_modded_nanogpt(tmp_path / f"fineweb_{split}_000000.bin", tokenizer.encode(TEXTS[name]).ids)
    describe = [sys.executable, "-m", "grug_core.data", "describe", "--tokenizer", str(tokenizer_file)]
    done = subprocess.run([*describe, "--data", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dataset = data.open_dataset(tmp_path)
    assert dataset.vocab_size == tokenizer.get_vocab_size() and dataset.kind == "shards"
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["bytes"]["fineweb_val_000000.bin"] == len(TEXTS["c_café.txt"].encode())
    again = subprocess.run([*describe, "--data", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
