"""Text files as blocks of whole lines, read in bounded memory (plain or gzip), for the streaming readers.

A block is at most ``block_bytes`` of text cut after its last newline (a line longer than a block makes
that block longer, never a cut inside a line), with the physical line number of its first line, so a
bad row anywhere in a 40 GB file is still named by its file and line. Gzip files (recognised by their
magic bytes, whatever their name) are decompressed by Arrow's C++ reader; the next block is read on a
background thread while the caller parses the current one.

Source files are given as a file, a folder or a list of both: a folder means its regular files in
natural order (``day_2`` before ``day_10``), which for Criteo's day files is the time order.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from crossadapt.data.errors import DataFormatError

DEFAULT_BLOCK_BYTES = 32 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class TextBlock:
    """Whole lines of one file: ``data`` starts at physical line ``first_line`` (1-based)."""

    data: pa.Buffer
    path: Path
    first_line: int
    source_bytes: int  # bytes of the file (compressed, for gzip) consumed so far, for MB/s


def natural_key(path: Path) -> list:
    """Sort key that orders embedded numbers by value: day_2 < day_10."""
    return [int(part) if part.isdigit() else part for part in _NUMBER.split(path.name)]


def source_files(paths: str | Path | Sequence[str | Path], *, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """The files to read, in time order: files as given, each folder's regular files in natural order.

    Hidden files are ignored; with ``suffixes`` a folder contributes only files ending in one of them.
    """
    given = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not given:
        raise ValueError("no input files given")
    files: list[Path] = []
    for entry in map(Path, given):
        if entry.is_dir():
            inside = [p for p in entry.iterdir() if p.is_file() and not p.name.startswith(".")]
            if suffixes:
                inside = [p for p in inside if p.name.endswith(suffixes)]
            if not inside:
                raise DataFormatError(entry, None, None, "the folder holds no input files")
            files.extend(sorted(inside, key=natural_key))
        elif entry.is_file():
            files.append(entry)
        else:
            raise FileNotFoundError(f"{entry}: no such file or folder")
    return files


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def open_text(path: Path) -> pa.NativeFile:
    """An Arrow input stream over the file's text (gzip decompressed on the fly)."""
    return pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)


def read_first_line(path: Path) -> str:
    """The first line (a header), without its newline; gzip is decompressed."""
    with open_text(path) as stream:
        head = b""
        while b"\n" not in head:
            piece = stream.read(1 << 16)
            if not piece:
                break
            head += piece
    return head.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")


def _blocks(path: Path, block_bytes: int, skip_lines: int) -> Iterator[TextBlock]:
    if is_gzip(path):
        yield from _stream_blocks(path, block_bytes, skip_lines)
    else:
        yield from _file_blocks(path, block_bytes, skip_lines)


def _file_blocks(path: Path, block_bytes: int, skip_lines: int) -> Iterator[TextBlock]:
    """A plain file: each read starts where the previous block's last line ended (no concatenation;
    the block is a zero-copy slice of what was read)."""
    size, position, line = path.stat().st_size, 0, 1
    with open(path, "rb") as f:
        while position < size:
            f.seek(position)
            piece = f.read(block_bytes)
            while position + len(piece) < size and piece.rfind(b"\n") < 0:  # a line longer than the block
                piece += f.read(block_bytes)
            last = position + len(piece) >= size
            end = len(piece) if last else piece.rfind(b"\n") + 1
            start = 0
            while skip_lines and start < end:
                newline = piece.find(b"\n", start, end)
                start = end if newline < 0 else newline + 1
                skip_lines, line = skip_lines - 1, line + 1
            if start < end:
                lines = piece.count(b"\n", start, end) + (0 if piece[end - 1 : end] == b"\n" else 1)
                yield TextBlock(pa.py_buffer(piece).slice(start, end - start), path, line, position + end)
                line += lines
            position += end


def _stream_blocks(path: Path, block_bytes: int, skip_lines: int) -> Iterator[TextBlock]:
    """A gzip file, decompressed as it is read (Arrow's C++ codec, outside the GIL)."""
    line = 1
    with pa.OSFile(path.as_posix()) as raw, pa.CompressedInputStream(raw, "gzip") as stream:
        rest = b""
        eof = False
        while not eof:
            piece = stream.read(block_bytes)
            eof = not piece
            text = rest + piece if rest else piece
            if not eof:
                cut = text.rfind(b"\n") + 1
                if cut == 0:  # a line longer than the block: read on
                    rest = text
                    continue
                rest = text[cut:]
            else:
                cut = len(text)
            start = 0
            while skip_lines and start < cut:
                newline = text.find(b"\n", start, cut)
                start = cut if newline < 0 else newline + 1
                skip_lines, line = skip_lines - 1, line + 1
            if start < cut:
                lines = text.count(b"\n", start, cut) + (0 if text[cut - 1 : cut] == b"\n" else 1)
                yield TextBlock(pa.py_buffer(text).slice(start, cut - start), path, line, raw.tell())
                line += lines


def iter_text_blocks(path: Path, *, block_bytes: int = DEFAULT_BLOCK_BYTES, skip_lines: int = 0) -> Iterator[TextBlock]:
    """Blocks of whole lines of ``path`` after its first ``skip_lines`` lines, read one block ahead.

    Memory: the block being used plus the one read ahead (about ``2 * block_bytes``).
    """
    if path.stat().st_size == 0:
        raise DataFormatError(path, None, None, "the file is empty")
    return _read_ahead(_blocks(path, block_bytes, skip_lines))


_DONE = object()


def _read_ahead(blocks: Iterator[TextBlock]) -> Iterator[TextBlock]:
    """Run ``blocks`` on a thread, exactly one block ahead of the consumer (reading and gunzip release
    the GIL): the next block is read only once the consumer has taken the previous one."""
    items: queue.Queue = queue.Queue()
    may_read = threading.Semaphore(1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for block in blocks:
                items.put(block)
                del block
                while not may_read.acquire(timeout=0.1):
                    if stop.is_set():
                        return
            items.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            items.put(exc)

    may_read.acquire()  # the producer's first block needs no permission
    thread = threading.Thread(target=produce, name="crossadapt-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            may_read.release()  # read the next block while this one is being used
            yield item
            del item
    finally:
        stop.set()
        may_read.release()
        thread.join()
