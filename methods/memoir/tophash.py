"""TopHash masks and the bit-packed database they are looked up in.

A mask is a set of ``k`` of the ``D`` down-projection input channels: the top-k channels (by magnitude) of a
prompt's aggregated activation, sent through one fixed random permutation. Two prompts about the same fact
pick mostly the same channels, so the overlap ``|m_q ∧ m_j| / k`` of their masks tells whether a query is
about a stored edit.

Storage is the part that grows with the stream: one mask is ``D`` bits, so masks are kept packed, 8 bytes
per 64 channels (``D = 1536`` → 192 bytes instead of 1,536 for a bool row). The database is laid out
word-major (``[words, capacity]`` of uint64): the overlap of one query with every stored mask is then, word
by word, one AND and one popcount over a contiguous run of N words, which numpy (≥ 2.0) does at memory
speed with ``bitwise_count``; older numpy falls back to a byte lookup table.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_WORD_BITS = 64
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
#: popcount of every byte value, for numpy versions without ``bitwise_count``
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
#: broadcast all queries at once while the [queries, words, masks] temporary stays this small
_BROADCAST_LIMIT = 1 << 22
#: below this many stored masks a scan is too short for threads to pay off
_THREADED_MIN = 1 << 17
_BIT_WEIGHTS = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)


def aggregate(
    activations: torch.Tensor, prompt_mask: torch.Tensor, mode: str, background: torch.Tensor | None
) -> torch.Tensor:
    """[B, D] float32 summary of each row's prompt positions; rows with no prompt token give NaN.

    ``mean_decentered`` removes the direction every prompt shares (the background mean), so the top-k picks
    what is specific to this prompt rather than channels that are large for any text.
    """
    acts = activations.float()
    weights = prompt_mask.to(acts.dtype)
    counts = weights.sum(dim=1, keepdim=True)
    if mode == "last":
        positions = torch.arange(prompt_mask.shape[1], device=prompt_mask.device)
        last = torch.where(prompt_mask, positions, -1).max(dim=1).values
        out = acts[torch.arange(acts.shape[0], device=acts.device), last.clamp(min=0)]
    else:
        out = torch.einsum("bt,btd->bd", weights, acts) / counts.clamp(min=1)
        if mode == "mean_decentered":
            if background is None:
                raise ValueError("mean_decentered aggregation needs a background mean")
            out = out - background.to(out.device, torch.float32)
    return torch.where(counts > 0, out, torch.full_like(out, float("nan")))


def top_k_masks(features: torch.Tensor, k: int, permutation: torch.Tensor) -> torch.Tensor:
    """[B, D] bool masks with exactly ``k`` bits: the permuted positions of the k largest |features|.

    The permutation decouples the memory's columns from the channels that decided the mask: an edit then
    writes into channels that other, unrelated prompts with similar top channels do not systematically use.
    ``topk`` breaks ties by index on both CPU and GPU, so the mask is a function of the values alone.
    """
    top = features.abs().topk(k, dim=-1).indices
    masks = torch.zeros(features.shape, dtype=torch.bool, device=features.device)
    return masks.scatter_(-1, permutation.to(features.device)[top], True)


def num_words(width: int) -> int:
    return (width + _WORD_BITS - 1) // _WORD_BITS


def pack(masks: torch.Tensor) -> np.ndarray:
    """[B, D] bool → [B, words] uint64 (bit i of channel 8·j + i in byte j, little-endian words)."""
    masks = masks.detach().to("cpu", torch.bool)
    rows, width = masks.shape
    padded = torch.zeros((rows, num_words(width) * _WORD_BITS), dtype=torch.bool)
    padded[:, :width] = masks
    packed = (padded.view(rows, -1, 8).to(torch.uint8) * _BIT_WEIGHTS).sum(dim=-1, dtype=torch.uint8)
    return np.ascontiguousarray(packed.numpy()).view("<u8")


def unpack(words: np.ndarray, width: int) -> torch.Tensor:
    """[B, words] uint64 → [B, D] bool; the inverse of :func:`pack`."""
    words = np.ascontiguousarray(words, dtype="<u8")
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    return torch.from_numpy(bits[:, :width].astype(np.bool_))


def _scan(data: np.ndarray, query: np.ndarray, total: np.ndarray, lo: int, hi: int) -> None:
    """Add ``|query ∧ mask|`` of masks ``lo:hi`` (columns of word-major ``data``) into ``total[lo:hi]``."""
    scratch, counts, span = np.empty(hi - lo, dtype=np.uint64), np.empty(hi - lo, dtype=np.uint8), total[lo:hi]
    for w in range(data.shape[0]):
        np.bitwise_and(data[w, lo:hi], query[w], out=scratch)
        _popcount(scratch, out=counts)
        np.add(span, counts, out=span, casting="unsafe")


def _scan_threads() -> int:
    """Threads for a large scan: torch's setting (which ``--threads`` sets), at most the machine's cores."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


@functools.lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="editkit-masks")


