"""The trainer core: config validation, LAMB and schedules, exact resume, atomic checkpoints, DDP, FSDP."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM

from plmops.infra.storage import LocalStorage, open_storage
from plmops.platform.training.checkpoint import Checkpointer
from plmops.platform.training.optim import Lamb, build_optimizer, lr_factor
from plmops.platform.training.trainer import TrainConfig, Trainer, real_tokens
from tests.platform.ddp_worker import ListStream, synthetic_batches, tiny_model

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on shared cores spinning OpenMP threads stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(config: TrainConfig, storage=None, batches=None, resume=None, dropout=0.0, stop_at=None):
    if isinstance(storage, Path):
        storage = open_storage(str(storage))
    """Run a trainer on a fresh tiny model; (result, {step: metrics}, trainer). `stop_at`: SIGTERM there."""
    seen: dict[int, dict[str, float]] = {}

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        seen[step] = metrics
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)

    batches = batches or synthetic_batches(config.steps * config.grad_accum)
    trainer = Trainer(
        tiny_model(dropout), ListStream(batches), config, storage=storage, on_metrics=on_metrics
    )
    return trainer.fit(resume=resume), seen, trainer


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("schedule", "step", "one of ('linear', 'cosine')"),
        ("optimizer", "sgd", "one of ('adamw', 'lamb')"),
        ("grad_accum", 0, "a positive integer"),
        ("warmup_steps", 11, "an integer in [0, steps]"),
        ("betas", (0.9, 1.0), "two numbers in [0, 1)"),
        ("max_grad_norm", -1.0, "None (no clipping) or a positive number"),
        ("compile", "yes", "True or False"),
        ("betas", 0.9, "two numbers in [0, 1)"),
        ("parallel", "zero3", "one of ('ddp', 'fsdp')"),
    ],
)
def test_config_errors_name_the_field_and_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as error:
        TrainConfig(steps=10, **{field: value})
    assert f"TrainConfig.{field} must be {allowed}, got {value!r}" in str(error.value)


def test_schedule_warms_up_to_the_peak_then_decays_to_zero():
    linear = [lr_factor(s, 4, 20, "linear") for s in range(21)]
    assert linear[:4] == [0.25, 0.5, 0.75, 1.0]
    assert linear[4] == 1.0 and all(a > b for a, b in itertools.pairwise(linear[4:]))
    assert linear[20] == 0.0 and linear[12] == pytest.approx(0.5)
    cosine = [lr_factor(s, 4, 20, "cosine") for s in range(21)]
    assert cosine[12] == pytest.approx(0.5) and cosine[8] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine[20] == pytest.approx(0.0, abs=1e-12)


def test_lamb_moves_every_tensor_by_lr_times_its_own_norm():
    torch.manual_seed(0)
    big, small = torch.nn.Parameter(torch.randn(8, 8) * 10), torch.nn.Parameter(torch.randn(8) * 0.01)
    zero = torch.nn.Parameter(torch.zeros(5))
    before = [p.detach().clone() for p in (big, small, zero)]
    for p in (big, small, zero):
        p.grad = torch.randn_like(p)
    Lamb([big, small, zero], lr=0.01, weight_decay=0.0).step()
    for p, old in zip((big, small), before):
        assert float((p.detach() - old).norm()) == pytest.approx(0.01 * float(old.norm()), rel=1e-4)
    # ||w|| = 0: trust ratio 1, so the first step is Adam's: lr * sign(grad) (up to eps).
    assert torch.allclose(zero.detach(), -0.01 * zero.grad.sign(), atol=1e-6)


def test_biases_and_layer_norms_are_not_decayed():
    optimizer = build_optimizer(tiny_model(), "adamw", 1e-3, 0.1, (0.9, 0.999))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_both_optimizers_fit_a_repeated_batch(optimizer):
    config = TrainConfig(
        steps=15, lr=1e-2 if optimizer == "adamw" else 1e-1, optimizer=optimizer, log_every=1
    )
    _, seen, _ = train(config, batches=synthetic_batches(1) * 15)
    assert seen[15]["loss"] < 0.8 * seen[1]["loss"]


def test_metrics_report_loss_lr_grad_norm_and_real_tokens():
    config = TrainConfig(steps=4, lr=1e-3, warmup_steps=2, log_every=2, max_grad_norm=0.01)
    _, seen, _ = train(config)
    assert sorted(seen) == [2, 4]
    assert seen[2]["lr"] == pytest.approx(1e-3) and seen[4]["lr"] == pytest.approx(0.5e-3)
    assert seen[2]["grad_norm"] > 0.01  # reported before clipping
    assert "mfu" not in seen[2] and seen[2]["tokens_per_s"] > 0  # no GPU peak on a CPU
    packed = {"input_ids": torch.ones(2, 4), "document_ids": torch.tensor([[1, 1, 2, 0], [1, 0, 0, 0]])}
    padded = {"input_ids": torch.ones(2, 4), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
    assert int(real_tokens(packed)) == 4 and int(real_tokens(padded)) == 5


def test_mfu_is_model_flops_per_second_over_the_device_peak():
    seen: dict[int, dict[str, float]] = {}
    model = tiny_model()
    trainer = Trainer(
        model,
        ListStream(synthetic_batches(2)),
        TrainConfig(steps=2, log_every=2),
        on_metrics=lambda step, metrics: seen.update({step: metrics}),
    )
    trainer.peak_flops = 1e9  # as on a GPU of the table; a CPU has no entry
    trainer.fit()
    dense = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("bert.embeddings"))
    per_token = 6 * dense + 12 * 2 * 32 * 16  # layers 2, hidden 32, rows of 16 tokens
    assert seen[2]["mfu"] * 1e9 == pytest.approx(seen[2]["tokens_per_s"] * per_token, rel=1e-9)


def test_sigterm_checkpoints_and_a_resumed_run_repeats_the_uninterrupted_losses(tmp_path):
    # Dropout on, warm-up, cosine decay and accumulation: every piece of state must come back.
    config = TrainConfig(
        steps=6, lr=3e-3, warmup_steps=2, schedule="cosine", grad_accum=2, log_every=1, checkpoint_every=100
    )
    straight = train(config, dropout=0.1)[1]
    handler = signal.getsignal(signal.SIGTERM)
    first, before, _ = train(config, storage=tmp_path, dropout=0.1, stop_at=3)
    assert signal.getsignal(signal.SIGTERM) == handler  # fit puts the previous handler back
    assert (first.step, first.preempted, first.checkpoint) == (3, True, "step-000003")
    assert sorted(before) == [1, 2, 3]
    second, after, _ = train(config, storage=tmp_path, dropout=0.1, resume="auto")
    assert (second.step, second.preempted) == (6, False)
    assert sorted(after) == [4, 5, 6]
    losses = {**before, **after}
    for step in range(1, 7):
        assert losses[step]["loss"] == pytest.approx(straight[step]["loss"], abs=1e-6), step
        assert losses[step]["lr"] == pytest.approx(straight[step]["lr"], rel=1e-12), step


def test_checkpoints_keep_the_last_k_and_load_with_from_pretrained(tmp_path):
    config = TrainConfig(steps=6, log_every=6, checkpoint_every=2, keep_last=2)
    _, _, trainer = train(config, storage=tmp_path)
    checkpointer = Checkpointer(open_storage(str(tmp_path)))
    assert checkpointer.completed() == [4, 6] and checkpointer.latest() == "step-000006"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000004", "step-000006"]
    saved = AutoModelForMaskedLM.from_pretrained(tmp_path / "step-000006" / "model")
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(saved.state_dict()[name], tensor), name


class FailingStorage(LocalStorage):
    """Dies while writing one key, as a pod killed in the middle of a checkpoint would."""

    def __init__(self, root: Path, fail_on: str) -> None:
        super().__init__(str(root))
        self.fail_on = fail_on

    def write_bytes(self, key: str, data: bytes) -> None:
        if key == self.fail_on:
            raise OSError(f"disk gone while writing {key}")
        super().write_bytes(key, data)


def test_a_save_that_dies_half_way_leaves_latest_on_the_previous_checkpoint(tmp_path):
    config = TrainConfig(steps=6, log_every=1, checkpoint_every=2)
    with pytest.raises(OSError, match="step-000004/ranks.pt"):
        train(config, storage=FailingStorage(tmp_path, "step-000004/ranks.pt"))
    assert Checkpointer(open_storage(str(tmp_path))).latest() == "step-000002"
    assert (tmp_path / "step-000004" / "optimizer.pt").exists()  # the torn folder is there, but unused
    result, seen, _ = train(config, storage=tmp_path, resume="auto")
    assert min(seen) == 3 and result.step == 6
    assert Checkpointer(open_storage(str(tmp_path))).completed() == [2, 4, 6]


def test_checkpoints_are_read_with_weights_only_and_keys_stay_inside_the_root(tmp_path):
    config = TrainConfig(steps=2, checkpoint_every=2)
    _, _, trainer = train(config, storage=tmp_path)
    storage = open_storage(str(tmp_path))
    buffer = io.BytesIO()
    torch.save({"state": Path("not/a/tensor")}, buffer)  # a pickled class: refused by weights_only
    storage.write_bytes("step-000002/optimizer.pt", buffer.getvalue())
    with pytest.raises(ValueError, match=r"step-000002/optimizer.pt: cannot be loaded with weights_only"):
        Checkpointer(storage).load("step-000002", trainer.model, trainer.optimizer, trainer.scheduler)
    with pytest.raises(ValueError, match="invalid key '../outside'"):
        storage.write_bytes("../outside", b"x")


def test_the_data_running_out_is_an_error_naming_the_step(tmp_path):
    config = TrainConfig(steps=3, grad_accum=2)
    with pytest.raises(RuntimeError, match=r"ran out at step 3 \(micro-batch 1 of 2\)"):
        train(config, batches=synthetic_batches(4))


def test_activation_checkpointing_gives_the_same_losses():
    config = TrainConfig(steps=3, lr=1e-3, log_every=1)
    plain = train(config)[1]
    checkpointed, trainer = train(TrainConfig(**{**config.__dict__, "activation_checkpointing": True}))[1:]
    assert trainer.model.is_activation_checkpointing
    for step in plain:
        assert checkpointed[step]["loss"] == pytest.approx(plain[step]["loss"], abs=1e-6)


def launch_two_ranks(out: Path, storage: Path, *options: str) -> dict:
    """Run ddp_worker.py under torchrun on 2 gloo CPU processes; the JSON rank 0 wrote."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(WORKER), "--out", str(out), "--storage", str(storage), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_ddp_processes_match_one_process_on_the_same_global_batch(tmp_path):
    steps = 4
    # One process: the two ranks' micro-batches, accumulated (interleaved as the ranks take them).
    single = train(
        TrainConfig(steps=steps, lr=1e-3, warmup_steps=1, log_every=1, grad_accum=2),
        batches=synthetic_batches(2 * steps),
    )[1]
    ddp = launch_two_ranks(tmp_path / "ddp.json", tmp_path / "ckpt", "--steps", str(steps))
    assert ddp["world"] == 2 and ddp["step"] == steps
    assert ddp["losses"] == pytest.approx([single[s]["loss"] for s in range(1, steps + 1)], abs=1e-5)
    ranks = torch.load(tmp_path / "ckpt" / "step-000004" / "ranks.pt", weights_only=True)
    assert [r["data"]["position"] for r in ranks] == [steps, steps]


