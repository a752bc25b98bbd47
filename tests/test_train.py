"""The training loop (ablations/engine/train.py): it learns, EMA and label dropout follow their formulas,
data-parallel replicas stay identical, a run killed with SIGKILL resumes bit-exactly, and NaN losses or bad
checkpoints stop it clearly."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from _ddp_worker import NUM_CLASSES, MemorySource, tiny_config
from torch import nn

from ablations.engine.autoencoders import SmallAEConfig
from ablations.engine.cache import build_cache
from ablations.engine.data import EmbeddedDataset
from ablations.engine.specs import Runtime, TrainConfig
from ablations.engine.train import (
    INIT_STREAM,
    CheckpointError,
    NonFiniteLossError,
    ema_update,
    generator,
    latest_checkpoint,
    learning_rate,
    load_stage,
    make_batch,
    read_jsonl,
    stage_kwargs,
    train,
)
from ablations.engine.typed import TypedDataError, from_data
from msf.autoencoder import KLAutoencoder
from msf.dit import DiT
from msf.factorize import make_factorization, make_scales

WORKER = Path(__file__).with_name("_ddp_worker.py")
QUIET = lambda _: None  # noqa: E731


def _train(run_dir: Path, source: MemorySource | None = None, **changes) -> dict:
    source = source or MemorySource()
    return train(tiny_config(**changes), source, source.factorization, run_dir, log=QUIET)


def _stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def _worker(run_dir: Path, steps: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(WORKER), str(run_dir), str(steps), *args]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


# ----------------------------------------------------------------------------------------------------------------------
# Learning, EMA, label dropout, warm-up


@pytest.fixture(scope="module")
def target_cache(tmp_path_factory):
    """A real memory-mapped TargetCache: 64 embedded 32-px images through a random-weight f=4 AutoencoderKL (8x8x4)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # SmallAEConfig.build initialises from the global RNG
        vae = SmallAEConfig(block_out_channels=(8, 16, 16), norm_num_groups=8).build(32)
    ae = KLAutoencoder(vae, name="random-small-ae")
    factorization = make_factorization("residual", make_scales([4, 8], 8))
    dataset = EmbeddedDataset("train", 32, NUM_CLASSES, seed=0, length=64)
    root = tmp_path_factory.mktemp("cache")
    return build_cache(root, dataset, ae, factorization, shard_size=48, flip="none", log=QUIET), factorization


@pytest.mark.e2e
def test_loss_decreases_on_a_target_cache_and_the_final_stage_reloads(target_cache, tmp_path):
    cache, factorization = target_cache
    metrics = train(tiny_config(steps=60, ckpt_every=30), cache, factorization, tmp_path, log=QUIET)
    losses = [s["loss"] for s in _stats(tmp_path)]
    assert len(losses) == 60
    # the zero-initialised output starts at E||x1 - z0||^2 (about 1); 60 AdamW steps must at least halve it (seeds 0-2
    # reach 0.27-0.31 of the start: the -z0 part of the velocity is predictable from z_t)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10, losses
    assert set(_stats(tmp_path)[0]) == {"step", "loss", "lr", "grad_norm", "img_per_s", "data_wait_s"}
    assert metrics["kind"] == "train" and metrics["model"] == "msf" and metrics["steps"] == 60
    assert (metrics["stage"], metrics["num_stages"], metrics["scale_size"]) == (1, 2, 8)
    assert metrics["final_loss"] == losses[-1] and 0 <= metrics["data_wait_frac"] < 1
    # load_stage rebuilds exactly the EMA weights of the last checkpoint, from ema.safetensors + model.json only
    stage = load_stage(tmp_path)
    ckpt = safetensors.torch.load_file(str(latest_checkpoint(tmp_path / "checkpoints").with_suffix(".safetensors")))
    for k, v in stage.state_dict().items():
        assert torch.equal(v, ckpt[f"ema/{k}"]), k
    assert not stage.training and stage.prior_channels == 4 and stage.input_size == 8


