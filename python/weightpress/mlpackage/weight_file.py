"""weight.bin: MIL blob storage version 2, read and validated without coremltools.

Layout (docs/formats.md, "weight.bin"):
a 64-byte header (u32 count, u32 version = 2, reserved zeros), then `count` blobs, each at
a 64-byte-aligned offset: 64 bytes of metadata (u32 sentinel 0xDEADBEEF, u32 dtype, u64 size
in bytes, u64 absolute data offset = metadata offset + 64, u64 padding bits for sub-byte
types, reserved zeros) followed by the data. The program refers to a blob by the offset of
its metadata.
"""

from __future__ import annotations

import collections
import mmap
import os
import struct
import sys
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import WeightFileError

HEADER_SIZE = 64
_MADV_POPULATE_READ = 22  # linux/mman.h; not in Python's mmap module (older kernels: EINVAL, ignored)
METADATA_SIZE = 64
ALIGNMENT = 64
SENTINEL = 0xDEADBEEF
VERSION = 2

# MILBlob BlobDataType -> (name, bits per element, numpy storage dtype of the raw elements)
DTYPES = {
    1: ("float16", 16, np.float16),
    2: ("float32", 32, np.float32),
    3: ("uint8", 8, np.uint8),
    4: ("int8", 8, np.int8),
    5: ("bfloat16", 16, np.uint16),
    6: ("int16", 16, np.int16),
    7: ("uint16", 16, np.uint16),
    8: ("int4", 4, None),
    9: ("uint1", 1, None),
    10: ("uint2", 2, None),
    11: ("uint4", 4, None),
    12: ("uint3", 3, None),
    13: ("uint6", 6, None),
    14: ("int32", 32, np.int32),
    15: ("uint32", 32, np.uint32),
}
DTYPE_CODES = {name: code for code, (name, _, _) in DTYPES.items()}

_HEADER = struct.Struct("<II56x")
_METADATA = struct.Struct("<IIQQQ32x")


def align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass(frozen=True)
class Blob:
    offset: int  # of the metadata, as the program stores it
    dtype: str
    nbytes: int
    data_offset: int
    padding_bits: int

    @property
    def end(self) -> int:
        return self.data_offset + self.nbytes

    def element_count(self) -> int:
        bits = DTYPES[DTYPE_CODES[self.dtype]][1]
        return (self.nbytes * 8 - self.padding_bits) // bits


class WeightFileReader:
    """Random access to the blobs of one weight.bin, every header checked on first touch.

    The file is memory-mapped: a blob's data is read in place from the page cache (no copy,
    no fresh buffer to fault in), `prefetch` asks the kernel to read a blob ahead, and
    `release` drops a finished blob's pages from this process (the page cache keeps them),
    so resident memory stays at the blobs in use however large the file is. The file must
    not be truncated while it is read (every size was validated against it on open)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise WeightFileError(f"cannot open {path}: {exc.strerror}") from None
        self.size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, HEADER_SIZE, 0)
        if len(head) < HEADER_SIZE:
            os.close(self._fd)
            raise WeightFileError(f"{path}: truncated header ({self.size} bytes)")
        self.count, self.version = _HEADER.unpack(head)
        if self.version != VERSION:
            os.close(self._fd)
            raise WeightFileError(f"{path}: unsupported blob storage version {self.version} (expected {VERSION})")
        self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._map)
        self._cache: dict = {}

    def close(self) -> None:
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        self._view.release()
        try:
            self._map.close()
        except BufferError:  # arrays still view the mapping: it closes when the last goes
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _advise(self, blob: Blob, advice_name: str) -> None:
        advice = getattr(mmap, advice_name, None) if advice_name != "MADV_POPULATE_READ" else \
            (_MADV_POPULATE_READ if sys.platform.startswith("linux") else None)
        if advice is None or not hasattr(self._map, "madvise") or blob.nbytes == 0:
            return
        start = blob.data_offset - blob.data_offset % mmap.PAGESIZE
        try:
            self._map.madvise(advice, start, blob.end - start)
        except (OSError, ValueError):  # advice only
            pass

    def prefetch(self, blob: Blob) -> None:
        """Starts reading a blob the caller will need soon (cold files; free when cached)."""
        self._advise(blob, "MADV_WILLNEED")

    def populate(self, blob: Blob) -> None:
        """Maps a blob's cached pages into this process in one call (Linux 5.14+), much
        cheaper than faulting them in page by page as a kernel first touches them."""
        self._advise(blob, "MADV_POPULATE_READ")

    def release(self, blob: Blob) -> None:
        """Drops a finished blob's pages from this process's memory (they stay cached)."""
        self._advise(blob, "MADV_DONTNEED")

    def blob(self, offset: int) -> Blob:
        """The blob whose metadata starts at `offset`, validated."""
        cached = self._cache.get(offset)
        if cached is not None:
            return cached
        where = f"{self.path}: blob at offset {offset}"
        if offset < HEADER_SIZE or offset % ALIGNMENT:
            raise WeightFileError(f"{where}: not a 64-byte-aligned blob offset")
        if offset + METADATA_SIZE > self.size:
            raise WeightFileError(f"{where}: metadata beyond the end of the file ({self.size} bytes); truncated?")
        sentinel, code, nbytes, data_offset, padding = _METADATA.unpack(os.pread(self._fd, METADATA_SIZE, offset))
        if sentinel != SENTINEL:
            raise WeightFileError(f"{where}: bad sentinel 0x{sentinel:08X} (expected 0xDEADBEEF); corrupt file")
        if code not in DTYPES:
            raise WeightFileError(f"{where}: unknown data type {code}")
        if data_offset != offset + METADATA_SIZE:
            raise WeightFileError(f"{where}: data offset {data_offset} does not follow its metadata")
        if data_offset + nbytes > self.size:
            raise WeightFileError(f"{where}: {nbytes} bytes of data run past the end of the file "
                                  f"({self.size} bytes); truncated?")
        name, bits, _ = DTYPES[code]
        if padding >= 8 or (bits >= 8 and padding):
            raise WeightFileError(f"{where}: invalid padding of {padding} bits for {name}")
        blob = Blob(offset, name, nbytes, data_offset, padding)
        self._cache[offset] = blob
        return blob

    def read_bytes(self, blob: Blob) -> memoryview:
        """The blob's data in place (a read-only view of the mapping)."""
        return self._view[blob.data_offset:blob.end]

    def read_array(self, offset: int, dtype: str, count: int) -> np.ndarray:
        """The elements of a byte-sized blob as a numpy array, checked against the type and
        element count the program declares."""
        blob = self.blob(offset)
        if blob.dtype != dtype:
            raise WeightFileError(f"{self.path}: blob at {offset} holds {blob.dtype}, the program expects {dtype}")
        storage = DTYPES[DTYPE_CODES[dtype]][2]
        if storage is None:
            raise WeightFileError(f"{self.path}: blob at {offset}: sub-byte {dtype} is read packed (read_bytes)")
        if blob.element_count() != count:
            raise WeightFileError(f"{self.path}: blob at {offset} holds {blob.element_count()} {dtype} values, "
                                  f"the program expects {count}")
        return np.frombuffer(self.read_bytes(blob), dtype=storage)

    def walk(self):
        """Every blob in file order (count from the header), each validated."""
        offset = HEADER_SIZE
        for _ in range(self.count):
            blob = self.blob(offset)
            yield blob
            offset = align(blob.end)


