"""Scale a run out over the processes that `accelerate launch` (or torchrun) starts.

Every process (rank) loads the model on its own device and generates its share of each task's
rows. A share is made of whole batches of the single-process plan, dealt round-robin (`deal`),
so a fresh run makes exactly the batches one process would: sharding never changes a number.
Each rank appends to its own `samples.rank{R}.jsonl`; the main process gathers the records over
a gloo group, scores them, computes the statistics once and writes the run; a rerun reads every
shard file and generates only the samples still missing.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch

from harness.errors import UserError
from harness.models import LoadedModel
from harness.store import CorruptLineWarning, SampleLog, folder_lock, read_jsonl

TIMEOUT_ENV = "HARNESS_DIST_TIMEOUT"  # seconds a rank waits for the others (default 24 hours)
SHARD_GLOB = "samples.rank*.jsonl"
_WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
T = TypeVar("T")


class RankFailed(UserError):
    """Another process of a distributed run stopped (or timed out); finished samples are kept."""


def world_size() -> int:
    """Processes of this run according to the launcher's environment (1 when not launched)."""
    for name in _WORLD_ENV:
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
    return 1


def timeout() -> timedelta:
    """How long a collective waits for the slowest rank: long, since a rank may legitimately wait
    for another's whole shard on a resume (a dead rank is noticed at once: its sockets close)."""
    try:
        return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 24 * 3600)))
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds") from None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


@dataclass
class Cluster:
    """This process's place in a distributed run, and collectives on Python objects."""

    rank: int
    world: int
    device: torch.device
    group: Any  # a gloo process group (objects travel on CPU whatever the device backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _collective(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except RuntimeError as err:  # DistBackendError, gloo "Connection closed by peer", timeouts
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RankFailed(
                f"rank {self.rank} of {self.world}: {what} failed because another process of the run "
                f"stopped or did not answer within {timeout()} ({detail}); finished samples are kept: "
                "rerun the same command to generate only the missing ones") from None

    def barrier(self, what: str) -> None:
        import torch.distributed as dist

        self._collective(what, lambda: dist.barrier(group=self.group))

    def broadcast(self, obj: T, what: str) -> T:
        """The main process's `obj`, on every rank."""
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        self._collective(what, lambda: dist.broadcast_object_list(box, src=0, group=self.group))
        return box[0]

    def gather(self, obj: T, what: str) -> list[T] | None:
        """Every rank's `obj` in rank order, on the main process (None elsewhere)."""
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world if self.is_main else None
        self._collective(what, lambda: dist.gather_object(obj, out, dst=0, group=self.group))
        return out

    def place(self, lm: LoadedModel) -> None:
        """Put the model on this rank's device (each rank holds a whole copy)."""
        device_map = getattr(lm.model, "hf_device_map", None) or {}
        if len({str(d) for d in device_map.values()}) > 1:
            raise UserError("a model spread over several devices (device_map) runs in a single process; "
                            "under accelerate launch every process holds a whole copy on its own device")
        if lm.device != self.device:
            lm.model.to(self.device)

    def share(self, produce: Callable[[], T], what: str) -> T:
        """Main: `produce()` and send the value (or its error) to every rank. Others: receive it.

        The main process produces with as many CPU threads as a single process would use (the
        other ranks are idle meanwhile): faster, and scores computed as a single process does.
        """
        if not self.is_main:
            status, value = self.broadcast(None, what)
            if status == "error":
                raise UserError(value)
            return value
        try:
            with _threads(_single_process_threads()):
                value = produce()
        except BaseException as err:
            with suppress(Exception):  # the original error is the one to report
                self.broadcast(("error", f"the main process (rank 0) failed: {err}"), what)
            raise
        self.broadcast(("ok", value), what)
        return value


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _single_process_threads() -> int:
    """torch's default thread count when OMP_NUM_THREADS is unset (the machine's physical cores),
    which launchers set to 1 per process."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


@functools.cache
def cluster() -> Cluster | None:
    """The distributed run this process belongs to, set up once; None for a single process."""
    if world_size() <= 1:
        if _flag("ACCELERATE_USE_CPU") and "LOCAL_RANK" not in os.environ:
            print("note: one process: `accelerate launch --cpu` starts several only through MPI; without "
                  "it use `accelerate launch --multi_gpu --num_processes N` with ACCELERATE_USE_CPU=1 "
                  "(README: Scaling out with accelerate)", file=sys.stderr)
        return None
    import torch.distributed as dist
    from accelerate import PartialState

    cpu = _flag("ACCELERATE_USE_CPU") or not torch.accelerator.is_available()
    state = PartialState(cpu=cpu, timeout=timeout())
    if state.num_processes <= 1 or not dist.is_initialized():
        raise UserError(f"launched as {world_size()} processes, but accelerate set up no process group "
                        f"(distributed type {state.distributed_type})")
    _limit_threads(int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes)))
    group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo",
                                                                                   timeout=timeout())
    return Cluster(state.process_index, state.num_processes, state.device, group)


def model_device() -> torch.device | str:
    """Where to load the model: this rank's device under accelerate launch, else the CPU."""
    cl = cluster() if world_size() > 1 else None
    return cl.device if cl else "cpu"


