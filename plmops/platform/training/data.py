"""The resumable training data stream: corpus shards → shuffled rows → examples → model-ready batches.

Two layers, each with `state_dict()` / `load_state_dict()`:

- `ShuffledRows` reads a corpus version's Parquet shards one row group at a time (never the corpus
  whole), in a shard order drawn per epoch from the seed, keeps this rank's rows (position in the
  epoch's order modulo world size) and mixes them through a shuffle buffer. Its state is indices only:
  epoch, shard and row cursors, the buffer as (shard, row) references and a count of random draws, so
  a checkpoint stays small and a resumed stream re-reads the buffered rows by reference.
- `TrainingStream` draws `chunk_rows` rows at a time, encodes them (`BatchMaker.encode`: documents in
  windows, or sentence-order pairs with `BatchConfig.sop`), packs them (`BatchMaker.rows`) and cuts the
  rows into batches of `batch_size` for the `BatchMaker`. Encoding and packing are pure functions of a
  chunk, so the position is (the row stream's state before the chunk the next packed row comes from,
  packed rows of it already used): resuming replays that chunk and skips what was used, which yields
  bit-for-bit the batches the uninterrupted stream would have.

`MixedRows` mixes the rows of several languages (one `ShuffledRows` each); `LanguageBatches` instead
keeps every batch to one language (CINO's fast MLM) and adds that language's `vocab_subset`.

Randomness is counter-based (numpy generators seeded by (seed, rank, block) or (seed, epoch)), so no
generator state needs saving except the batch maker's torch generator (a tensor).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from plmops.platform.pretraining.batching import BatchConfig, BatchMaker, Example, SopExample
from plmops.platform.pretraining.macbert import SimilarTokens

COLUMNS = ("text", "word_offsets", "lang")
Row = dict[str, Any]
Ref = tuple[int, int]  # (index into the shard list, row within that shard)
_DRAW_BLOCK = 4096


@dataclass(frozen=True)
class StreamConfig:
    """How corpus rows become batches (the objective and max_len live in `BatchConfig`)."""

    batch_size: int = 32  # packed rows per batch
    shuffle_buffer: int = 10_000
    chunk_rows: int = 2048  # corpus rows encoded and packed together
    epochs: int | None = None  # None: cycle forever (count steps in the trainer)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "shuffle_buffer", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"StreamConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"StreamConfig.epochs must be >= 1 or None, got {self.epochs}")


@dataclass(frozen=True)
class Holdout:
    """A held-out slice of a corpus version: each row is in it with probability `fraction`, decided by a
    hash of (seed, shard path, row), so streams over any subset of the shards (one per language, say)
    agree on it without storing a list, whatever the batch size, shuffle or number of ranks."""

    fraction: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"Holdout.fraction must lie in (0, 1), got {self.fraction}")

    def mask(self, shard_path: str, num_rows: int) -> np.ndarray:
        """True for the held-out rows of the shard at `shard_path`."""
        key = int.from_bytes(hashlib.sha256(shard_path.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, key]).random(num_rows) < self.fraction


def _table_rows(table: pa.Table, where: str) -> list[Row]:
    """Arrow rows → encode's row dicts; word spans as lists of [start, end] (encode flattens lists
    fastest), converted in one call and sliced per row."""
    offsets = table.column("word_offsets").combine_chunks()
    if offsets.null_count:
        raise ValueError(f"{where}: word_offsets is null in {offsets.null_count} rows")
    ends = np.cumsum(pc.list_value_length(offsets).to_numpy(zero_copy_only=False)).tolist()
    spans = offsets.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, 2).tolist()
    per_row = [spans[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    texts = table.column("text").to_pylist()
    langs = table.column("lang").to_pylist() if "lang" in table.column_names else [None] * len(texts)
    return [{"text": t, "word_offsets": s, "lang": lang} for t, s, lang in zip(texts, per_row, langs)]


class _Shard:
    """One Parquet shard: its row groups' extents, and reads of whole row groups."""

    def __init__(self, path: str, filesystem: pafs.FileSystem | None) -> None:
        self.path = path
        self._filesystem = filesystem
        meta = self._file().metadata
        names = meta.schema.to_arrow_schema().names
        missing = [c for c in ("text", "word_offsets") if c not in names]
        if missing:
            raise ValueError(f"shard {path}: no column {missing} (is it a corpus version shard?)")
        self.columns = [c for c in COLUMNS if c in names]
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.group_start = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.num_rows = int(self.group_start[-1])

    def _file(self) -> pq.ParquetFile:
        if self._filesystem is None:
            return pq.ParquetFile(self.path)
        return pq.ParquetFile(self._filesystem.open_input_file(self.path))

    def group_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.group_start, rows, side="right") - 1

    def groups_from(self, row: int) -> list[int]:
        """The row groups holding rows `row` onwards."""
        first = int(self.group_of(np.array([row]))[0])
        return list(range(first, len(self.group_start) - 1)) if row < self.num_rows else []

    def read(
        self, groups: Sequence[int], columns: Sequence[str] | None = None
    ) -> Iterator[tuple[int, pa.Table]]:
        """(first row, table) of each row group asked for (all corpus columns unless named), one file
        handle for all."""
        file = self._file()
        for g in groups:
            yield int(self.group_start[g]), file.read_row_group(g, columns=list(columns or self.columns))


