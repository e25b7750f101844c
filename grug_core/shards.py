# Axes: B batch, S sequence. T tokens in a shard.
"""Token shards in the format modded-nanogpt and llm.c write (`fineweb_train_000001.bin`): a header of
256 little-endian int32 (magic 20240520, version 1, the token count, the rest zero) followed by that
many uint16 tokens. Shards are read by memory map, never whole.

A folder of shards holds `*_train_*.bin` and `*_val_*.bin` files. `python -m grug_core.data tokenize`
also writes `meta.json` beside them: the tokenizer's sha256 and vocabulary size, and for every shard
the UTF-8 bytes of the text its tokens cover, which is what makes bits per byte exact for tokens
(total nats / ln 2 / total bytes). Shards from elsewhere (no meta.json) train, but declare no
vocabulary: the largest token id in the folder + 1 stands in, and bytes per token are unknown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC, VERSION = 20240520, 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
META = "meta.json"


class ShardError(ValueError):
    """A shard, shard folder or tokenizer that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ShardSet:
    """One split of a shard folder: its files (sorted), their token counts, and what meta.json says."""

    files: tuple[Path, ...]
    tokens: tuple[int, ...]
    vocab_size: int
    bytes: int | None  # UTF-8 bytes the split's tokens cover; None without meta.json
    tokenizer: str | None  # sha256 of tokenizer.json
    # UTF-8 bytes each token id stands for ([V]; 0 for special tokens); None without meta.json. It makes
    # bits per byte exact on any subset of tokens, such as the evaluation windows.
    token_bytes: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Header + uint16 tokens, atomically (a temp file renamed into place): an interrupted write leaves
    no half shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ShardError(f"{path.name}: token ids must fit uint16 (0..65535); this tokenizer's do not")
    header = np.zeros(HEADER_INTS, "<i4")
    header[:3] = MAGIC, VERSION, tokens.size
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(header.tobytes())
        handle.write(tokens.astype("<u2").tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(handle.name, 0o666 & ~umask)  # a temp file is private; a shard is an ordinary file
    os.replace(handle.name, path)


def read_shard(path: Path) -> np.ndarray:
    """uint16 [T], memory-mapped; a wrong magic or version, a short file or a count that disagrees with
    the file's size is a ShardError."""
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path} is {size} bytes, shorter than the {HEADER_BYTES}-byte header; re-create it")
    header = np.fromfile(path, "<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise ShardError(f"{path} starts with {header[0]}, not the shard magic {MAGIC}; is it a token shard?")
    if header[1] != VERSION:
        raise ShardError(
            f"{path} is shard version {header[1]}; only version {VERSION} (uint16 tokens) is read"
        )
    count, stored = int(header[2]), (size - HEADER_BYTES) // 2
    if count != stored or (size - HEADER_BYTES) % 2:
        raise ShardError(
            f"{path} declares {count:,} tokens but holds {stored:,} (truncated or padded); re-create it"
        )
    return np.memmap(path, "<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def is_shard_folder(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.bin"))


