"""Pretraining tasks: find the corpus version, get its tokenizer, build the data streams, save the model.

Where a pretraining run keeps its things, under the platform storage:

    tokenizers/<corpus>/<version>/<key>/      the WordPiece vocabulary trained on that version
    pretrain/<run>/checkpoints/               Trainer checkpoints (`latest`, step-NNNNNN/)
    pretrain/<run>/model/                     the final Hugging Face folder (model + tokenizer)
    pretrain/<run>/mlflow_run_id              so a resumed job logs into the run it began

`<run>` is a digest of the recipe and the corpus version: starting the same recipe again on the same
corpus continues where it stopped (`resume: auto`), and anything else gets a fresh folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.cache_policies import NONE
from pydantic import TypeAdapter
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from plmops.infra.settings import get_settings
from plmops.infra.storage import Storage, open_storage
from plmops.platform.pretraining import similar_words
from plmops.platform.pretraining.cino import LanguageStats, corpus_vocab, sampling_probs
from plmops.platform.pretraining.macbert import SimilarTokens
from plmops.platform.pretraining.masking import VocabInfo
from plmops.platform.tokenization import train_wordpiece
from plmops.platform.training.data import (
    Holdout,
    LanguageBatches,
    MixedRows,
    ShuffledRows,
    StreamConfig,
    TrainingStream,
    part_texts,
)
from plmops.platform.training.recipe import PretrainRecipe

MANIFEST = "manifest.json"
TOKENIZER_MARKER = "tokenizer_config.json"  # written last: its presence means the folder is whole


@dataclass(frozen=True)
class CorpusVersion:
    """One published corpus version: where it lives and what its manifest says."""

    name: str
    version: str
    uri: str  # <corpora root>/<name>/<version>
    manifest: dict

    @property
    def shard_paths(self) -> list[str]:
        return [shard["path"] for shard in self.manifest["shards"]]

    @property
    def documents(self) -> int:
        return int(self.manifest["documents"])


def corpora_root(root: str | None = None) -> str:
    return root or f"{get_settings().effective_storage_uri.rstrip('/')}/corpora"


@task(cache_policy=NONE)
def resolve_corpus(name: str, version: str = "latest", root: str | None = None) -> CorpusVersion:
    """The version named, or with "latest" the newest published one (manifests are written last, so
    only complete versions count)."""
    root = corpora_root(root)
    store = open_storage(root)
    if version != "latest":
        key = f"{name}/{version}/{MANIFEST}"
        if not store.exists(key):
            raise FileNotFoundError(f"corpus {name}@{version}: no manifest at {store.uri_for(key)}")
        return CorpusVersion(name, version, f"{root.rstrip('/')}/{name}/{version}", store.read_json(key))
    manifests = [k for k in store.list(name) if k.startswith(f"{name}/") and k.count("/") == 2
                 and k.endswith("/" + MANIFEST)]
    if not manifests:
        raise FileNotFoundError(
            f"corpus {name!r}: no published version under {store.uri_for(name)}; "
            f"run `plmops ingest --name {name} ...` first"
        )
    newest = max((store.read_json(k) for k in manifests), key=lambda m: (m["created_at"], m["version"]))
    return CorpusVersion(name, newest["version"], f"{root.rstrip('/')}/{name}/{newest['version']}", newest)


def corpus_filesystem(corpus: CorpusVersion) -> tuple[pafs.FileSystem, list[str]]:
    """A pyarrow filesystem and the shard paths on it, for streaming without a download."""
    filesystem, base = open_storage(corpus.uri).arrow_filesystem()
    return filesystem, [f"{base}/{path}" for path in corpus.shard_paths]


def corpus_texts(corpus: CorpusVersion) -> Iterator[str]:
    """Every document's text, one row group at a time."""
    filesystem, paths = corpus_filesystem(corpus)
    for path in paths:
        file = pq.ParquetFile(filesystem.open_input_file(path))
        for group in range(file.num_row_groups):
            yield from file.read_row_group(group, columns=["text"]).column("text").to_pylist()


def _digest(data: Any, length: int = 12) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def recipe_dict(recipe: PretrainRecipe) -> dict[str, Any]:
    return TypeAdapter(PretrainRecipe).dump_python(recipe, mode="json")


def run_name(recipe: PretrainRecipe, corpus: CorpusVersion) -> str:
    """`<model name>-<digest>`: the same recipe on the same corpus version is the same run."""
    data = recipe_dict(recipe) | {"corpus": {"name": corpus.name, "version": corpus.version}}
    data.pop("kubernetes", None)  # where it runs does not change what it trains
    base = recipe.registry.model_name if recipe.registry else "pretrain"
    return f"{base}-{_digest(data, 10)}"