def is_main_process() -> bool:
    """Whether this process reports results: in a distributed run only the main process does."""
    cl = cluster() if world_size() > 1 else None
    return cl is None or cl.is_main


def _limit_threads(local_processes: int) -> None:
    """Never more CPU threads on a machine than cores: N processes share them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = max(1, cores // max(1, local_processes))
    if torch.get_num_threads() > per_process:
        torch.set_num_threads(per_process)


@contextmanager
def run_lock(out: Path, cl: Cluster | None) -> Iterator[None]:
    """Hold the run folder's lock: a single process takes it; in a distributed run the main
    process does, and every rank stops if it could not (before anyone writes a sample)."""
    if cl is None:
        with folder_lock(out):
            yield
        return
    lock = folder_lock(out)
    error = None
    if cl.is_main:
        try:
            lock.__enter__()
        except UserError as err:
            error = str(err)
    error = cl.broadcast(error, "taking the run folder's lock")
    if error:
        raise UserError(error)
    try:
        yield
    finally:
        if cl.is_main:
            lock.__exit__(None, None, None)


def shard_path(out: Path, rank: int) -> Path:
    return out / f"samples.rank{rank}.jsonl"


def open_log(out: Path, cl: Cluster | None) -> SampleLog:
    """This process's append-only sample log (samples.jsonl, or its rank's shard file), whose
    `records` also hold every sample already in the folder: samples.jsonl and all shard files
    (of any earlier world size), so nothing finished is generated twice. Broken lines are
    reported by the main process (and each rank for its own file)."""
    own = out / "samples.jsonl" if cl is None else shard_path(out, cl.rank)
    log = SampleLog(own)
    known: dict[str, dict[str, Any]] = {}
    for path in [out / "samples.jsonl", *sorted(out.glob(SHARD_GLOB))]:
        if path == own:
            continue
        with warnings.catch_warnings():
            if cl is not None and not cl.is_main:
                warnings.simplefilter("ignore", CorruptLineWarning)
            for record in read_jsonl(path):
                if "key" in record:
                    known.setdefault(record["key"], record)
    log.records = {**known, **log.records}
    return log


def remove_shards(out: Path) -> None:
    """After samples.jsonl holds every record: the shard files are no longer needed."""
    for path in out.glob(SHARD_GLOB):
        path.unlink(missing_ok=True)


def deal(n_rows: int, batch_size: int, world: int, first_batch: int = 0) -> list[int]:
    """The rank of each of `n_rows` planned rows: batches of `batch_size` consecutive rows (the
    batches one process would make) dealt round-robin, counting from batch `first_batch` (the
    batches of earlier tasks), so ranks share a run's batches evenly across its tasks."""
    return [(first_batch + i // batch_size) % world for i in range(n_rows)]


def report_resume(task: str, keys: Sequence[str], owners: Sequence[int], done: Any) -> None:
    """On a rerun: which ranks' shards of `task` are incomplete, and how much is left."""
    missing = Counter(o for k, o in zip(keys, owners, strict=True) if k not in done)
    if not missing or sum(missing.values()) == len(keys):
        return
    total = Counter(owners)
    shards = ", ".join(f"rank {r}: {missing[r]} of {total[r]}" for r in sorted(missing))
    print(f"resuming {task}: {sum(missing.values())} of {len(keys)} samples missing ({shards}); "
          "generating only those", file=sys.stderr)


def collect(cl: Cluster, plans: Sequence[tuple[str, Sequence[str], Sequence[int]]],
            records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Gather every rank's samples of its shards on the main process; `plans` is (task, keys,
    owners) per task. Main: every planned record by key; a shard still incomplete is an error
    that names its rank. Other ranks: None."""
    import hashlib

    digest = hashlib.sha256("\n".join(k for _, keys, _ in plans for k in keys).encode()).hexdigest()
    mine = {k: records[k] for _, keys, owners in plans for k, o in zip(keys, owners, strict=True)
            if o == cl.rank and k in records}
    parts = cl.gather((digest, mine), "gathering the samples")
    if parts is None:
        return None
    merged = dict(records)
    for rank, (theirs, found) in enumerate(parts):
        if theirs != digest:
            raise UserError(f"rank {rank} planned other samples than rank 0: every process must see the "
                            "same task files, model weights and harness version")
        merged.update(found)
    for task, keys, owners in plans:
        missing = Counter(o for k, o in zip(keys, owners, strict=True) if k not in merged)
        if missing:
            shards = ", ".join(f"rank {r} ({n} samples)" for r, n in sorted(missing.items()))
            raise RankFailed(f"task {task}: the shards of {shards} are incomplete; rerun the same "
                             "command to generate only the missing samples")
    return merged
