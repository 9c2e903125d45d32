"""One ``.npy`` file, memory-mapped read-only, whose pages this process lets go of.

numpy's own format (``numpy.lib.format`` reads the header) over a plain ``mmap``: the mapping is
shared with every other process that maps the file (all ranks of a node read the same page
cache), and nothing is copied into the heap. We hold the ``mmap`` object ourselves (rather than
``np.load(mmap_mode='r')``, whose mapping is private) because every page a process touches
through a mapping counts in its RSS until it is unmapped. Measured here (kernel 6.x, a 3 GB
set in the page cache): one random row touched maps about 1.7 MB (the page cache's large
folios are mapped whole), so 179 rows mapped 310 MB and 36k rows the whole 3.2 GB, although
nothing was copied. ``take`` therefore copies rows one at a time and unmaps the 2 MB window
around each (``madvise(MADV_DONTNEED)``: the page cache keeps the pages, the next touch is a
minor fault, not a disk read). Cost: ~22 us per row (46k rows/s on one core).
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from ...errors import DataError

WINDOW = 2 << 20  # unmapped around each row read: the largest folio the page cache maps (PMD)


def read_header(path: Path):
    """(shape, dtype, fortran_order, data offset, file size) of the ``.npy`` at ``path``;
    DataError (one line) if it is missing or not a ``.npy``."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            return shape, dtype, fortran, f.tell(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise DataError(f"{path} is missing; the generated set is incomplete: import it again "
                        "with `python tools/import_generated.py FILE.npz --out DIR`") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a .npy array ({str(exc)[:80]}); import the set again "
                        "with `python tools/import_generated.py FILE.npz --out DIR`") from None


class MappedArray:
    """A read-only memory map of one ``.npy`` file (``.array``: an ndarray over the pages)."""

    def __init__(self, path: Path):
        shape, dtype, fortran, offset, size = read_header(path)
        need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != need or fortran:
            why = "Fortran order" if fortran else f"{size} bytes where its header needs {need}"
            raise DataError(f"{path} is damaged ({why}); import the set again with "
                            "`python tools/import_generated.py FILE.npz --out DIR`")
        self.path, self.shape, self.dtype = Path(path), tuple(shape), dtype
        with open(path, "rb") as f:  # the mapping outlives the descriptor
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        # Random access: no read-ahead of neighbouring rows into the page cache.
        self._map.madvise(mmap.MADV_RANDOM)
        self.array = np.ndarray(self.shape, dtype, buffer=self._map, offset=offset)
        self._offset = offset

    def take(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Copy ``self.array[rows]`` into ``out`` without keeping any of it mapped."""
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        size = len(self._map)
        for i, r in enumerate(rows.tolist()):
            out[i] = self.array[r]
            start = self._offset + r * row_bytes
            lo = start // WINDOW * WINDOW
            hi = min(size, -(-(start + row_bytes) // WINDOW) * WINDOW)
            self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def release(self) -> None:
        """Unmap every page this process touched (they stay in the page cache). Cost: one
        madvise over the mapping, which walks page tables only where pages are mapped."""
        self._map.madvise(mmap.MADV_DONTNEED)