def _popcount(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(words, out=out)
    counts = _BYTE_POPCOUNT[words.view(np.uint8)].reshape(*words.shape, 8).sum(axis=-1, dtype=np.uint8)
    if out is not None:
        out[...] = counts
        return out
    return counts


class MaskDatabase:
    """The stored masks, bit-packed, with a vectorised best-overlap lookup.

    Exact duplicates are stored once (a dict of packed bytes → row): two edits with the same mask would be
    indistinguishable at lookup anyway, and the earlier row wins ties.
    """

    def __init__(self, width: int, capacity: int = 64):
        self.width = width
        self.words = num_words(width)
        self._data = np.zeros((self.words, max(1, capacity)), dtype=np.uint64)  # word-major
        self._size = 0
        self._index: dict[bytes, int] = {}

    def __len__(self) -> int:
        return self._size

    @property
    def bytes_per_mask(self) -> int:
        return self.words * 8

    def add(self, packed: np.ndarray) -> tuple[int, bool]:
        """Store one packed mask ([words] uint64); returns its row and whether it was new."""
        packed = np.ascontiguousarray(packed, dtype=np.uint64).reshape(self.words)
        key = packed.tobytes()
        if key in self._index:
            return self._index[key], False
        if self._size == self._data.shape[1]:
            grown = np.zeros((self.words, 2 * self._data.shape[1]), dtype=np.uint64)
            grown[:, : self._size] = self._data[:, : self._size]
            self._data = grown
        self._data[:, self._size] = packed
        self._index[key] = self._size
        self._size += 1
        return self._size - 1, True

    def extend(self, packed: np.ndarray) -> None:
        """Bulk-load rows (used when restoring a state or building a benchmark database)."""
        packed = np.ascontiguousarray(packed, dtype=np.uint64).reshape(-1, self.words)
        fresh: list[int] = []
        for i, row in enumerate(packed):
            key = row.tobytes()
            if key not in self._index:
                self._index[key] = self._size + len(fresh)
                fresh.append(i)
        need = self._size + len(fresh)
        if need > self._data.shape[1]:
            grown = np.zeros((self.words, max(need, 2 * self._data.shape[1])), dtype=np.uint64)
            grown[:, : self._size] = self._data[:, : self._size]
            self._data = grown
        self._data[:, self._size : need] = packed[fresh].T
        self._size = need

    def clear(self) -> None:
        self.__init__(self.width)

    def rows(self, index: np.ndarray | list[int]) -> np.ndarray:
        """[len(index), words] packed masks of the given rows."""
        return np.ascontiguousarray(self._data[:, np.asarray(index, dtype=np.int64)].T)

    def to_tensor(self) -> torch.Tensor:
        """[N, bytes_per_mask] uint8, row-major: the saved form (8 bytes per 64 channels)."""
        rows = np.ascontiguousarray(self._data[:, : self._size].T).view(np.uint8)
        return torch.from_numpy(rows.copy())

    def load_tensor(self, packed: torch.Tensor) -> None:
        if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.shape[1] != self.bytes_per_mask:
            raise ValueError(
                f"mask database must be uint8 [N, {self.bytes_per_mask}], not {packed.dtype} {tuple(packed.shape)}"
            )
        self.clear()
        self.extend(np.ascontiguousarray(packed.cpu().numpy()).view("<u8"))

    def overlaps(self, queries: np.ndarray) -> np.ndarray:
        """[Q, N] uint16: ``|q ∧ m_j|`` for every query and stored mask."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, self.words)
        n = self._size
        data = self._data[:, :n]
        if queries.shape[0] * self.words * n <= _BROADCAST_LIMIT:
            both = np.bitwise_and(data[None], queries[:, :, None])
            return _popcount(both).sum(axis=1, dtype=np.uint16)
        # one query at a time, one word at a time: temporaries of N words, no [words, N] copy. Past a few
        # hundred thousand masks the scan is bound by memory bandwidth, which one core does not saturate,
        # so the masks are split into contiguous column ranges scanned by parallel threads (numpy releases
        # the GIL inside each ufunc).
        out = np.zeros((queries.shape[0], n), dtype=np.uint16)
        parts = _scan_threads() if n >= _THREADED_MIN else 1
        bounds = np.linspace(0, n, parts + 1).astype(np.int64)
        spans = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        for qi, query in enumerate(queries):
            if len(spans) == 1:
                _scan(data, query, out[qi], *spans[0])
            else:
                for job in [_pool(parts).submit(_scan, data, query, out[qi], lo, hi) for lo, hi in spans]:
                    job.result()
        return out

    def best(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query, the stored row with the largest overlap (earliest on ties) and that overlap.

        With an empty database the row is -1 and the overlap 0.
        """
        queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, self.words)
        if self._size == 0:
            return np.full(len(queries), -1, dtype=np.int64), np.zeros(len(queries), dtype=np.int64)
        overlaps = self.overlaps(queries)
        rows = overlaps.argmax(axis=1)
        return rows.astype(np.int64), overlaps[np.arange(len(queries)), rows].astype(np.int64)
