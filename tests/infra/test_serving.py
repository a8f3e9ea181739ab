"""Triton serving: repositories checked through Triton's own schema, the text logic against the
fine-tuning code, and a real Triton server (the one nvidia-pytriton bundles, from .venv-serve) queried
over HTTP and gRPC with raw Chinese text, answering exactly as PyTorch predicts.

The models are tiny plmops encoders with random weights, exported here with torch.onnx.export: what is
checked is that tokenisation, windows, batching and decoding on the server reproduce the platform's
own predictions, which random weights test as well as trained ones.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from plmops.infra.serving import (
    DynamicBatching,
    InstanceGroup,
    RepositoryError,
    ServedModel,
    ServingError,
    TensorRTAccelerator,
    TensorSpec,
    TritonClient,
    TritonModelConfig,
    parse_pbtxt,
    write_repository,
)
from plmops.infra.serving.backend.plmops_text import (
    InputError,
    Preprocessor,
    TextPolicy,
    best_spans,
    decode_texts,
    entity_spans,
)
from plmops.infra.serving.environment import (
    DEFAULT_VENV,
    STAMP,
    ServeEnvironment,
    ServeEnvironmentError,
    build_serve_environment,
)
from plmops.infra.serving.server import ServerError, TritonServer, free_port, triton_repository_path
from plmops.platform.finetune.classification import ClassificationTask
from plmops.platform.finetune.datasets import ClassificationExample, MRCExample, TaggedSentence
from plmops.platform.finetune.metrics import entity_spans as platform_entity_spans
from plmops.platform.finetune.mrc import prepare_features
from plmops.platform.finetune.ner import NERTask
from plmops.platform.finetune.qa import MRCTask, max_query_length
from plmops.platform.finetune.taskspec import HyperParameters
from plmops.platform.models import (
    PlmopsConfig,
    PlmopsForQuestionAnswering,
    PlmopsForSequenceClassification,
    PlmopsForTokenClassification,
)
from plmops.platform.tokenization import train_wordpiece

MAX_LENGTH = 64  # the tiny models' max_position_embeddings: long texts and passages exceed it
LABELS = ["体育", "财经", "娱乐"]
NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
CORPUS = [
    "北京是中华人民共和国的首都，也是全国的政治中心和文化中心。",
    "今天上午，国家队在主场以三比一战胜了对手，球迷们非常高兴。",
    "股票市场今天大幅下跌，投资者担心经济增长放缓。",
    "这部电影的导演是张艺谋，主演在电影节上获得了最佳女演员奖。",
    "李明和王芳昨天去上海参观了博物馆，还在外滩散步。",
    "长江是中国最长的河流，全长约六千三百公里，流经青海、西藏、四川等地。",
    "中国人民银行宣布下调存款准备金率，以支持实体经济发展。",
    "她在比赛中打破了亚洲纪录，赢得了金牌。",
]
TEXTS = [
    "国家队赢得了比赛",
    "股票市场大幅下跌，投资者很担心。",
    "这部电影非常好看",
    "长江流经青海和四川" * 8,  # over MAX_LENGTH tokens: truncated
    "张艺谋在北京拍电影",
]
PASSAGE = "".join(CORPUS)  # ≈ 200 characters: several 64-token windows
QUESTIONS = [("长江有多长？", CORPUS[5]), ("谁是这部电影的导演？", PASSAGE), ("李明去了哪里？", PASSAGE + PASSAGE)]
NER_TEXTS = ["李明和王芳去上海", "张艺谋在北京拍电影", "长江流经青海四川西藏" * 8]


# ------------------------------------------------------------------------------------------- models


def _tiny_config(vocab_size: int, **head: object) -> PlmopsConfig:
    return PlmopsConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=MAX_LENGTH, initializer_range=0.2, **head,
    )


class _Logits(torch.nn.Module):
    """The export signature: three int64 inputs, the head's named outputs."""

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(getattr(out, name) for name in self.outputs)