class ShuffledRows:
    """This rank's corpus rows, in seeded shuffled order, over one or more epochs.

    Order: per epoch the shards are permuted (seed, epoch); rows keep file order within a shard; a row
    at position p of that epoch order belongs to rank p % world_size (every rank reads every shard and
    drops the others' rows, so ranks are disjoint and together cover the epoch). This rank's rows then
    pass through a shuffle buffer of `buffer_size`; the buffer carries across epochs and drains at the end.
    With a `holdout`, `part="train"` skips its rows and `part="held_out"` reads only them.
    Yields ((shard index, row), row dict).
    """

    def __init__(
        self,
        shards: Sequence[str],
        filesystem: pafs.FileSystem | None = None,
        *,
        seed: int = 0,
        buffer_size: int = 10_000,
        epochs: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        holdout: Holdout | None = None,
        part: Literal["train", "held_out"] = "train",
    ) -> None:
        if not shards:
            raise ValueError("ShuffledRows needs at least one shard path")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        if buffer_size < 1:
            raise ValueError(f"ShuffledRows: buffer_size must be >= 1, got {buffer_size}")
        if part not in ("train", "held_out") or (part == "held_out" and holdout is None):
            raise ValueError(f"ShuffledRows: part must be 'train' or 'held_out' (which needs a holdout), got {part!r}")
        self.shards = [_Shard(str(p), filesystem) for p in shards]
        self.holdout, self.part = holdout, part
        self._masks: dict[int, np.ndarray] = {}
        self.seed, self.buffer_size, self.epochs = seed, buffer_size, epochs
        self.rank, self.world_size = rank, world_size
        self._sizes = np.array([s.num_rows for s in self.shards], dtype=np.int64)
        self._blocks: dict[int, np.ndarray] = {}
        self._epoch, self._shard, self._row, self._draws = 0, 0, 0, 0
        self._buffer: list[tuple[Ref, Row]] = []

    def order(self, epoch: int) -> np.ndarray:
        """Shard indices in the order epoch `epoch` reads them."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))

    def _draw(self, n: int) -> int:
        """A uniform index below n, the `draws`-th of this rank's counter-based sequence."""
        block, at = divmod(self._draws, _DRAW_BLOCK)
        if block not in self._blocks:
            self._blocks = {block: np.random.default_rng([self.seed, self.rank, block]).random(_DRAW_BLOCK)}
        self._draws += 1
        return int(self._blocks[block][at] * n)

    def _incoming(self) -> Iterator[tuple[Ref, Row]]:
        """This rank's rows from the cursor on; the cursor passes a row before it is handed out."""
        while self.epochs is None or self._epoch < self.epochs:
            order = self.order(self._epoch)
            yielded = self._row > 0 or self._shard > 0  # resumed mid-epoch: rows were found before
            while self._shard < len(order):
                index = int(order[self._shard])
                shard, start = self.shards[index], self._row
                epoch_offset = int(self._sizes[order[: self._shard]].sum())
                for first, table in shard.read(shard.groups_from(start)):
                    rows = np.arange(max(start, first), first + table.num_rows)
                    mine = self._kept(index, rows[(epoch_offset + rows) % self.world_size == self.rank])
                    where = f"shard {shard.path} rows {first}..{first + table.num_rows}"
                    picked = _table_rows(table.take(pa.array(mine - first)), where)
                    for row, data in zip(mine.tolist(), picked):
                        self._row = row + 1
                        yielded = True
                        yield (index, row), data
                self._shard, self._row = self._shard + 1, 0
            if not yielded:
                raise ValueError(
                    f"ShuffledRows: no {self.part} rows for rank {self.rank} of {self.world_size} in "
                    f"{len(self.shards)} shard(s) starting {self.shards[0].path}: too few rows to split"
                )
            self._epoch, self._shard = self._epoch + 1, 0

    def _kept(self, shard: int, rows: np.ndarray) -> np.ndarray:
        """The rows of this part: all without a holdout, else those the holdout's mask puts on this side."""
        if self.holdout is None:
            return rows
        if shard not in self._masks:
            self._masks[shard] = self.holdout.mask(self.shards[shard].path, self.shards[shard].num_rows)
        held = self._masks[shard][rows]
        return rows[held if self.part == "held_out" else ~held]

    def __iter__(self) -> Iterator[tuple[Ref, Row]]:
        for item in self._incoming():
            if len(self._buffer) < self.buffer_size:
                self._buffer.append(item)
                continue
            j = self._draw(len(self._buffer))
            out, self._buffer[j] = self._buffer[j], item
            yield out
        while self._buffer:
            j = self._draw(len(self._buffer))
            out, self._buffer[j] = self._buffer[j], self._buffer[-1]
            self._buffer.pop()
            yield out

    def state_dict(self) -> dict[str, Any]:
        refs = torch.tensor([ref for ref, _ in self._buffer], dtype=torch.int64).reshape(-1, 2)
        return {
            "epoch": self._epoch,
            "shard": self._shard,
            "row": self._row,
            "draws": self._draws,
            "buffer": refs,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_shards": len(self.shards),
            "holdout": self._holdout_key(),
        }

    def _holdout_key(self) -> str:
        return "none" if self.holdout is None else f"{self.part}:{self.holdout.fraction!r}:{self.holdout.seed}"

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position; the buffered rows are read back from their shards by reference."""
        mine = {
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_shards": len(self.shards),
            "holdout": self._holdout_key(),
        }
        differ = {k: (state.get(k, "none"), v) for k, v in mine.items() if state.get(k, "none") != v}
        if differ:
            raise ValueError(
                f"ShuffledRows.load_state_dict: state from another stream, (saved, here): {differ}"
            )
        refs = np.asarray(state["buffer"], dtype=np.int64).reshape(-1, 2)
        self._epoch, self._shard, self._row = int(state["epoch"]), int(state["shard"]), int(state["row"])
        self._draws = int(state["draws"])
        self._buffer = list(zip(map(tuple, refs.tolist()), self._fetch(refs)))

    def _fetch(self, refs: np.ndarray) -> list[Row]:
        """Rows by (shard, row) reference, reading each needed row group once."""
        out: list[Row | None] = [None] * len(refs)
        for index in np.unique(refs[:, 0]).tolist():
            if not 0 <= index < len(self.shards):
                raise ValueError(
                    f"ShuffledRows.load_state_dict: buffer names shard {index} of {len(self.shards)}"
                )
            shard, at = self.shards[index], np.flatnonzero(refs[:, 0] == index)
            rows = refs[at, 1]
            if rows.min() < 0 or rows.max() >= shard.num_rows:
                raise ValueError(f"ShuffledRows.load_state_dict: row out of range for shard {shard.path}")
            groups = shard.group_of(rows)
            needed = np.unique(groups).tolist()
            for g, (first, table) in zip(needed, shard.read(needed)):
                sel = at[groups == g]
                picked = _table_rows(table.take(pa.array(refs[sel, 1] - first)), f"shard {shard.path}")
                for i, row in zip(sel.tolist(), picked):
                    out[i] = row
        return out  # type: ignore[return-value]


class LanguageDraws:
    """A reproducible sequence of languages drawn with `probs`, resumable from a count of draws.

    Counter-based: block b of draws comes from a generator seeded by (seed, b), so the sequence depends
    on nothing but (probs, seed) and a position is one integer.
    """

    def __init__(self, probs: Mapping[str, float], seed: int = 0) -> None:
        weights = np.array(list(probs.values()), dtype=np.float64)
        if not probs or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
            raise ValueError(f"language probs must be >= 0 and sum to 1, got {dict(probs)}")
        self.languages, self.seed = list(probs), seed
        self._cumulative = np.cumsum(weights)
        self.draws = 0

    def __iter__(self) -> Iterator[str]:
        """The language of every draw from the current one on, a block of draws at a time."""
        while True:
            block, at = divmod(self.draws, _DRAW_BLOCK)
            uniform = np.random.default_rng([self.seed, block]).random(_DRAW_BLOCK)
            picks = np.searchsorted(self._cumulative, uniform, side="right")
            for i in np.minimum(picks, len(self.languages) - 1)[at:].tolist():
                self.draws += 1
                yield self.languages[i]


def _same_languages(kind: str, streams: Mapping[str, Any], probs: Mapping[str, float]) -> None:
    if set(streams) != set(probs) or not streams:
        raise ValueError(
            f"{kind}: streams {sorted(streams)} and probs {sorted(probs)} must name the same languages"
        )


def _check_saved_languages(kind: str, state: dict[str, Any], languages: Sequence[str]) -> None:
    if "streams" not in state:
        raise ValueError(
            f"{kind}.load_state_dict: state from another kind of stream (keys {sorted(state)})"
        )
    if set(state["streams"]) != set(languages):
        raise ValueError(
            f"{kind}.load_state_dict: saved languages {sorted(state['streams'])}, here {list(languages)}"
        )


class MixedRows:
    """CINO-style language mixing: every row comes from a language drawn with `probs`.

    `streams` maps a language to its own `ShuffledRows` (one per language's shards); get `probs` from
    `pretraining.cino.sampling_probs` over the manifest's per-language counts, so low-resource languages
    are seen more than their share. The draws are counter-based on `seed`, so the mix is reproducible
    and resumes from a count. Sub-streams should cycle (epochs=None): the mix ends when a drawn one ends.
    Yields ((language, shard, row), row dict).
    """

    def __init__(
        self, streams: Mapping[str, ShuffledRows], probs: Mapping[str, float], *, seed: int = 0
    ) -> None:
        _same_languages("MixedRows", streams, probs)
        self.streams, self.seed = dict(streams), seed
        self._draws = LanguageDraws({lang: probs[lang] for lang in self.streams}, seed)

    def __iter__(self) -> Iterator[tuple[tuple, Row]]:
        sources = {lang: iter(stream) for lang, stream in self.streams.items()}
        for lang in self._draws:
            item = next(sources[lang], None)
            if item is None:
                return
            (shard, row), data = item
            yield (lang, shard, row), data

    def state_dict(self) -> dict[str, Any]:
        streams = {lang: stream.state_dict() for lang, stream in self.streams.items()}
        return {"draws": self._draws.draws, "streams": streams}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_saved_languages("MixedRows", state, list(self.streams))
        for lang, stream in self.streams.items():
            stream.load_state_dict(state["streams"][lang])
        self._draws.draws = int(state["draws"])


def part_texts(
    shards: Sequence[str],
    filesystem: pafs.FileSystem | None = None,
    *,
    holdout: Holdout | None = None,
    part: Literal["train", "held_out"] = "train",
) -> Iterator[list[str]]:
    """The texts of one side of a holdout (every row without one), a row group at a time in file order:
    what a language's vocabulary subset is counted over, reading the text column alone."""
    for path in shards:
        shard = _Shard(str(path), filesystem)
        held = holdout.mask(shard.path, shard.num_rows) if holdout is not None else None
        for first, table in shard.read(range(len(shard.group_start) - 1), columns=["text"]):
            texts = table.column("text").to_pylist()
            if held is not None:
                side = held[first : first + len(texts)]
                texts = [t for t, h in zip(texts, side.tolist()) if h == (part == "held_out")]
            yield texts


class TrainingStream:
    """Model-ready batches from a row stream, resumable bit-for-bit from `state_dict()`.

    `rows` is a `ShuffledRows` (or a `MixedRows` of them), one per data-parallel process; `from_shards`
    builds the common case. Iterating restarts from the last position loaded or reached: `state_dict()`
    after k batches, loaded into a new stream built with the same arguments, makes it yield batch k+1
    onwards exactly as the first stream does.
    """

    def __init__(
        self,
        rows: ShuffledRows | MixedRows,
        tokenizer: Any,
        batch_config: BatchConfig,
        *,
        batch_size: int = 32,
        chunk_rows: int = 2048,
        similar: SimilarTokens | None = None,
    ) -> None:
        if batch_size < 1 or chunk_rows < 1:
            raise ValueError(
                f"TrainingStream: batch_size and chunk_rows must be >= 1, got {batch_size}, {chunk_rows}"
            )
        self.rows, self.tokenizer = rows, tokenizer
        self.batch_size, self.chunk_rows = batch_size, chunk_rows
        self.maker = BatchMaker.from_tokenizer(tokenizer, batch_config, similar)
        self._anchor = self.rows.state_dict()  # the row stream before the chunk of the next packed row
        self._skip = 0  # packed rows of that chunk already batched
        self._rows_at_anchor = True

    @classmethod
    def from_shards(
        cls,
        shards: Sequence[str],
        tokenizer: Any,
        batch_config: BatchConfig,
        config: StreamConfig = StreamConfig(),
        *,
        filesystem: pafs.FileSystem | None = None,
        rank: int = 0,
        world_size: int = 1,
        similar: SimilarTokens | None = None,
        holdout: Holdout | None = None,
        part: Literal["train", "held_out"] = "train",
    ) -> TrainingStream:
        """The stream over one corpus version's shards (any languages, in proportion); with a
        `holdout`, over its training part or (`part="held_out"`) the held-out slice."""
        rows = ShuffledRows(
            shards,
            filesystem,
            seed=config.seed,
            buffer_size=config.shuffle_buffer,
            epochs=config.epochs,
            rank=rank,
            world_size=world_size,
            holdout=holdout,
            part=part,
        )
        return cls(
            rows,
            tokenizer,
            batch_config,
            batch_size=config.batch_size,
            chunk_rows=config.chunk_rows,
            similar=similar,
        )

    def _chunk(self, source: Iterator[tuple[tuple, Row]]) -> list[list[Example | SopExample]] | None:
        """The next chunk_rows rows, encoded and packed; None once the row stream is exhausted."""
        rows = [row for _, (_, row) in zip(range(self.chunk_rows), source)]
        if not rows:
            return None
        return self.maker.rows(self.maker.encode(rows, self.tokenizer))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self._rows_at_anchor:
            self.rows.load_state_dict(self._anchor)
        self._rows_at_anchor = False
        source = iter(self.rows)
        chunks: deque[tuple[dict[str, Any], list[list[Example | SopExample]]]] = deque()
        skip, size, exhausted = self._skip, self.batch_size, False
        while True:
            while not exhausted and sum(len(c) for _, c in chunks) - skip < size:
                state = self.rows.state_dict()
                packed = self._chunk(source)
                exhausted = packed is None
                if packed:
                    chunks.append((state, packed))
            if not chunks:
                return
            batch: list[list[Example | SopExample]] = []
            while chunks and len(batch) < size:
                packed = chunks[0][1]
                take = min(size - len(batch), len(packed) - skip)
                batch += packed[skip : skip + take]
                skip += take
                if skip == len(packed):
                    chunks.popleft()
                    skip = 0
            self._anchor = chunks[0][0] if chunks else self.rows.state_dict()
            self._skip = skip
            yield self.maker(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self._anchor, "skip": self._skip, "generator": self.maker.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a position from `state_dict()`; the next iteration starts there."""
        self.rows.load_state_dict(state["rows"])  # fails now, not at the first batch, on a foreign state
        self._anchor, self._skip, self._rows_at_anchor = state["rows"], int(state["skip"]), True
        self.maker.generator.set_state(state["generator"])


def _language_seed(seed: int, lang: str) -> int:
    """A batch-maker seed per language, so languages do not share one masking sequence."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{lang}".encode()).digest()[:4], "little")