def read_meta(folder: Path) -> dict | None:
    path = folder / META
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        int(meta["vocab_size"]), dict(meta["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ShardError(
            f"{path} is not a shard folder's meta.json; re-create the folder with tokenize"
        ) from None
    return meta


def shard_set(folder: Path, split: str) -> ShardSet:
    """The split's shards, validated (header, size, and every token id below the vocabulary)."""
    files = tuple(sorted(folder.glob(f"*_{split}_*.bin")))
    if not files:
        raise ShardError(f"no *_{split}_*.bin shards in {folder}; a shard folder needs train and val shards")
    meta = read_meta(folder)
    arrays = [read_shard(f) for f in files]
    top = max((int(a.max()) for a in arrays if a.size), default=0)
    vocab = int(meta["vocab_size"]) if meta else top + 1
    if top >= vocab:
        raise ShardError(
            f"{folder} holds token id {top}, outside its tokenizer's vocabulary of {vocab}; re-tokenize it"
        )
    covered = None
    if meta is not None:
        missing = [f.name for f in files if f.name not in meta["bytes"]]
        if missing:
            raise ShardError(
                f"{folder / META} has no byte count for {', '.join(missing)}; re-tokenize the folder"
            )
        covered = int(
            meta.get("split_bytes", {}).get(split) or sum(int(meta["bytes"][f.name]) for f in files)
        )
    tokenizer = meta.get("tokenizer") if meta else None
    token_bytes = None
    if meta is not None and "token_bytes" in meta:
        token_bytes = np.asarray(meta["token_bytes"], np.int64)
        if token_bytes.shape != (vocab,):
            raise ShardError(
                f"{folder / META} lists {token_bytes.size} token byte lengths for a vocabulary of {vocab}; "
                "re-tokenize the folder"
            )
    return ShardSet(files, tuple(a.size for a in arrays), vocab, covered, tokenizer, token_bytes)


def shard_windows(
    shards: ShardSet, batch_size: int, seq_len: int, seed: int, start: int = 0
) -> Iterator[np.ndarray]:
    """Endless int32 [B, S+1] windows, each inside one shard, from the seed alone: a shard is picked in
    proportion to its tokens, then an offset in it. `start` skips that many batches."""
    arrays = [read_shard(f) for f in shards.files]
    usable = np.array([max(0, a.size - seq_len - 1) for a in arrays], np.float64)
    if usable.sum() == 0:
        raise ShardError(
            f"every shard of {shards.files[0].parent} is shorter than seq_len + 2 = {seq_len + 2}"
        )
    rng = np.random.default_rng(seed)
    for _ in range(start):
        rng.choice(len(arrays), size=batch_size, p=usable / usable.sum())
        rng.random(batch_size)
    while True:
        picks = rng.choice(len(arrays), size=batch_size, p=usable / usable.sum())
        offsets = (rng.random(batch_size) * usable[picks]).astype(np.int64)
        yield np.stack([arrays[p][o : o + seq_len + 1] for p, o in zip(picks, offsets, strict=True)]).astype(
            np.int32
        )


def shard_eval_windows(shards: ShardSet, batch_size: int, seq_len: int, num_batches: int) -> list[np.ndarray]:
    """The same evenly spaced windows on every call, spread over the split's shards in order (each
    window inside one shard, no shard read whole)."""
    arrays = [read_shard(f) for f in shards.files]
    usable = np.array([max(0, a.size - seq_len - 1) for a in arrays], np.int64)
    if usable.sum() == 0:
        raise ShardError(f"every val shard is shorter than seq_len + 2 = {seq_len + 2} tokens")
    positions = np.linspace(0, usable.sum() - 1, batch_size * num_batches).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(usable)[:-1]])
    picks = np.searchsorted(np.cumsum(usable), positions, side="right")
    windows = [
        arrays[p][o - starts[p] : o - starts[p] + seq_len + 1] for p, o in zip(picks, positions, strict=True)
    ]
    stacked = np.stack(windows).astype(np.int32)
    return list(stacked.reshape(num_batches, batch_size, seq_len + 1))


# ---------------------------------------------------------------- tokenizing a folder of text

SHARD_TOKENS = 100_000_000  # modded-nanogpt's shard size: 200 MB of uint16


@dataclass(frozen=True)
class Tokenized:
    documents: int
    tokens: int
    bytes: int
    shards: tuple[str, ...]


def load_tokenizer(path: Path):
    """A Hugging Face `tokenizers` file; its sha256 and vocabulary size go into meta.json."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ShardError("tokenizing needs Hugging Face tokenizers: pip install -e '.[data]'") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the library raises its own Exception subclasses for a bad file
        raise ShardError(f"{path} is not a tokenizer.json that tokenizers can load ({error})") from None


def _byte_alphabet() -> dict[str, int]:
    """The byte-level pre-tokenizer's printable stand-in for each byte (GPT-2's convention): bytes that
    print as themselves keep their character; the rest map, in order, to the code points from 256 up."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    alphabet = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            alphabet[chr(256 + extra)] = b
            extra += 1
    return alphabet