def test_fsdp_on_two_processes_matches_one_process_resumes_exactly_and_saves_whole_weights(tmp_path):
    """LAMB, clipping, accumulation and activation checkpointing: BERT-large's recipe, on a tiny model.
    Each rank takes 2 micro-batches a step, so one process accumulating 4 sees the same global batch."""
    steps, stop_at = 4, 2
    config = TrainConfig(
        steps=steps, lr=1e-3, warmup_steps=1, log_every=1, grad_accum=4, optimizer="lamb", max_grad_norm=0.5
    )
    _, single, one = train(config, storage=tmp_path / "single", batches=synthetic_batches(4 * steps))
    options = ["--parallel", "fsdp", "--optimizer", "lamb", "--max-grad-norm", "0.5", "--grad-accum", "2"]
    options += ["--activation-checkpointing", "--steps", str(steps), "--stop-at", str(stop_at)]
    fsdp = launch_two_ranks(tmp_path / "fsdp.json", tmp_path / "ckpt", *options)

    assert single[1]["grad_norm"] > 0.5  # the clipping is active
    assert fsdp["losses"] == pytest.approx([single[s]["loss"] for s in range(1, steps + 1)], abs=1e-5)
    # Stopped at step 2 and resumed, under FSDP and from a DDP run's checkpoint: the same curve, exactly.
    for run in ("same", "other"):
        assert fsdp[run]["stopped"] == [stop_at, True]
        assert fsdp[run]["losses"] == fsdp["losses"], run
    assert fsdp["step"] == steps

    whole = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    # LAMB scales each tensor by ||w|| / ||update|| of the whole tensor, not of a rank's shard: the weights
    # moved by up to 4e-3 and agree to float rounding.
    for name, tensor in one.model.state_dict().items():
        assert torch.allclose(whole["straight"][name], tensor, rtol=0, atol=1e-6), name
    folder = tmp_path / "ckpt" / "same" / "step-000004"
    saved = AutoModelForMaskedLM.from_pretrained(folder / "model").state_dict()
    assert saved.keys() == whole["resumed"].keys()
    for name, tensor in whole["resumed"].items():
        assert torch.equal(saved[name], tensor), name
        assert torch.equal(whole["straight"][name], tensor), name
    decoder, embeddings = (
        saved["cls.predictions.decoder.weight"],
        saved["bert.embeddings.word_embeddings.weight"],
    )
    assert decoder.data_ptr() == embeddings.data_ptr()  # still tied after loading

    # The files are those of a one-process run: the tied decoder left out, optimizer state by name.
    plain = tmp_path / "single" / "step-000004"
    assert load_file(folder / "model" / "model.safetensors").keys() == (
        load_file(plain / "model" / "model.safetensors").keys()
    )
    sharded_state = torch.load(folder / "optimizer.pt", weights_only=True)["state"]
    plain_state = torch.load(plain / "optimizer.pt", weights_only=True)["state"]
    assert sharded_state.keys() == plain_state.keys()
    assert "cls.predictions.transform.dense.weight" in plain_state
    for name, moments in plain_state.items():
        assert sharded_state[name]["exp_avg"].shape == moments["exp_avg"].shape, name
