"""The ingestion flow end to end: local and S3 storage, idempotence, dedup, bad input, MLflow."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from plmops.flows.ingest import ingest_flow
from plmops.infra.settings import get_settings
from plmops.infra.storage import open_storage
from plmops.platform.text.config import IngestConfig
from plmops.platform.text.normalize import normalize_text

ZH = [
    "自然语言处理是人工智能的一个重要方向，研究人与计算机之间用自然语言进行有效通信的理论和方法。",
    "北京是中华人民共和国的首都，也是全国的政治中心和文化中心。",
    "今天上海的天气非常好，很多市民去公园散步。",
    "他在大学里学习计算机科学，毕业后去了一家互联网公司工作。",
]
LONG = ZH[0] + ZH[3] + ZH[2] + "这段文字足够长，改动一个词之后仍然是近似重复。"
NEAR = LONG.replace("有效", "高效")  # one word differs: Jaccard over 5-grams ≈ 0.93
YUE = "佢哋今晚喺邊度食飯呀？我唔知，你問下佢啦。"
BO = "བོད་ཀྱི་སྐད་ཡིག་ནི་བོད་མིའི་རིག་གནས་ཀྱི་གཞི་རྩ་ཡིན། ང་ཚོས་དེ་ལ་གཅེས་སྐྱོང་བྱེད་དགོས།"
UG = "بۇ بۆلەكتىكى تېكىستلەرنى ئوقۇش ئارقىلىق، كىشىلەر تەبىئەتنى سۆيۈشنى ئۆگىنىدۇ."


def _write_sources(folder: Path) -> list[str]:
    """A small corpus in three formats with duplicates, a near duplicate and bad records."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [*ZH, ZH[1], LONG, NEAR, YUE, BO, UG, ""]
    text = ("\n".join(lines) + "\n").encode() + b"\xff\xfe broken bytes\n" + "最后一行。\n".encode()
    (folder / "web.txt").write_bytes(text)
    with gzip.open(folder / "news.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": ZH[2]}, ensure_ascii=False) + "\n")  # exact dup across files
        f.write(json.dumps({"text": "新华社消息，国务院今天召开常务会议，部署进一步扩大内需。"}, ensure_ascii=False) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"title": "no text field"}) + "\n")
    squad = {"data": [{"paragraphs": [{"context": "长江是中国第一长河，全长约六千三百公里。", "qas": []}]}]}
    (folder / "mrc.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    return [str(folder / "*.txt"), str(folder / "news.jsonl.gz"), str(folder / "mrc.json")]


def _read_corpus(manifest: dict) -> list[dict]:
    store = open_storage(manifest["uri"])
    rows = []
    for shard in manifest["shards"]:
        rows.extend(store.read_parquet(shard["path"]).to_pylist())
    return rows


@pytest.fixture()
def small_config() -> IngestConfig:
    return IngestConfig(workers=1, chunk_records=100)


def test_ingest_local_end_to_end(prefect_server, tmp_path, small_config):
    sources = _write_sources(tmp_path / "raw")
    result = ingest_flow(sources, "unit", output=str(tmp_path / "corpora"), config=small_config)
    manifest = result.manifest
    assert result.created and manifest["version"] == result.version
    assert Path(result.manifest_uri).is_file()

    rows = _read_corpus(manifest)
    texts = [r["text"] for r in rows]
    assert len(texts) == len(set(texts)) == manifest["documents"]
    zh0, zh1 = normalize_text(ZH[0]), normalize_text(ZH[1])  # full-width "，" becomes ","
    assert zh1 in texts and zh0 in texts and "最后一行。" in texts
    assert normalize_text(LONG) in texts and normalize_text(NEAR) not in texts, "near duplicate kept"
    langs = {r["text"]: r["lang"] for r in rows}
    assert [langs[normalize_text(t)] for t in (YUE, BO, UG, ZH[1])] == ["yue", "bo", "ug", "zh"]
    # Word offsets come from jieba for Chinese and tile the words in order.
    row = next(r for r in rows if r["text"] == zh1)
    words = [row["text"][s:e] for s, e in row["word_offsets"]]
    assert "北京" in words and "首都" in words
    assert set(pq.read_schema(Path(manifest["uri"]) / manifest["shards"][0]["path"]).names) >= {
        "doc_id", "text", "lang", "lang_score", "source", "source_line", "sentence_offsets",
        "word_offsets", "n_chars", "sha1",
    }

    counts = manifest["counts"]
    assert counts["dedup.exact"] == 2  # ZH[1] repeated, ZH[2] again in news.jsonl.gz
    assert counts["dedup.near"] == 1
    quarantine = pq.read_table(Path(manifest["uri"]) / manifest["quarantine"]["path"]).to_pylist()
    reasons = sorted(q["reason"] for q in quarantine)
    assert reasons == ["empty", "invalid_json", "missing_field", "undecodable"]
    bad_line = next(q for q in quarantine if q["reason"] == "undecodable")
    assert bad_line["line"] == 12 and bad_line["source"].endswith("web.txt")
    assert manifest["by_language"]["zh"]["documents"] == sum(r["lang"] == "zh" for r in rows)

    # Every shard's checksum and row count are right.
    store = open_storage(manifest["uri"])
    for shard in manifest["shards"]:
        data = store.read_bytes(shard["path"])
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert pq.read_metadata(Path(manifest["uri"]) / shard["path"]).num_rows == shard["rows"]

    # The run is in MLflow: params, metrics, manifest artifact and the dataset input.
    mlflow.set_tracking_uri(get_settings().effective_mlflow_uri)
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.params["version"] == result.version
    assert run.data.metrics["documents"] == manifest["documents"]
    assert run.data.metrics["count/bad.undecodable"] == 1
    assert run.data.metrics["throughput/mb_per_s"] > 0
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    assert "manifest.json" in artifacts
    assert run.inputs.dataset_inputs[0].dataset.digest == result.version


def test_rerun_is_idempotent(prefect_server, tmp_path, small_config):
    sources = _write_sources(tmp_path / "raw")
    out = tmp_path / "corpora"
    first = ingest_flow(sources, "idem", output=str(out), config=small_config)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second = ingest_flow(sources, "idem", output=str(out), config=small_config.model_copy(update={"workers": 2}))
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert second.version == first.version and not second.created
    assert before == after, "a re-run wrote files"
    # A config change that shapes the output is a new version.
    third = ingest_flow(sources, "idem", output=str(out), config=small_config.model_copy(update={"min_chars": 10}))
    assert third.version != first.version and third.created


def test_dedup_against_earlier_version(prefect_server, tmp_path, small_config):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("\n".join(ZH[:3]) + "\n", encoding="utf-8")
    (raw / "b.txt").write_text("\n".join([ZH[0], ZH[3], "全新的一句话，之前从没出现过。"]) + "\n", encoding="utf-8")
    out = str(tmp_path / "corpora")
    v1 = ingest_flow([str(raw / "a.txt")], "grow", output=out, config=small_config)
    v2 = ingest_flow([str(raw / "b.txt")], "grow", output=out, config=small_config)
    texts = {r["text"] for r in _read_corpus(v2.manifest)}
    assert texts == {normalize_text(ZH[3]), normalize_text("全新的一句话，之前从没出现过。")}
    assert v2.manifest["dedup_against"] == [v1.version]
    assert v2.manifest["counts"]["dedup.exact_previous_version"] == 1


def test_missing_source_fails_before_writing(prefect_server, tmp_path, small_config):
    out = tmp_path / "corpora"
    good = _write_sources(tmp_path / "raw")
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        ingest_flow([*good, str(tmp_path / "does-not-exist.txt")], "missing", output=str(out), config=small_config)
    assert not out.exists() or not any(out.rglob("*"))


def test_ingest_from_and_to_s3_with_server_errors(prefect_server, s3_server, s3_bucket, tmp_path, small_config):
    local = _write_sources(tmp_path / "raw")
    raw = open_storage(f"{s3_bucket}/raw")
    for path in sorted((tmp_path / "raw").iterdir()):
        raw.write_bytes(path.name, path.read_bytes())
    reference = ingest_flow(local, "ref", output=str(tmp_path / "corpora"), config=small_config)

    s3_server.fail_next(3)  # the first requests get HTTP 500: retries must carry the run through
    result = ingest_flow([f"{s3_bucket}/raw/"], "s3corpus", output=f"{s3_bucket}/corpora", config=small_config)
    assert result.manifest_uri.startswith("s3://")
    assert result.version == reference.version  # same content and config, same version
    rows = _read_corpus(result.manifest)
    assert sorted(r["text"] for r in rows) == sorted(r["text"] for r in _read_corpus(reference.manifest))
    store = open_storage(f"{s3_bucket}/corpora")
    assert store.exists(f"s3corpus/{result.version}/manifest.json")
    assert not [k for k in store.list(f"s3corpus/{result.version}/") if "_staging" in k]


def test_two_workers_give_the_same_version(prefect_server, tmp_path, small_config):
    sources = _write_sources(tmp_path / "raw")
    one = ingest_flow(sources, "w", output=str(tmp_path / "one"), config=small_config)
    two = ingest_flow(sources, "w", output=str(tmp_path / "two"),
                      config=small_config.model_copy(update={"workers": 2}))
    assert two.version == one.version
    assert [s["sha256"] for s in two.manifest["shards"]] == [s["sha256"] for s in one.manifest["shards"]]


def test_chunks_left_empty_by_filters(prefect_server, tmp_path):
    """A chunk whose every document is filtered out still stages, dedups and publishes."""
    raw = tmp_path / "raw"
    raw.mkdir()
    zh = [f"第{i}条只有中文的句子，用来填满第一个处理块。" for i in range(120)]
    (raw / "a.txt").write_text("\n".join(zh + [BO, UG]) + "\n", encoding="utf-8")
    config = IngestConfig(workers=1, chunk_records=100, languages=["bo", "ug"])
    result = ingest_flow([str(raw / "a.txt")], "sparse", output=str(tmp_path / "out"), config=config)
    assert sorted(r["lang"] for r in _read_corpus(result.manifest)) == ["bo", "ug"]
    assert result.manifest["counts"]["langid.unwanted_language"] == 120
