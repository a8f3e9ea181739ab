"""The `plmops` command: help everywhere, info without secrets, ingest with clear errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from plmops.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["info"], ["ingest"], ["demo"]])
def test_help_everywhere(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_info_prints_locations_not_secrets(monkeypatch, plmops_home):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert str(plmops_home) in result.output and "do-not-print-me" not in result.output


def test_ingest_prints_version_and_manifest(prefect_server, plmops_home, tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("命令行摄取一条中文句子。\n第二条不同的中文句子。\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(src), "--name", "cli", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "version:" in result.output and "manifest.json" in result.output
    again = runner.invoke(app, ["ingest", str(src), "--name", "cli", "--workers", "1"])
    assert "already complete" in again.output


def test_ingest_missing_source_exits_nonzero(prefect_server, plmops_home, tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.txt"), "--name", "x"])
    assert result.exit_code == 1
    assert "nope.txt" in result.output


def test_ingest_bad_config_names_the_field(plmops_home, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("near_threshold: 3\nworkerz: 2\n")
    result = runner.invoke(app, ["ingest", "x.txt", "--name", "x", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "near_threshold" in result.output and "workerz" in result.output