def _export(model: torch.nn.Module, tokenizer, folder: Path, outputs: tuple[str, ...], per_token: bool) -> Path:
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    names = ("input_ids", "attention_mask", "token_type_ids")
    example = tokenizer(["北京", "今天天气很好"], padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes |= {n: {0: "batch", 1: "sequence"} if per_token else {0: "batch"} for n in outputs}
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes: known, harmless
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Logits(model, outputs).eval(), tuple(example[n] for n in names), str(folder / "model.onnx"),
            input_names=list(names), output_names=list(outputs), dynamic_axes=axes, dynamo=False,
        )
    return folder


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(CORPUS * 3, vocab_size=400, min_frequency=1, model_max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def models(tokenizer, tmp_path_factory) -> dict[str, tuple[torch.nn.Module, Path]]:
    """Each task's PyTorch model and its export folder (model.onnx, config.json, tokenizer files)."""
    torch.manual_seed(0)
    root, vocab = tmp_path_factory.mktemp("exports"), len(tokenizer)
    classifier = PlmopsForSequenceClassification(_tiny_config(
        vocab, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={x: i for i, x in enumerate(LABELS)}))
    tagger = PlmopsForTokenClassification(_tiny_config(
        vocab, num_labels=5, id2label=dict(enumerate(NER_TAGS)), label2id={x: i for i, x in enumerate(NER_TAGS)}))
    reader = PlmopsForQuestionAnswering(_tiny_config(vocab))
    return {
        "news": (classifier, _export(classifier, tokenizer, root / "news", ("logits",), False)),
        "ner": (tagger, _export(tagger, tokenizer, root / "ner", ("logits",), True)),
        "reading": (reader, _export(reader, tokenizer, root / "reading", ("start_logits", "end_logits"), True)),
    }


def _served(models: dict, **options: object) -> list[ServedModel]:
    batching = DynamicBatching(max_queue_delay_microseconds=20_000)
    return [ServedModel(name, folder, dynamic_batching=batching, **options) for name, (_, folder) in models.items()]


# ------------------------------------------------------------------------------------------- PyTorch


def _hparams() -> HyperParameters:
    return HyperParameters(max_length=MAX_LENGTH, doc_stride=MAX_LENGTH // 4, batch_size=4)


def _torch_labels(model, tokenizer, texts: list[str]) -> tuple[list[str], np.ndarray]:
    examples = [ClassificationExample(str(i), t, None, LABELS[0]) for i, t in enumerate(texts)]
    task = ClassificationTask(tokenizer, _hparams(), LABELS)
    labels = task.predict(model, task.encode(examples, train=False), examples)
    cut = tokenizer(texts, truncation="longest_first", max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**cut).logits.softmax(-1).numpy()
    return labels, probabilities


def _torch_answers(model, tokenizer) -> list[str]:
    examples = [MRCExample(str(i), c, q, [], [], "") for i, (q, c) in enumerate(QUESTIONS)]
    task = MRCTask(tokenizer, _hparams(), [])
    return task.predict(model, task.encode(examples, train=False), examples)


def _torch_tags(model, tokenizer, texts: list[str]) -> list[list[str]]:
    sentences = [TaggedSentence(str(i), list(t), ["O"] * len(t)) for i, t in enumerate(texts)]
    task = NERTask(tokenizer, _hparams(), ["PER", "LOC"])
    return task.predict(model, task.encode(sentences, train=False), sentences)


# ------------------------------------------------------------------------------------------- configs


def _configs(root: Path) -> dict[str, object]:
    return {p.parent.name: parse_pbtxt(p.read_text(encoding="utf-8"), str(p)) for p in root.glob("*/config.pbtxt")}


def test_every_written_config_parses_with_tritons_schema(models, tmp_path) -> None:
    write_repository(_served(models), tmp_path / "ort", variant="onnxruntime")
    write_repository(_served(models), tmp_path / "portable", variant="portable")
    for variant in ("ort", "portable"):
        configs = _configs(tmp_path / variant)
        assert sorted(configs) == sorted(f"{n}{s}" for n in models for s in ("", "_preprocess", "_onnx", "_postprocess"))
        for name in models:
            ensemble, onnx_step = configs[name], configs[f"{name}_onnx"]
            assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0
            assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
                f"{name}_preprocess", f"{name}_onnx", f"{name}_postprocess"]
            assert onnx_step.max_batch_size == 32
            assert onnx_step.dynamic_batching.max_queue_delay_microseconds == 20_000
            assert [(i.name, list(i.dims)) for i in onnx_step.input] == [
                ("input_ids", [-1]), ("attention_mask", [-1]), ("token_type_ids", [-1])]
            for step in ("_preprocess", "_postprocess"):
                assert configs[f"{name}{step}"].backend == "python"
            if variant == "ort":
                assert onnx_step.platform == "onnxruntime_onnx" and not onnx_step.backend
                assert not (tmp_path / variant / f"{name}_onnx/1/model.py").exists()
            else:
                assert onnx_step.backend == "python" and not onnx_step.platform
                assert (tmp_path / variant / f"{name}_onnx/1/model.py").is_file()
            assert (tmp_path / variant / f"{name}_onnx/1/model.onnx").is_file()
            assert (tmp_path / variant / f"{name}_preprocess/1/tokenizer.json").is_file()
    ort = _configs(tmp_path / "ort")
    assert [(o.name, list(o.dims)) for o in ort["news_onnx"].output] == [("logits", [3])]
    assert [(o.name, list(o.dims)) for o in ort["ner_onnx"].output] == [("logits", [-1, 5])]
    assert [o.name for o in ort["reading"].input] == ["QUESTION", "CONTEXT"]
    assert [o.name for o in ort["reading"].output] == ["ANSWER", "ANSWER_START", "ANSWER_END", "SCORE", "TRUNCATED"]
    assert ort["news_preprocess"].parameters["max_length"].string_value == str(MAX_LENGTH)
    assert ort["reading_preprocess"].parameters["max_query_length"].string_value == str(max_query_length(MAX_LENGTH))


def test_gpu_config_with_tensorrt(models, tmp_path) -> None:
    served = ServedModel(
        "news", models["news"][1], instances=InstanceGroup("gpu", count=2, gpus=(0, 1)),
        tensorrt=TensorRTAccelerator("FP16", engine_cache_path="/cache/trt"),
        dynamic_batching=DynamicBatching(100, preferred_batch_sizes=(8, 16)),
    )
    write_repository([served], tmp_path)
    config = _configs(tmp_path)["news_onnx"]
    assert config.platform == "onnxruntime_onnx"
    group = config.instance_group[0]
    assert (group.kind, group.count, list(group.gpus)) == (config.instance_group[0].KIND_GPU, 2, [0, 1])
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt"
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    assert dict(accelerator.parameters) == {
        "precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": "/cache/trt",
        "trt_profile_min_shapes": ",".join(f"{n}:1x1" for n in inputs),
        "trt_profile_opt_shapes": ",".join(f"{n}:16x{MAX_LENGTH // 2}" for n in inputs),
        "trt_profile_max_shapes": ",".join(f"{n}:32x{MAX_LENGTH}" for n in inputs),
    }
    portable = tmp_path / "portable"
    write_repository([served], portable, variant="portable")  # no onnxruntime backend: no accelerator block
    assert not _configs(portable)["news_onnx"].HasField("optimization")


def test_invalid_configs_are_refused_with_the_reason() -> None:
    text = (TensorSpec("TEXT", "STRING", (-1,)),)
    with pytest.raises(ValueError, match="TensorRT accelerator needs GPU instance groups"):
        TritonModelConfig("m", text, text, 8, platform="onnxruntime_onnx", instance_groups=(InstanceGroup(),),
                          tensorrt=TensorRTAccelerator())
    with pytest.raises(ValueError, match="dynamic batching needs max_batch_size > 0"):
        TritonModelConfig("m", text, text, 0, backend="python", dynamic_batching=DynamicBatching())
    with pytest.raises(ValueError, match=r"preferred batch sizes \[64\] exceed max_batch_size 32"):
        TritonModelConfig("m", text, text, 32, backend="python", dynamic_batching=DynamicBatching(0, (8, 64)))
    with pytest.raises(ValueError, match="invalid model name 'a/b'"):
        TritonModelConfig("a/b", text, text, backend="python")
    with pytest.raises(ValueError, match="dims must be non-empty, each -1 or positive"):
        TensorSpec("X", "INT64", (0,))
    with pytest.raises(ValueError, match=r"where\.pbtxt: not a valid Triton model configuration"):
        parse_pbtxt('name: "m"\nmax_batch_sise: 4\n', "where.pbtxt")


def test_export_problems_name_the_file(models, tmp_path) -> None:
    folder = models["news"][1]
    with pytest.raises(RepositoryError, match="must have output 'start_logits'"):
        write_repository([ServedModel("x", folder, task="question-answering")], tmp_path)
    with pytest.raises(RepositoryError, match=r"missing\.onnx: no ONNX model here"):
        write_repository([ServedModel("x", folder, onnx_file="missing.onnx")], tmp_path)
    with pytest.raises(RepositoryError, match="max_length 65 exceeds"):
        write_repository([ServedModel("x", folder, max_length=MAX_LENGTH + 1)], tmp_path)
    with pytest.raises(RepositoryError, match="text_pair applies to sequence classification only"):
        write_repository([ServedModel("x", models["ner"][1], text_pair=True)], tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_repository_on_s3_holds_the_same_files(models, tmp_path, s3_bucket) -> None:
    from plmops.infra.storage import open_storage

    local = write_repository(_served(models), tmp_path, variant="portable")
    remote = write_repository(_served(models), s3_bucket + "/triton", variant="portable")
    assert [w.keys for w in remote] == [w.keys for w in local]
    storage = open_storage(s3_bucket + "/triton")
    assert storage.read_bytes("news_onnx/config.pbtxt") == (tmp_path / "news_onnx/config.pbtxt").read_bytes()
    assert storage.read_bytes("reading_onnx/1/model.onnx") == (tmp_path / "reading_onnx/1/model.onnx").read_bytes()
    endpoint = storage.endpoint_url.split("://")[1]
    assert triton_repository_path(s3_bucket + "/triton") == f"s3://http://{endpoint}/{s3_bucket[5:]}/triton"


# ------------------------------------------------------------------------------------------- text logic


def test_invalid_utf8_is_reported_by_item_and_offset() -> None:
    texts = np.array(["好".encode(), "好".encode()[:2] + b"x", b"ok"], dtype=object)
    with pytest.raises(InputError, match=r"TEXT\[1\] is not valid UTF-8: byte 0xe5 at offset 0"):
        decode_texts(texts, "TEXT")
    with pytest.raises(InputError, match="non-empty 1-D list"):
        decode_texts(np.array([[b"a"]], dtype=object), "TEXT")


def test_preprocessing_matches_the_transformers_tokenizer(models, tokenizer) -> None:
    path = str(models["news"][1] / "tokenizer.json")
    pre = Preprocessor(path, TextPolicy("sequence-classification", MAX_LENGTH))
    arrays = pre.encode_classification(TEXTS, None, "TEXT")
    expected = tokenizer(TEXTS, truncation="longest_first", max_length=MAX_LENGTH, padding=True)
    assert arrays["input_ids"].tolist() == expected["input_ids"]
    assert arrays["attention_mask"].tolist() == expected["attention_mask"]
    assert arrays["TRUNCATED"].tolist() == [False, False, False, True, False]
    strict = Preprocessor(path, TextPolicy("sequence-classification", MAX_LENGTH, truncation="reject"))
    full = len(tokenizer(TEXTS[3])["input_ids"])
    with pytest.raises(InputError, match=rf"TEXT\[3\] has {full} tokens, over the model's maximum of {MAX_LENGTH}"):
        strict.encode_classification(TEXTS, None, "TEXT")
    qa = Preprocessor(path, TextPolicy("question-answering", MAX_LENGTH, doc_stride=MAX_LENGTH // 4,
                                       max_query_length=max_query_length(MAX_LENGTH)))
    arrays = qa.encode_qa([q for q, _ in QUESTIONS], [c for _, c in QUESTIONS], "QUESTION")
    examples = [MRCExample(str(i), c, q, [], [], "") for i, (q, c) in enumerate(QUESTIONS)]
    features = prepare_features(examples, tokenizer, MAX_LENGTH, MAX_LENGTH // 4, max_query_length(MAX_LENGTH),
                                train=False)
    assert len(features) > len(QUESTIONS) + 2  # the long passages do make several windows
    assert arrays["input_ids"].tolist() == features.input_ids.tolist()
    assert arrays["ROW_OWNER"].tolist() == features.example_index.tolist()
    assert (arrays["OFFSETS"][:, :, 0] >= 0).tolist() == features.context_mask.tolist()


def test_entity_decoding_follows_the_platforms_rules() -> None:
    cases = [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["I-PER", "I-PER", "B-PER", "I-LOC", "O"],  # I- opening, a type change inside
        ["B-LOC", "E-LOC", "I-LOC", "S-PER", "O", "O"],
        ["O", "O"],
    ]
    for tags in cases:
        assert set(entity_spans(tags)) == platform_entity_spans(tags)
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]


def test_best_span_skips_invalid_pairs() -> None:
    # one window: [CLS] q [SEP] c0 c1 c2 [SEP]; context tokens 3..5 cover "甲乙丙" (1 char each)
    offsets = np.full((1, 7, 2), -1)
    offsets[0, 3:6] = [[0, 1], [1, 2], [2, 3]]
    start = np.array([[9.0, 0, 0, 0.5, 3.0, 1.0, 0]])  # [CLS] is highest but no context token
    end = np.array([[9.0, 0, 0, 2.5, 0.1, 2.0, 0]])  # best end (token 3) lies before the best start
    result = best_spans(start, end, offsets, np.array([0]), ["甲乙丙"])
    assert result["ANSWER"].tolist() == ["乙丙".encode()]  # start 4 + end 5 = 5.0 beats 0.5 + 2.5
    assert (result["ANSWER_START"].tolist(), result["ANSWER_END"].tolist()) == ([1], [3])
    assert result["SCORE"].tolist() == [5.0]
    short = best_spans(start, end, offsets, np.array([0]), ["甲乙丙"], max_answer_length=1)
    assert short["ANSWER"].tolist() == ["乙".encode()]  # 3.0 + 0.1 beats 1.0 + 2.0 and 0.5 + 2.5 at length 1
    none = best_spans(start, end, np.full((1, 7, 2), -1), np.array([0]), ["甲乙丙"])
    assert (none["ANSWER"].tolist(), none["ANSWER_START"].tolist()) == ([b""], [-1])


# ------------------------------------------------------------------------------------------- live server


@pytest.fixture(scope="session")
def serve_env(pytestconfig: pytest.Config) -> ServeEnvironment:
    """.venv-serve, built once if absent (≈ 1 minute, from PyPI); skipped only where it cannot be built."""
    if not (DEFAULT_VENV / STAMP).is_file():
        started = time.monotonic()
        try:
            build_serve_environment(DEFAULT_VENV)
        except (ServeEnvironmentError, OSError) as err:  # no registry reachable, no shared libpython, ...
            pytest.skip(f"no serving environment at {DEFAULT_VENV} and it could not be built: {err}")
        plugins = pytestconfig.pluginmanager
        with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
            plugins.get_plugin("terminalreporter").write_line(
                f"built the serving environment {DEFAULT_VENV} in {time.monotonic() - started:.0f} s")
    return ServeEnvironment.open(DEFAULT_VENV)


@pytest.fixture(scope="module")
def server(serve_env, models, tmp_path_factory):
    """One Triton server, explicit model control, serving the portable repository of all three models
    plus `news_strict` (the classifier with truncation "reject"), which tests load themselves."""
    root = tmp_path_factory.mktemp("repository")
    strict = ServedModel("news_strict", models["news"][1], truncation="reject")
    write_repository([*_served(models), strict], root, variant="portable")
    with TritonServer(root, environment=serve_env, model_control="explicit", load_models=list(models)) as server:
        yield server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_answers_as_pytorch_predicts(server, models, tokenizer, protocol: str) -> None:
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url, protocol) as client:
        news = client.predict("news", TEXTS, batch_size=3)
        reading = client.predict("reading", [q for q, _ in QUESTIONS], [c for _, c in QUESTIONS])
        tagged = client.predict("ner", NER_TEXTS)
    labels, probabilities = _torch_labels(models["news"][0], tokenizer, TEXTS)
    assert [r["label"] for r in news] == labels
    np.testing.assert_allclose([r["probabilities"] for r in news], probabilities, atol=1e-5)
    np.testing.assert_allclose([r["score"] for r in news], probabilities.max(axis=1), atol=1e-5)
    assert [r["truncated"] for r in news] == [False, False, False, True, False]
    answers = _torch_answers(models["reading"][0], tokenizer)
    assert [r["answer"] for r in reading] == answers
    for result, (_, context) in zip(reading, QUESTIONS):
        assert context[result["answer_start"] : result["answer_end"]] == result["answer"] != ""
    tags = _torch_tags(models["ner"][0], tokenizer, NER_TEXTS)
    for result, text, expected in zip(tagged, NER_TEXTS, tags):
        served = [tag for _, _, tag in result["tags"]]
        assert served == expected[: len(served)]
        assert [text[s:e] for s, e, _ in result["tags"]] == list(text[: len(served)])
        assert result["entities"] == [
            {"type": kind, "start": a, "end": b, "text": text[a:b]} for kind, a, b in entity_spans(served)]
    assert len(tagged[2]["tags"]) == MAX_LENGTH - 2 < len(NER_TEXTS[2])  # cut, and reported
    assert [r["truncated"] for r in tagged] == [False, False, True]