def test_ema_update_matches_its_closed_form():
    g = torch.Generator().manual_seed(0)
    ema, model = nn.Linear(5, 3), nn.Linear(5, 3)
    for p in [*ema.parameters(), *model.parameters()]:
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
    expected = [0.9 * e + 0.1 * p for e, p in zip(ema.parameters(), model.parameters(), strict=True)]
    ema_update(ema, model, 0.9)
    for e, x in zip(ema.parameters(), expected, strict=True):
        # float64: mul then add vs the closed form differ by rounding only
        torch.testing.assert_close(e.data, x, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_label_dropout_rate_is_p(p):
    cfg = tiny_config(label_dropout=p, batch_size=64)
    source = MemorySource()
    drops = torch.cat([make_batch(s, cfg, source, source.factorization, 0, 1).drop for s in range(50)]).float()
    n = drops.numel()
    # binomial(n = 3200, p): 5 standard deviations, a false alarm rate below 1e-6
    assert abs(drops.mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5


def test_dropped_labels_train_the_null_class_only(tmp_path):
    # weight_decay = 0: an embedding row without gradient keeps its initial value under AdamW
    cfg = tiny_config(label_dropout=0.5, num_classes=NUM_CLASSES + 2)  # classes 4 and 5 never occur in the data
    source = MemorySource()
    train(cfg, source, source.factorization, tmp_path, log=QUIET)
    kwargs = stage_kwargs(cfg, source.factorization, channels=4)
    init = DiT(**kwargs, generator=generator(cfg.seed, INIT_STREAM)).y_embedder.embedding_table.weight
    ckpt = safetensors.torch.load_file(str(latest_checkpoint(tmp_path / "checkpoints").with_suffix(".safetensors")))
    trained = ckpt["model/y_embedder.embedding_table.weight"]
    null = NUM_CLASSES + 2
    assert not torch.equal(trained[null], init[null])  # the null class was used
    assert torch.equal(trained[NUM_CLASSES : NUM_CLASSES + 2], init[NUM_CLASSES : NUM_CLASSES + 2])  # absent classes


def test_learning_rate_warms_up_linearly_then_stays():
    cfg = tiny_config(lr=1e-3, warmup_steps=4)
    assert [learning_rate(s, cfg.train) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(0, tiny_config(lr=1e-3).train) == 1e-3


@pytest.mark.parametrize(
    "cls, change, message",
    [
        (TrainConfig, dict(lr=0.0), "lr=0.0: expected a value > 0"),
        (TrainConfig, dict(label_dropout=1.0), "label_dropout=1.0: expected a value in [0, 1)"),
        (TrainConfig, dict(keep_last=0), "keep_last=0: expected a value > 0"),
        (TrainConfig, dict(ema_decay=1.5), "ema_decay=1.5: expected a value in [0, 1]"),
        (TrainConfig, dict(lr="nan"), "lr='nan': expected a finite number"),
        (Runtime, dict(device="tpu"), "device='tpu' is not one of: auto, cpu, cuda"),
    ],
)
def test_bad_config_is_rejected(cls, change, message):
    with pytest.raises(TypedDataError) as err:
        from_data(cls, change)
    assert message in str(err.value)


# ----------------------------------------------------------------------------------------------------------------------
# Data parallel (2 processes, gloo) and exact resume after SIGKILL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_two_process_gloo_replicas_stay_identical(tmp_path):
    port, steps = str(_free_port()), 6
    procs = []
    for rank in range(2):
        env = dict(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(_worker(tmp_path / "run", steps, "--dump", str(tmp_path / f"rank{rank}.safetensors"), env=env))
    for proc in procs:
        _finish(proc)
    r0, r1 = (safetensors.torch.load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    assert r0.keys() == r1.keys() and len(r0) > 0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # bit-identical: both ranks apply the same all-reduced gradients
    # the replicas trained (each on its half of the batch): the weights left their initialisation
    assert len(_stats(tmp_path / "run")) == steps
    assert r0["model/final_layer.linear.weight"].abs().sum() > 0  # zero at initialisation (adaLN-Zero)


@pytest.mark.e2e
def test_sigkill_at_a_random_step_then_resume_is_bit_exact(tmp_path):
    steps, delay = 40, "0.03"  # the delay per batch keeps the run alive long enough to be killed mid-way
    kill_at = random.randint(9, 30)  # not a multiple of ckpt_every (4) in general: some steps are redone
    reference = _worker(tmp_path / "reference", steps, "--delay", delay)
    killed = _worker(tmp_path / "killed", steps, "--delay", delay)
    stats = tmp_path / "killed" / "stats.jsonl"
    deadline = time.monotonic() + 120
    while not (stats.exists() and any(json.loads(x)["step"] >= kill_at for x in stats.read_text().splitlines()[:-1])):
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    last = read_jsonl(stats)[-1]["step"]  # a torn last line is skipped
    assert last < steps, f"killed at step {last} (wanted >= {kill_at}), too late to test a resume"
    _finish(_worker(tmp_path / "killed", steps, "--delay", delay))
    _finish(reference)
    for name in ("ema.safetensors", f"checkpoints/step_{steps:08d}.safetensors"):  # model, EMA and optimizer
        a, b = (tmp_path / run / name for run in ("reference", "killed"))
        assert a.read_bytes() == b.read_bytes(), f"{name} differs after a kill at step {last}"
    key = lambda r: (r["step"], r["loss"], r["grad_norm"], r["lr"])  # noqa: E731
    assert [key(r) for r in _stats(tmp_path / "killed")] == [key(r) for r in _stats(tmp_path / "reference")]


# ----------------------------------------------------------------------------------------------------------------------
# Fast paths match the plain path


def test_prefetch_thread_trains_the_same_bits_as_inline_loading(tmp_path):
    _train(tmp_path / "inline", prefetch=False)
    _train(tmp_path / "thread", prefetch=True)
    a, b = ((tmp_path / run / "ema.safetensors").read_bytes() for run in ("inline", "thread"))
    assert a == b  # batches are pure functions of (seed, step, rank): where they are made cannot matter


def test_fused_adamw_matches_the_for_loop_adamw(tmp_path):
    _train(tmp_path / "loop", fused_adamw=False, ema_decay=0.0)  # ema_decay 0: ema.safetensors = the final weights
    _train(tmp_path / "fused", fused_adamw=True, ema_decay=0.0)
    loop, fused = (safetensors.torch.load_file(str(tmp_path / run / "ema.safetensors")) for run in ("loop", "fused"))
    for k, w in loop.items():
        # 20 steps at lr 1e-3: float32 rounding of a different operation order, amplified by Adam's 1/sqrt(v)
        # normalisation, stays far below one step's size (1e-3); measured max difference 3e-7
        torch.testing.assert_close(fused[k], w, rtol=0, atol=1e-5, msg=k)
    assert loop["final_layer.linear.weight"].abs().sum() > 0  # it trained (zero at initialisation)


def test_compiled_training_step_matches_eager(tmp_path):
    _train(tmp_path / "eager", ema_decay=0.0, steps=8)
    _train(tmp_path / "compiled", ema_decay=0.0, steps=8, compile=True)
    load = lambda run: safetensors.torch.load_file(str(tmp_path / run / "ema.safetensors"))  # noqa: E731
    eager, fast = load("eager"), load("compiled")
    for k, w in eager.items():
        # inductor fuses and reorders float32 forward and backward work: rounding, amplified by Adam's normalisation
        # over 8 steps at lr 1e-3, stays far below one step's size
        torch.testing.assert_close(fast[k], w, rtol=0, atol=1e-4, msg=k)
    losses = [[r["loss"] for r in _stats(tmp_path / run)] for run in ("eager", "compiled")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# NaN loss and bad checkpoints


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    source = MemorySource(poison_from=7)  # call 1 probes the channels, call 1 + s fetches step s: step 6 is NaN
    stop = r"diverged at step 6: the loss is nan .*last finite checkpoint .*step_00000004\.json.*lower train.lr"
    with pytest.raises(NonFiniteLossError, match=stop):
        _train(tmp_path, source, ckpt_every=2, keep_last=1)
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == [
        "step_00000004.json",
        "step_00000004.safetensors",
    ]
    assert not (tmp_path / "ema.safetensors").exists()
    with pytest.raises(NonFiniteLossError, match="a previous run; delete .*diverged.json"):  # a rerun: at once
        _train(tmp_path, ckpt_every=2, keep_last=1, steps=8)
    (tmp_path / "diverged.json").unlink()
    assert _train(tmp_path, ckpt_every=2, keep_last=1, steps=8)["steps"] == 8  # the kept checkpoint resumes


def test_absurd_learning_rate_never_writes_a_non_finite_checkpoint(tmp_path):
    """lr 1e30: the weights overflow; training stops before a non-finite checkpoint is written, every kept
    checkpoint holds finite tensors only, and the stop names the step and what to change."""
    with pytest.raises(NonFiniteLossError, match=r"diverged at step \d+: .*train.lr=1e\+30"):
        _train(tmp_path, lr=1e30, ckpt_every=1, keep_last=100, steps=20)
    for tensors in sorted((tmp_path / "checkpoints").glob("*.safetensors")):
        assert all(torch.isfinite(v).all() for v in safetensors.torch.load_file(str(tensors)).values()), tensors
    assert json.loads((tmp_path / "diverged.json").read_text())["step"] >= 1


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_intact_one(tmp_path):
    _train(tmp_path, steps=8, ckpt_every=4, keep_last=2)  # checkpoints at steps 4 and 8
    _flip_a_byte(tmp_path / "checkpoints" / "step_00000008.safetensors")
    logs: list[str] = []
    source = MemorySource()
    job = tiny_config(steps=12, ckpt_every=4, keep_last=2)
    metrics = train(job, source, source.factorization, tmp_path, logs.append)
    assert metrics["steps"] == 12
    assert any("step_00000008.safetensors is corrupt" in line for line in logs), logs
    assert any("resumed from" in line and "step_00000004.json at step 4" in line for line in logs), logs
    assert [r["step"] for r in _stats(tmp_path)] == list(range(1, 13))  # steps 5-8 were trained again


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained")
    _train(run, steps=4)
    return run


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, change, message",
    [
        (lambda c: _flip_a_byte(c / "step_00000004.safetensors"), {}, "corrupt"),
        (lambda c: (c / "step_00000004.safetensors").write_bytes(b"\0" * 10), {}, "corrupt"),
        (lambda c: (c / "step_00000004.json").write_text('{"step": 4, "tens'), {}, "cannot read"),
        (lambda c: (c / "step_00000004.safetensors").unlink(), {}, "cannot read"),
        (lambda c: None, dict(lr=2e-3), r"different config \(train.lr: 0.001 -> 0.002\)"),
        (lambda c: None, dict(model_overrides=dict(depth=3, hidden_size=32, num_heads=2)), "different config"),
    ],
)
def test_bad_checkpoint_is_an_error_not_a_fresh_start(trained_run, tmp_path, damage, change, message):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    damage(run / "checkpoints")
    with pytest.raises(CheckpointError, match=message):
        _train(run, **{"steps": 8, **change})


def test_more_steps_resume_an_existing_run(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _train(run, steps=6)
    assert [s["step"] for s in _stats(run)] == [1, 2, 3, 4, 5, 6]