def run_storage(name: str) -> Storage:
    return open_storage(f"{get_settings().effective_storage_uri.rstrip('/')}/pretrain/{name}")


@task(cache_policy=NONE)
def prepare_tokenizer(recipe: PretrainRecipe, corpus: CorpusVersion) -> tuple[PreTrainedTokenizerBase, str, bool]:
    """(tokenizer, where it is stored, reused?): a folder named in the recipe, the one already trained
    on this corpus version with these settings, or a new one trained now and stored for the next run."""
    section = recipe.tokenizer
    if section.path is not None:
        return AutoTokenizer.from_pretrained(section.path), section.path, True
    key = _digest({"vocab_size": section.vocab_size, "min_frequency": section.min_frequency,
                   "max_len": recipe.model.max_position_embeddings})
    store = open_storage(f"{get_settings().effective_storage_uri.rstrip('/')}/tokenizers")
    prefix = f"{corpus.name}/{corpus.version}/{key}"
    with tempfile.TemporaryDirectory() as tmp:
        if section.reuse and store.exists(f"{prefix}/{TOKENIZER_MARKER}"):
            return AutoTokenizer.from_pretrained(store.get_folder(prefix, tmp)), store.uri_for(prefix), True
        tokenizer = train_wordpiece(
            corpus_texts(corpus), section.vocab_size, section.min_frequency,
            model_max_length=recipe.model.max_position_embeddings,
        )
        tokenizer.save_pretrained(tmp)
        store.put_folder(prefix, tmp, marker=TOKENIZER_MARKER)
    return tokenizer, store.uri_for(prefix), False


def holdout(recipe: PretrainRecipe, corpus: CorpusVersion) -> Holdout:
    """The recipe's held-out slice as a fraction of rows (`rows: N` becomes N / documents)."""
    section = recipe.eval
    fraction = section.fraction if section.fraction is not None else section.rows / max(corpus.documents, 1)
    if not 0 < fraction < 0.5:
        raise ValueError(
            f"eval: {section.rows} held-out rows of {corpus.name}@{corpus.version}'s {corpus.documents} "
            f"documents leaves too little to train on; ask for fewer"
        )
    return Holdout(fraction, seed=recipe.data.seed)


def corpus_words(corpus: CorpusVersion) -> Iterator[list[str]]:
    """Every document as its list of words, cut at the word offsets ingestion stored."""
    filesystem, paths = corpus_filesystem(corpus)
    for path in paths:
        file = pq.ParquetFile(filesystem.open_input_file(path))
        for group in range(file.num_row_groups):
            table = file.read_row_group(group, columns=["text", "word_offsets"])
            for text, spans in zip(table.column("text").to_pylist(), table.column("word_offsets").to_pylist()):
                yield [text[a:b] for a, b in spans]


def similar_tokens(
    recipe: PretrainRecipe, tokenizer: PreTrainedTokenizerBase, corpus: CorpusVersion
) -> SimilarTokens | None:
    """MacBERT's similar words, from the recipe's source, seen through this tokenizer."""
    if recipe.masking != "mac":
        return None
    section = recipe.similar_words
    if section.source == "cilin":
        source = similar_words.load_cilin(section.path, flags=section.cilin_flags)
    elif section.source == "tsv":
        source = similar_words.load_tsv(section.path)
    else:
        source = similar_words.train_ppmi_vectors(corpus_words(corpus), dim=section.dim, top_k=section.top_k)
    return SimilarTokens(
        source,
        lambda word: tokenizer(word, add_special_tokens=False)["input_ids"],
        VocabInfo.from_tokenizer(tokenizer),
    )


MIN_LANGUAGE_DOCUMENTS = 100  # fewer cannot be split into a training part, a held-out part and ranks


def language_mix(recipe: PretrainRecipe, corpus: CorpusVersion) -> dict[str, float]:
    """Sampling probabilities per language: the recipe's languages with CINO's p ~ n^alpha, or every
    language of the corpus in its natural proportion (alpha 1). Shards hold one language each, so
    without this mix a run would see the languages one after another."""
    counts = {lang: stats["documents"] for lang, stats in corpus.manifest["by_language"].items()}
    if recipe.data.languages:
        missing = sorted(set(recipe.data.languages) - set(counts))
        if missing:
            raise ValueError(f"data.languages: {missing} not in corpus {corpus.name}@{corpus.version} "
                             f"(it has {sorted(counts)})")
        chosen, alpha = {lang: counts[lang] for lang in recipe.data.languages}, recipe.data.sampling_alpha
    else:
        chosen, alpha = {k: v for k, v in counts.items() if v >= MIN_LANGUAGE_DOCUMENTS}, 1.0
    stats = {lang: LanguageStats(n, n) for lang, n in chosen.items()}
    return sampling_probs(stats, alpha=alpha)