def _subset(ids: torch.Tensor | Sequence[int] | np.ndarray, lang: str) -> torch.Tensor:
    subset = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if subset.dim() != 1 or subset.numel() == 0 or bool((subset[1:] <= subset[:-1]).any()):
        raise ValueError(f"LanguageBatches: vocab subset of {lang!r} must be non-empty, 1-D, sorted, unique")
    return subset


class LanguageBatches:
    """CINO's fast-MLM batches: every batch holds rows of one language and carries its `vocab_subset`.

    Each language has its own `TrainingStream` (its own rows, packing and masking); a language is drawn
    per batch with `probs` (CINO's p_i ~ n_i^alpha, `cino.sampling_probs`) and that language's stream
    gives the batch, to which `vocab_subset` (sorted ids the language's training rows use, plus the
    special ids: `cino.group_vocab`) is added, so the MLM head scores only those rows of the output
    embedding. The draws are counter-based on `seed` and the same on every rank: give every rank the same
    seed, and the ranks' batches at one step are all of one language. Resumes bit for bit like
    `TrainingStream`: the state is the draw count and each language stream's state. Ends when a drawn
    language's stream ends (let them cycle: epochs None).
    """

    def __init__(
        self,
        streams: Mapping[str, TrainingStream],
        probs: Mapping[str, float],
        vocab_subsets: Mapping[str, torch.Tensor | Sequence[int]],
        *,
        seed: int = 0,
    ) -> None:
        _same_languages("LanguageBatches", streams, probs)
        missing = sorted(set(streams) - set(vocab_subsets))
        if missing:
            raise ValueError(f"LanguageBatches: no vocab subset for {missing}")
        self.streams = dict(streams)
        self.vocab_subsets = {lang: _subset(vocab_subsets[lang], lang) for lang in self.streams}
        self._draws = LanguageDraws({lang: probs[lang] for lang in self.streams}, seed)

    @classmethod
    def from_rows(
        cls,
        rows: Mapping[str, ShuffledRows],
        probs: Mapping[str, float],
        vocab_subsets: Mapping[str, torch.Tensor | Sequence[int]],
        tokenizer: Any,
        batch_config: BatchConfig,
        *,
        batch_size: int = 32,
        chunk_rows: int = 2048,
        seed: int = 0,
    ) -> LanguageBatches:
        """One `TrainingStream` per language over its rows, each maker seeded from (config seed, language)."""
        streams = {
            lang: TrainingStream(
                language_rows,
                tokenizer,
                dataclasses.replace(batch_config, seed=_language_seed(batch_config.seed, lang)),
                batch_size=batch_size,
                chunk_rows=chunk_rows,
            )
            for lang, language_rows in rows.items()
        }
        return cls(streams, probs, vocab_subsets, seed=seed)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        sources = {lang: iter(stream) for lang, stream in self.streams.items()}
        for lang in self._draws:
            batch = next(sources[lang], None)
            if batch is None:
                return
            yield {**batch, "vocab_subset": self.vocab_subsets[lang]}

    def state_dict(self) -> dict[str, Any]:
        streams = {lang: stream.state_dict() for lang, stream in self.streams.items()}
        return {"draws": self._draws.draws, "streams": streams}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a position from `state_dict()`; the next iteration starts there."""
        _check_saved_languages("LanguageBatches", state, list(self.streams))
        for lang, stream in self.streams.items():
            stream.load_state_dict(state["streams"][lang])
        self._draws.draws = int(state["draws"])
