"""weight.bin: MIL blob storage version 2, read and validated without coremltools.

Layout (docs/formats.md, "weight.bin"):
a 64-byte header (u32 count, u32 version = 2, reserved zeros), then `count` blobs, each at
a 64-byte-aligned offset: 64 bytes of metadata (u32 sentinel 0xDEADBEEF, u32 dtype, u64 size
in bytes, u64 absolute data offset = metadata offset + 64, u64 padding bits for sub-byte
types, reserved zeros) followed by the data. The program refers to a blob by the offset of
its metadata.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import WeightFileError

HEADER_SIZE = 64
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

    Reads with os.pread: no mapping of the whole file, so memory stays at the size of the
    blob being read however large the file is."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise WeightFileError(f"cannot open {path}: {exc.strerror}") from None
        self.size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, HEADER_SIZE, 0)
        if len(head) < HEADER_SIZE:
            raise WeightFileError(f"{path}: truncated header ({self.size} bytes)")
        self.count, self.version = _HEADER.unpack(head)
        if self.version != VERSION:
            raise WeightFileError(f"{path}: unsupported blob storage version {self.version} (expected {VERSION})")
        self._cache: dict = {}

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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

    def read_bytes(self, blob: Blob) -> bytes:
        data = os.pread(self._fd, blob.nbytes, blob.data_offset)
        if len(data) != blob.nbytes:
            raise WeightFileError(f"{self.path}: short read of blob at {blob.offset}")
        return data

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
    """Appends blobs to a new weight.bin; the header's count is written on close."""

    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "wb")
        self._f.write(b"\0" * HEADER_SIZE)
        self.count = 0
        self.offset = HEADER_SIZE

    def write(self, dtype: str, data: bytes, element_count: int) -> int:
        """Writes one blob; returns its metadata offset (what the program stores)."""
        code = DTYPE_CODES[dtype]
        bits = DTYPES[code][1]
        padding = (8 - element_count * bits % 8) % 8 if bits < 8 else 0
        offset = align(self.offset)
        if offset > self.offset:
            self._f.write(b"\0" * (offset - self.offset))
        self._f.write(_METADATA.pack(SENTINEL, code, len(data), offset + METADATA_SIZE, padding))
        self._f.write(data)
        self.offset = offset + METADATA_SIZE + len(data)
        self.count += 1
        return offset

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.seek(0)
        self._f.write(_HEADER.pack(self.count, VERSION))
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