def test_dynamic_batching_merges_concurrent_requests(server) -> None:
    """Clients that send at the same moment get their rows run as one ONNX batch (20 ms queue delay)."""
    with TritonClient(server.http_url) as client:
        expected = [r["label"] for r in client.predict("news", TEXTS, batch_size=1)]
    senders = 8
    start = threading.Barrier(senders)
    labels: list[str] = []
    errors: list[BaseException] = []

    def send() -> None:  # a client per thread: tritonclient's HTTP client is bound to its thread
        try:
            with TritonClient(server.http_url) as own:
                start.wait()
                labels.extend(own.predict("news", [text])[0]["label"] for text in TEXTS)
        except BaseException as err:  # noqa: BLE001  reported below, not lost in the thread
            errors.append(err)

    before = _onnx_stats(server)
    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = _onnx_stats(server)
    assert not errors
    assert sorted(labels) == sorted(expected * senders)  # a row's answer does not depend on its batch
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == senders * len(TEXTS)
    assert executions < inferences  # requests were merged into batches


def _onnx_stats(server: TritonServer) -> tuple[int, int]:
    from tritonclient import http

    stats = http.InferenceServerClient(server.http_url).get_inference_statistics("news_onnx")["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_clear_errors(server, protocol: str) -> None:
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url, protocol) as client:
        with pytest.raises(ServingError, match=r"TEXT\[1\] is not valid UTF-8: byte 0xe5 at offset 1"):
            client.predict("news", ["好", b"x" + "好".encode()[:2]])
        with pytest.raises(ServingError, match="(?i)shape"):
            client.infer("news", {"TEXT": np.array([[b"a", b"b"]], dtype=object)})
        with pytest.raises(ServingError, match="takes two texts per item"):
            client.predict("reading", ["问题"])
        with pytest.raises(ServingError, match=r"model 'nothing' is not ready .*no such model"):
            client.predict("nothing", ["x"])
        with pytest.raises(ServingError, match=r"model 'news_strict' is not ready .*not loaded \(explicit model"):
            client.predict("news_strict", ["x"])
    with pytest.raises(ServingError, match=r"no Triton at 127\.0\.0\.1:\d+ \(http\) answers"):
        TritonClient(f"127.0.0.1:{free_port()}").check_server()


