"""MLflow adapter: models logged from code (no pickles), registered with tags, loaded back per head."""

from __future__ import annotations

import mlflow
import pytest
import torch

from plmops.infra import tracking
from plmops.infra.settings import Settings
from plmops.platform.models import (
    PlmopsConfig,
    PlmopsForMaskedLM,
    PlmopsForQuestionAnswering,
    PlmopsForSequenceClassification,
    PlmopsForTokenClassification,
)
from plmops.platform.tokenization import train_wordpiece

TEXTS = ["北京是中国的首都。", "上海是中国的城市。", "今天天气很好。"] * 40


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=120, min_frequency=1)


@pytest.fixture()
def settings(tmp_path, monkeypatch, mlflow_registry) -> Settings:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # an earlier test's database
    settings = Settings(home=tmp_path / "home")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.effective_mlflow_uri)  # as tracked_run exports it; undone after
    mlflow_registry(settings.effective_mlflow_uri)
    return settings


def _folder(tmp_path, tokenizer, model_class, **config):
    torch.manual_seed(0)
    model = model_class(PlmopsConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, **config))
    folder = tmp_path / model_class.__name__
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def test_an_encoder_is_registered_with_tags_and_fills_masks(tmp_path, tokenizer, settings):
    folder, model = _folder(tmp_path, tokenizer, PlmopsForMaskedLM)
    with tracking.tracked_run("t", "encoder", settings) as run_id:
        version = tracking.log_encoder(folder, "enc", {"objective": "wwm", "steps": 3})
    client = mlflow.MlflowClient(settings.effective_mlflow_uri, settings.effective_mlflow_uri)
    assert version == "1" and client.get_model_version("enc", "1").tags == {"objective": "wwm", "steps": "3"}
    assert client.get_model_version("enc", "1").run_id == run_id
    loaded = mlflow.pyfunc.load_model("models:/enc/1")
    (result,) = loaded.predict(["北京是中国的[MASK]都。"])
    encoded = tokenizer("北京是中国的[MASK]都。", return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(**encoded).logits[0]
    masked = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero())
    assert result["predictions"][0][0] == tokenizer.convert_ids_to_tokens(int(logits[masked].argmax()))
    for uri in ("models:/enc/1", f"runs:/{run_id}/model"):
        assert (tracking.model_folder(uri, tmp_path / uri.replace(":", "").replace("/", "_")) / "config.json").is_file()


@pytest.mark.parametrize(
    ("model_class", "config", "text", "key"),
    [
        (PlmopsForSequenceClassification, {"num_labels": 2, "id2label": {0: "neg", 1: "pos"}}, "今天天气很好。", "label"),
        (PlmopsForTokenClassification, {"num_labels": 3, "id2label": {0: "O", 1: "B-LOC", 2: "I-LOC"}},
         "北京是中国的首都。", "tags"),
        (PlmopsForQuestionAnswering, {}, "首都是哪里\t北京是中国的首都。", "answer"),
    ],
    ids=["classification", "tagging", "qa"],
)
def test_task_models_predict_with_their_own_head(tmp_path, tokenizer, settings, model_class, config, text, key):
    folder, _ = _folder(tmp_path, tokenizer, model_class, **config)
    with tracking.tracked_run("t", model_class.__name__, settings):
        tracking.log_encoder(folder, "task", {})
    (result,) = mlflow.pyfunc.load_model("models:/task/1").predict([text])
    if key == "label":
        assert result["label"] in ("neg", "pos") and 0.5 <= result["score"] <= 1
    elif key == "tags":
        assert len(result["tags"]) == len(result["tokens"]) == len("北京是中国的首都。")
    else:
        assert result["answer"] in "北京是中国的首都。"


def test_a_run_can_be_reopened_and_its_history_read(settings):
    with tracking.tracked_run("t", "first", settings) as run_id:
        tracking.log_metrics({"train/loss": 2.0}, step=1)
    with tracking.tracked_run("t", "ignored", settings, run_id=run_id) as again:
        tracking.log_metrics({"train/loss": 1.0}, step=2)
    assert again == run_id
    assert tracking.metric_history(run_id, "train/loss") == [(1, 2.0), (2, 1.0)]
    with pytest.raises(FileNotFoundError, match="no Hugging Face folder"):
        with tracking.tracked_run("t", "empty", settings) as empty:
            pass
        tracking.model_folder(f"runs:/{empty}/model", settings.home / "x")