class WeightFileWriter:
    """Appends blobs to a new weight.bin; the header's count is written on close.

    Offsets are assigned when a blob is handed over (the program needs them at once); the
    bytes are written by a background thread, so writing overlaps the next weight's
    compression. At most `queue_bytes` wait to be written (a handed-over buffer must not
    change until then); a write error (a full disk) is raised by the next call."""

    def __init__(self, path: str, queue_bytes: int = 64 << 20):
        self.path = path
        self._f = open(path, "wb", buffering=0)
        self.count = 0
        self.offset = HEADER_SIZE
        self._limit = max(1, queue_bytes)
        self._queue: collections.deque = collections.deque()
        self._queued = 0
        self._error: BaseException | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name="weightpress-weight-writer", daemon=True)
        self._thread.start()
        self._put(b"\0" * HEADER_SIZE)

    def write(self, dtype: str, data, element_count: int, done=None) -> int:
        """Queues one blob (`data`: any contiguous buffer, written without a copy); returns its
        metadata offset (what the program stores). done(), if given, runs in the writer thread
        once the bytes are written."""
        data = memoryview(data).cast("B")
        code = DTYPE_CODES[dtype]
        bits = DTYPES[code][1]
        padding = (8 - element_count * bits % 8) % 8 if bits < 8 else 0
        offset = align(self.offset)
        head = b"\0" * (offset - self.offset) + _METADATA.pack(SENTINEL, code, len(data), offset + METADATA_SIZE,
                                                              padding)
        self._put(head)
        self._put(data, done)
        self.offset = offset + METADATA_SIZE + len(data)
        self.count += 1
        return offset

    def _put(self, data, done=None) -> None:
        with self._cond:
            while self._error is None and self._queued > 0 and self._queued + len(data) > self._limit:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._queue.append((data, done))
            self._queued += len(data)
            self._cond.notify_all()

    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                data, done = self._queue[0]
            try:
                if self._error is None:
                    _write_all(self._f, data)
                    if done is not None:
                        done()
            except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread)
                with self._cond:
                    self._error = exc
            with self._cond:
                self._queue.popleft()
                self._queued -= len(data)
                self._cond.notify_all()

    def _finish(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def close(self) -> None:
        """Writes what is queued and the header; raises the writer thread's error, if any."""
        if self._f.closed:
            return
        try:
            self._finish()
            if self._error is not None:
                raise self._error
            self._f.seek(0)
            _write_all(self._f, _HEADER.pack(self.count, VERSION))
        finally:
            self._f.close()

    def abort(self) -> None:
        """Stops without writing what is queued (the output is being thrown away)."""
        if self._f.closed:
            return
        with self._cond:
            self._error = self._error or RuntimeError("weight file writer aborted")
            self._cond.notify_all()
        self._finish()
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()


# One write() of hundreds of MB stalls in the kernel's dirty-page throttling (measured on
# ext4: 900 MB in one call 3.0 s, in 8 MB calls 0.33 s), so blobs go out in pieces.
_WRITE_PIECE = 8 << 20


def _write_all(f, data) -> None:
    view = memoryview(data)
    while len(view):
        written = f.write(view[:_WRITE_PIECE])
        view = view[written:]