def token_byte_lengths(tokenizer) -> np.ndarray:
    """int64 [V]: the UTF-8 bytes each token id stands for in decoded text; 0 for special tokens. Exact
    for byte-level BPE (GPT-2, Llama 3, tiktoken-style tokenizers); sentencepiece-style pieces count
    '▁' as a space and <0xNN> byte-fallback pieces as one byte."""
    alphabet = _byte_alphabet()
    byte_level = "ByteLevel" in json.dumps(json.loads(tokenizer.to_str()).get("decoder"))
    special = {token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special}
    lengths = np.zeros(tokenizer.get_vocab_size(), np.int64)
    for piece, index in tokenizer.get_vocab(with_added_tokens=True).items():
        if piece in special:
            continue
        if byte_level and all(ch in alphabet for ch in piece):
            lengths[index] = len(piece)
        elif piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            lengths[index] = 1
        else:
            lengths[index] = len(piece.replace("▁", " ").encode())
    return lengths


def train_tokenizer(source: Path, out: Path, vocab_size: int) -> int:
    """A byte-level BPE tokenizer (GPT-2's scheme: every byte is a token, merges learned on top, plus
    <|endoftext|>) trained on the .txt files under `source` and saved as tokenizer.json. Returns its
    vocabulary size."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise ShardError(
            "training a tokenizer needs Hugging Face tokenizers: pip install -e '.[data]'"
        ) from None
    if not 257 <= vocab_size < 2**16:
        raise ShardError(f"--vocab-size {vocab_size} must be between 257 and 65535 (uint16 shards)")
    if out.exists():
        raise ShardError(f"{out} exists; pick a new --out file")
    files = text_documents(source)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tokenizer.train_from_iterator((_read_text(f) for f in files), trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tokenizer.save(str(tmp))
    os.replace(tmp, out)
    return tokenizer.get_vocab_size()


def text_documents(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise ShardError(f"no .txt files under {folder}; pass --input a folder of text")
    return files


def _end_of_text(tokenizer) -> int | None:
    ids = (tokenizer.token_to_id(token) for token in ("<|endoftext|>", "</s>", "<eos>"))
    return next((i for i in ids if i is not None), None)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ShardError(
            f"{path} is not UTF-8 text (byte {error.start}); convert it or move it out"
        ) from None


def _encoded(tokenizer, files: list[Path], eot: int | None, progress) -> Iterator[tuple[np.ndarray, int]]:
    """(token ids, UTF-8 bytes) per document, encoded 64 at a time (tokenizers uses every core)."""
    for start in range(0, len(files), 64):
        batch = files[start : start + 64]
        texts = [_read_text(f) for f in batch]
        for text, encoding in zip(texts, tokenizer.encode_batch(texts), strict=True):
            yield np.asarray(([eot] if eot is not None else []) + encoding.ids, np.int64), len(text.encode())
        progress(len(batch))


def _pack(documents, out: Path, stem: str, shard_tokens: int, covered: dict[str, int]) -> Tokenized:
    """Documents into shards of at most `shard_tokens` (a document may span two), each written
    atomically; `covered` gets each shard's UTF-8 bytes (a split document's bytes go by its tokens)."""
    names, pending, pending_bytes, count, tokens, size = [], [], 0.0, 0, 0, 0
    for ids, nbytes in documents:
        count, tokens, size = count + 1, tokens + ids.size, size + nbytes
        while ids.size:
            room = shard_tokens - sum(p.size for p in pending)
            part, ids = ids[:room], ids[room:]
            pending.append(part)
            pending_bytes += nbytes * part.size / max(1, part.size + ids.size)
            nbytes -= nbytes * part.size / max(1, part.size + ids.size)
            if sum(p.size for p in pending) >= shard_tokens:
                names.append(_write(out, stem, len(names), pending, pending_bytes, covered))
                pending, pending_bytes = [], 0.0
    if pending:
        names.append(_write(out, stem, len(names), pending, pending_bytes, covered))
    return Tokenized(count, tokens, size, tuple(names))


def _write(out: Path, stem: str, number: int, parts: list, nbytes: float, covered: dict[str, int]) -> str:
    name = f"{stem}_{number:06d}.bin"
    write_shard(out / name, np.concatenate(parts))
    covered[name] = round(nbytes)
    return name


def tokenize_into(tokenizer_path: Path, source: Path, out: Path, **options) -> dict[str, Tokenized]:
    """tokenize_folder into a hidden sibling folder renamed to `out` at the end: a failure or an
    interrupt leaves no `out` at all (a new, empty one is replaced)."""
    import shutil

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ShardError(f"{out} exists and is not an empty folder; pick a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        written = tokenize_folder(tokenizer_path, source, staging / out.name, **options)
        if out.exists():
            out.rmdir()
        os.replace(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def tokenize_folder(
    tokenizer_path: Path,
    source: Path,
    out: Path,
    *,
    val_fraction: float = 0.1,
    shard_tokens: int = SHARD_TOKENS,
    progress=lambda documents: None,
) -> dict[str, Tokenized]:
    """Every .txt file under `source` is a document (UTF-8); every 1/val_fraction-th one, in sorted
    order, goes to val. Each document is preceded by the tokenizer's end-of-text token when it has one
    (it covers no bytes); meta.json records the tokenizer's sha256 and vocabulary and every shard's
    UTF-8 bytes, written last, so a folder without it was interrupted."""
    import hashlib

    if not 0 < val_fraction < 1:
        raise ShardError(f"--val-fraction {val_fraction} must be between 0 and 1, e.g. 0.1")
    tokenizer = load_tokenizer(tokenizer_path)
    files = text_documents(source)
    if out.exists() and any(out.iterdir()):
        raise ShardError(f"{out} is not empty; pick a new --out folder")
    every = max(1, round(1 / val_fraction))
    val = [f for i, f in enumerate(files) if i % every == every - 1] or files[-1:]
    train = [f for f in files if f not in val]
    if not train:
        raise ShardError(f"{source} holds one document; tokenizing needs at least two (train and val)")
    eot, covered, stem = _end_of_text(tokenizer), {}, out.name or "data"
    written = {
        split: _pack(
            _encoded(tokenizer, chosen, eot, progress), out, f"{stem}_{split}", shard_tokens, covered
        )
        for split, chosen in (("train", train), ("val", val))
    }
    meta = {
        "tokenizer": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),
        "vocab_size": tokenizer.get_vocab_size(),
        "token_bytes": token_byte_lengths(tokenizer).tolist(),
        "bytes": covered,
        # Exact per split; a document cut between two shards shares its bytes by tokens in `bytes`.
        "split_bytes": {split: result.bytes for split, result in written.items()},
    }
    tmp = out / f".{META}.tmp"
    tmp.write_text(json.dumps(meta, sort_keys=True) + "\n")  # one line: token_bytes holds V numbers
    os.replace(tmp, out / META)
    return written


def describe_folder(tokenizer_path: Path, folder: Path) -> dict:
    """meta.json for shards written elsewhere (modded-nanogpt's FineWeb, llm.c) by the tokenizer that
    made them: each shard's bytes are the sum of its tokens' byte lengths, exact for byte-level BPE.
    Written atomically; refuses a folder that already has one."""
    import hashlib

    if (folder / META).exists():
        raise ShardError(f"{folder / META} exists; delete it first to describe the folder again")
    tokenizer = load_tokenizer(tokenizer_path)
    table = token_byte_lengths(tokenizer)
    files = sorted(folder.glob("*.bin"))
    if not files:
        raise ShardError(
            f"no .bin shards in {folder}; pass the folder that holds *_train_*.bin and *_val_*.bin"
        )
    covered = {}
    for path in files:
        tokens = read_shard(path)
        if tokens.size and int(tokens.max()) >= table.size:
            raise ShardError(
                f"{path} holds token id {int(tokens.max())}, outside this tokenizer's {table.size}"
            )
        covered[path.name] = int(
            sum(table[tokens[i : i + 2**24]].sum() for i in range(0, tokens.size, 2**24))
        )
    meta = {
        "tokenizer": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),
        "vocab_size": int(table.size),
        "token_bytes": table.tolist(),
        "bytes": covered,
    }
    tmp = folder / f".{META}.tmp"
    tmp.write_text(json.dumps(meta, sort_keys=True) + "\n")
    os.replace(tmp, folder / META)
    return meta