def _shards_by_language(corpus: CorpusVersion, paths: list[str]) -> dict[str, list[str]]:
    by_language: dict[str, list[str]] = {}
    for shard, path in zip(corpus.manifest["shards"], paths):
        by_language.setdefault(shard["lang"], []).append(path)
    return by_language


def vocab_subsets(
    recipe: PretrainRecipe,
    tokenizer: PreTrainedTokenizerBase,
    corpus: CorpusVersion,
    shards: dict[str, list[str]],
    filesystem: pafs.FileSystem,
    split: Holdout,
) -> dict[str, torch.Tensor]:
    """Each language's fast-MLM vocabulary: the ids its training rows use, plus the special ids.

    Counted once per run (a pass over the language's shards with the tokenizer) and kept in the run's
    storage under the tokenizer's digest, so a resumed run, or another rank, reads it back instead.
    """
    store = run_storage(run_name(recipe, corpus))
    key = f"vocab_subsets/{_digest(tokenizer.get_vocab())}.json"
    cached = store.read_json(key) if store.exists(key) else {}
    if set(shards) <= set(cached):
        return {lang: torch.tensor(cached[lang], dtype=torch.long) for lang in shards}
    subsets = {
        lang: corpus_vocab(part_texts(paths, filesystem, holdout=split, part="train"), tokenizer)
        for lang, paths in shards.items()
    }
    store.put_if_absent(key, json.dumps({lang: ids.tolist() for lang, ids in subsets.items()}).encode())
    return subsets


def streams(
    recipe: PretrainRecipe,
    tokenizer: PreTrainedTokenizerBase,
    corpus: CorpusVersion,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[TrainingStream | LanguageBatches, TrainingStream]:
    """(training stream of this rank, held-out stream: one pass over the held-out rows of the languages
    trained on). The holdout splits both the same way.

    Training rows come from one `ShuffledRows` per language of `language_mix`. With `sop` in the
    objective the rows become sentence-order pairs (`BatchConfig.sop`). For `fast_mlm` every batch is
    one language's, drawn with the mix's probabilities, and carries that language's `vocab_subset`
    (`LanguageBatches`); its held-out batches score the full vocabulary, so eval/mlm_* stays comparable
    with other objectives and a held-out id the training rows never use cannot break it.
    """
    filesystem, paths = corpus_filesystem(corpus)
    by_language = _shards_by_language(corpus, paths)
    split, d = holdout(recipe, corpus), recipe.data
    similar = similar_tokens(recipe, tokenizer, corpus)
    probs = language_mix(recipe, corpus)
    batch_config = replace(recipe.batch_config(), sop=recipe.uses_sop)
    rows = {
        lang: ShuffledRows(by_language[lang], filesystem, seed=d.seed, buffer_size=d.shuffle_buffer,
                           epochs=d.epochs, rank=rank, world_size=world_size, holdout=split)
        for lang in probs
    }
    train: TrainingStream | LanguageBatches
    if recipe.masking == "fast_mlm":
        subsets = vocab_subsets(recipe, tokenizer, corpus, {lang: by_language[lang] for lang in probs},
                                filesystem, split)
        train = LanguageBatches.from_rows(rows, probs, subsets, tokenizer, batch_config,
                                          batch_size=d.batch_size, chunk_rows=d.chunk_rows, seed=d.seed)
    else:
        train = TrainingStream(MixedRows(rows, probs, seed=d.seed), tokenizer, batch_config,
                               batch_size=d.batch_size, chunk_rows=d.chunk_rows, similar=similar)
    held_config = StreamConfig(batch_size=d.batch_size, shuffle_buffer=1, chunk_rows=d.chunk_rows, epochs=1,
                               seed=d.seed)
    held_out = TrainingStream.from_shards(
        [path for lang in probs for path in by_language[lang]], tokenizer, batch_config, held_config,
        filesystem=filesystem, similar=similar, holdout=split, part="held_out",
    )
    return train, held_out


def save_model(model: Any, tokenizer: PreTrainedTokenizerBase, store: Storage, folder: str | Path) -> str:
    """Write the final Hugging Face folder locally and to the run's storage; its storage URI."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    store.put_folder("model", folder, marker="config.json")
    return store.uri_for("model")
