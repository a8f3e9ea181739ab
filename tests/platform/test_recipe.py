"""Pretraining recipes: every shipped recipe loads and converts; overrides, mixes and errors behave."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from plmops.platform.models import PlmopsForPreTraining
from plmops.platform.text.config import ConfigError
from plmops.platform.training.recipe import (
    CorpusSection,
    DataSection,
    EvalSection,
    KubernetesSection,
    ModelSection,
    PretrainRecipe,
    RegistrySection,
    SimilarWordsSection,
    TokenizerSection,
    Toleration,
    load_recipe,
)
from plmops.platform.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))
TINY = ROOT / "configs" / "pretrain" / "tiny-wwm.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "corpus: {name: c}\nobjective: wwm\ntrain: {steps: 10}\n"


def test_the_folder_holds_the_six_recipes():
    assert {p.stem for p in RECIPES} >= {
        "tiny-wwm",
        "base-wwm",
        "base-macbert",
        "base-pert",
        "large-wwm",
        "cino-base",
    }


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_converts(path: Path):
    recipe = load_recipe(path)
    config = recipe.model_config(recipe.tokenizer.vocab_size)
    assert config.vocab_size == recipe.tokenizer.vocab_size
    assert config.num_hidden_layers == recipe.model.num_hidden_layers
    assert config.use_sop_head == ("sop" in recipe.objective)
    assert config.use_pointer_head == (recipe.masking == "pert")
    batch = recipe.batch_config()
    assert batch.max_len == recipe.data.max_len <= config.max_position_embeddings
    assert batch.objective == ("mlm" if recipe.masking == "fast_mlm" else recipe.masking)
    assert recipe.stream_config().batch_size == recipe.data.batch_size
    train = recipe.train_config()
    assert train == recipe.train and train is not recipe.train


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("base-wwm", (12, 768, 12, 3072)),
        ("base-macbert", (12, 768, 12, 3072)),
        ("base-pert", (12, 768, 12, 3072)),
        ("cino-base", (12, 768, 12, 3072)),
        ("large-wwm", (24, 1024, 16, 4096)),
    ],
)
def test_base_and_large_follow_bert_shapes(name: str, shape: tuple[int, int, int, int]):
    m = load_recipe(ROOT / "configs" / "pretrain" / f"{name}.yaml").model
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.intermediate_size) == shape
    assert m.max_position_embeddings == 512


def test_named_recipes_carry_their_papers_choices():
    large = load_recipe(ROOT / "configs/pretrain/large-wwm.yaml")
    assert large.train.optimizer == "lamb" and large.masking == "wwm"
    macbert = load_recipe(ROOT / "configs/pretrain/base-macbert.yaml")
    assert macbert.objective == {"mac": 1.0, "sop": 1.0}
    assert macbert.similar_words is not None and macbert.similar_words.source == "cilin"
    assert macbert.batch_config().packing is False
    pert = load_recipe(ROOT / "configs/pretrain/base-pert.yaml")
    assert pert.model_config(100).use_pointer_head and not pert.model_config(100).use_sop_head
    cino = load_recipe(ROOT / "configs/pretrain/cino-base.yaml")
    assert cino.masking == "fast_mlm" and cino.data.sampling_alpha == 0.7
    assert {"zh", "bo", "ug", "mn", "kk", "ko"} <= set(cino.data.languages or [])


def test_tiny_recipe_is_a_small_fast_model():
    recipe = load_recipe(TINY)
    assert recipe.train.steps <= 2000 and recipe.data.max_len <= 128  # minutes on 2 CPU cores
    model = PlmopsForPreTraining(recipe.model_config(recipe.tokenizer.vocab_size))
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    ids = torch.randint(5, recipe.tokenizer.vocab_size, (2, recipe.data.max_len))
    labels = torch.where(torch.rand(ids.shape) < 0.15, ids, -100)
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    assert torch.isfinite(loss)


def test_overrides_use_dotted_paths_and_yaml_scalars():
    recipe = load_recipe(
        TINY,
        [
            "train.steps=100",
            "model.num_hidden_layers=1",
            "objective=pert",
            "train.lr=3e-4",  # YAML reads 3e-4 as a string; the field still gets a float
            "data.packing=false",
            "kubernetes.node_selector={pool: gpu}",
            "data.languages=[zh, bo]",
            "data.epochs=null",
        ],
    )
    assert recipe.train_config().steps == 100 and recipe.train_config().lr == pytest.approx(3e-4)
    assert recipe.model_config(500).num_hidden_layers == 1
    assert recipe.batch_config().objective == "pert" and recipe.batch_config().packing is False
    assert recipe.model_config(500).use_pointer_head
    assert recipe.kubernetes == KubernetesSection(node_selector={"pool": "gpu"})
    assert recipe.data.languages == ["zh", "bo"] and recipe.stream_config().epochs is None


def test_a_later_override_wins_and_the_file_is_untouched():
    before = TINY.read_text(encoding="utf-8")
    assert load_recipe(TINY, ["train.steps=50", "train.steps=70"]).train.steps == 70
    assert TINY.read_text(encoding="utf-8") == before


def test_mix_weights_reach_the_model_losses(tmp_path: Path):
    path = write(tmp_path, MINIMAL + "data: {packing: false}\n")
    recipe = load_recipe(path, ["objective={wwm: 0.5, sop: 2}"])
    config = recipe.model_config(200)
    assert (config.mlm_loss_weight, config.sop_loss_weight, config.use_sop_head) == (0.5, 2.0, True)
    assert recipe.masking == "wwm" and recipe.batch_config().objective == "wwm"


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ("foo", "unknown objective 'foo'; allowed: mlm, wwm, ngram, mac, pert, fast_mlm, sop"),
        ("{wwm: 1, mlm: 1}", "exactly one of"),
        ("{sop: 1}", "exactly one of"),
        ("{pert: 1, sop: 1}", "sop mixes only with mlm, wwm, ngram, mac, not pert"),
        ("{fast_mlm: 1, sop: 1}", "not fast_mlm"),
        ("{wwm: 0}", "positive"),
        ("{wwm: true}", "positive"),
        ("[wwm]", "must be one of"),
    ],
)
def test_refused_objectives_name_the_rule(tmp_path: Path, objective: str, message: str):
    path = write(tmp_path, MINIMAL + "data: {packing: false, languages: [zh]}\n")
    with pytest.raises(ConfigError, match=r"objective: .*" + re.escape(message)):
        load_recipe(path, [f"objective={objective}"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective={wwm: 1, sop: 1}"], "set data.packing to false"),
        (["objective=mac"], "objective mac needs a similar_words section"),
        (["objective=fast_mlm"], "objective fast_mlm needs data.languages"),
        (["objective=pert", "model.use_pointer_head=false"], "model.use_pointer_head is false"),
        (["data.packing=false", "objective={mlm: 1, sop: 1}", "model.use_sop_head=false"], "use_sop_head"),
        (["data.max_len=1024"], "data.max_len (1024) exceeds model.max_position_embeddings (512)"),
        (
            ["model.num_attention_heads=5"],
            "model: hidden_size (768) must be a multiple of num_attention_heads (5)",
        ),
        (["train.lr=-1"], "train.lr: must be a positive number"),
        (["train.warmup_steps=11"], "train.warmup_steps: must be an integer in [0, steps]"),
        (["train.optimizer=sgd"], "train.optimizer: Input should be 'adamw' or 'lamb'"),
        (
            ["similar_words.source=thesaurus"],
            "similar_words.source: Input should be 'cilin', 'tsv' or 'vectors'",
        ),
        (["similar_words.source=tsv"], "source 'tsv' needs path"),
        (["similar_words={source: vectors, path: v.npy}"], "takes no path"),
        (["eval={fraction: 0.1, rows: 5}"], "exactly one of fraction or rows"),
        (
            ["tokenizer={path: tok/, vocab_size: 100}"],
            "tokenizer: path loads a finished tokenizer, so vocab_size",
        ),
        (["kubernetes.gpus=17"], "kubernetes.gpus: Input should be less than or equal to 16"),
        (["data.sampling_alpha=1.5"], "data.sampling_alpha"),
        (["model.hidden_dropout_prob=1"], "model.hidden_dropout_prob"),
        (["corpus.name="], "corpus.name"),
    ],
)
def test_invalid_values_name_the_dotted_field(tmp_path: Path, overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_recipe(write(tmp_path, MINIMAL), overrides)
    assert str(err.value).startswith(str(tmp_path / "recipe.yaml"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "trian: {steps: 3}\n", "unknown key trian; did you mean train?"),
        (MINIMAL.replace("steps", "stpes"), "unknown key train.stpes; did you mean train.steps?"),
        (
            MINIMAL + "model: {hidden_sise: 64}\n",
            "unknown key model.hidden_sise; did you mean model.hidden_size?",
        ),
        (
            MINIMAL + "kubernetes: {gpus: 1, xyzzy: 2}\n",
            "unknown key kubernetes.xyzzy; valid keys: gpus, nodes",
        ),
    ],
)
def test_unknown_keys_in_the_file_suggest_the_closest(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe(write(tmp_path, text))


def test_unknown_override_keys_name_the_override(tmp_path: Path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(
        ConfigError,
        match=re.escape("--set 'train.stepz=3': unknown key train.stepz; did you mean train.steps?"),
    ):
        load_recipe(path, ["train.stepz=3"])
    with pytest.raises(
        ConfigError, match=re.escape("unknown key data.max_lenght; did you mean data.max_len?")
    ):
        load_recipe(path, ["data.max_lenght=64"])
    with pytest.raises(
        ConfigError, match=re.escape("unknown key model.hidden_sise; did you mean model.hidden_size?")
    ):
        load_recipe(path, ["model={hidden_sise: 3}"])  # a mapping value is checked too


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.steps", "expected key.path=value"),
        ("=3", "expected key.path=value"),
        ("train..steps=3", "expected key.path=value"),
        ("objective.sop=1", "objective is 'wwm', not a section"),
        ("train.steps=[1", "not valid YAML"),
    ],
)
def test_malformed_overrides_are_refused(tmp_path: Path, override: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe(write(tmp_path, MINIMAL), [override])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "cannot read recipe"),
        ("corpus: {name: c}\n", "objective"),
    ],
)
def test_unreadable_or_incomplete_files(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_recipe(write(tmp_path, text))
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_defaults_of_a_minimal_recipe(tmp_path: Path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.objective == {"wwm": 1.0} and recipe.corpus.version == "latest"
    assert recipe.eval == EvalSection(fraction=0.01) and recipe.registry is None and recipe.kubernetes is None
    config = recipe.model_config(21128)
    assert (config.hidden_size, config.num_hidden_layers, config.use_sop_head) == (768, 12, False)
    assert recipe.batch_config().rate == 0.15 and recipe.stream_config().shuffle_buffer == 10_000


def test_recipes_are_frozen(tmp_path: Path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.objective = {"mlm": 1.0}  # type: ignore[misc]


def test_the_docs_name_every_field():
    docs = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    sections = [
        PretrainRecipe, TrainConfig, CorpusSection, TokenizerSection, ModelSection, DataSection,
        SimilarWordsSection, EvalSection, RegistrySection, KubernetesSection, Toleration,
    ]  # fmt: skip
    fields = [
        (section.__name__, name)
        for section in sections
        for name in (
            section.model_fields
            if hasattr(section, "model_fields")
            else [f.name for f in dataclasses.fields(section)]
        )
    ]
    assert [f"{section}.{name}" for section, name in fields if f"`{name}`" not in docs] == []