def test_explicit_model_control_and_the_reject_policy(server) -> None:
    from tritonclient import grpc

    admin = grpc.InferenceServerClient(server.grpc_url)
    admin.load_model("news_strict")
    try:
        with TritonClient(server.http_url) as client:
            assert client.predict("news_strict", TEXTS[:3])[0]["truncated"] is False
            with pytest.raises(ServingError, match=rf"TEXT\[1\] has \d+ tokens, over the model's maximum of {MAX_LENGTH}"):
                client.predict("news_strict", [TEXTS[0], TEXTS[3]])
    finally:
        admin.unload_model("news_strict")
    with pytest.raises(ServingError, match=r"model 'news_strict' is not ready .*state UNAVAILABLE \(unloaded\)"):
        TritonClient(server.http_url).interface("news_strict")


def test_server_reads_the_repository_from_s3(serve_env, models, tokenizer, s3_bucket) -> None:
    write_repository(_served(models), s3_bucket + "/triton", variant="portable")
    with TritonServer(s3_bucket + "/triton", environment=serve_env, model_control="explicit",
                      load_models=["news"]) as server, TritonClient(server.grpc_url, "grpc") as client:
        assert server.repository.startswith("s3://http://127.0.0.1:")
        labels = [r["label"] for r in client.predict("news", TEXTS)]
    assert labels == _torch_labels(models["news"][0], tokenizer, TEXTS)[0]


def test_server_failures_quote_the_log(serve_env, tmp_path) -> None:
    (tmp_path / "typo" / "bad" / "1").mkdir(parents=True)
    (tmp_path / "typo" / "bad" / "config.pbtxt").write_text('name: "bad"\nbackend: "python"\nmax_batch_sise: 0\n')
    server = TritonServer(tmp_path / "typo", environment=serve_env, log_file=tmp_path / "typo.log")
    with pytest.raises(ServerError, match='(?s)exited with code 1 while starting; problems in its log.*no field named "max_batch_sise"'):
        server.start(timeout_s=60)
    assert server.stop() == 0.0  # already stopped and cleaned up
    # Triton 2.51 waits forever for a Python model whose model.py is missing: the timeout ends it.
    (tmp_path / "no_code" / "bad" / "1").mkdir(parents=True)
    (tmp_path / "no_code" / "bad" / "config.pbtxt").write_text('name: "bad"\nbackend: "python"\nmax_batch_size: 0\n')
    server = TritonServer(tmp_path / "no_code", environment=serve_env, log_file=tmp_path / "no_code.log")
    with pytest.raises(ServerError, match="(?s)not ready within the timeout; problems in its log.*model file not found"):
        server.start(timeout_s=6)
