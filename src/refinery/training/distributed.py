"""Data-parallel fine-tuning: ``training.processes_per_node`` processes, one per GPU, under torchrun.

:func:`train` is what the finetune step calls. With one process it fine-tunes in this process. With
more, it starts ``torch.distributed.run`` (torchrun) with that many workers on this node; each worker
runs :func:`refinery.training.finetune.finetune` on its shard of every batch (the Hugging Face Trainer
sets up DistributedDataParallel from torchrun's environment: NCCL on GPUs, gloo on CPU), rank 0 writes
the model, and this process reads the result back. torchrun passes SIGTERM on to the workers, so a
preempted node still checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from refinery.config import RunConfig, step_config
from refinery.errors import TrainingError, TrainingPreempted
from refinery.training.finetune import finetune
from refinery.training.records import TRAINING_JSON, TrainingResult

# A worker stopped by SIGTERM after checkpointing exits with this (EX_TEMPFAIL): try again later.
PREEMPTED_EXIT = 75


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(
    processes: int, config_file: Path, data_dir: Path, out_dir: Path, port: int, run_key: str | None
) -> list[str]:
    """The torchrun command line starting ``processes`` workers on this node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc_per_node={processes}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        "refinery.training.distributed",
        "--config",
        str(config_file),
        "--data",
        str(data_dir),
        "--out",
        str(out_dir),
        *(["--run-key", run_key] if run_key else []),
    ]


def train(cfg: RunConfig, data_dir: Path, out_dir: Path, run_key: str | None = None) -> TrainingResult:
    """Fine-tune with ``cfg.training.processes_per_node`` data-parallel processes (in this one for 1).

    Raises:
        TrainingError: Training failed in this process or in a worker (the message gives its exit code).
    """
    processes = cfg.training.processes_per_node
    if processes == 1:
        return finetune(cfg, data_dir, out_dir, run_key)
    with tempfile.TemporaryDirectory(prefix="refinery-ddp-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(cfg.sections()), encoding="utf-8")
        command = launch_command(processes, config_file, Path(data_dir), Path(out_dir), _free_port(), run_key)
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
        print(f"data-parallel training: {processes} processes on this node", flush=True)
        completed = subprocess.run(command, env=env, check=False)
    if completed.returncode == PREEMPTED_EXIT:
        raise TrainingPreempted(
            f"data-parallel training was stopped by a signal after checkpointing; re-run with run key {run_key!r}"
        )
    if completed.returncode != 0:
        raise TrainingError(
            f"data-parallel training with {processes} processes failed (torchrun exit code "
            f"{completed.returncode}); the workers' output is above"
        )
    return TrainingResult.from_json(Path(out_dir) / TRAINING_JSON)


def main(argv: list[str] | None = None) -> int:
    """A torchrun worker: fine-tune as one rank of the process group."""
    parser = argparse.ArgumentParser(prog="refinery.training.distributed")
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-key")
    args = parser.parse_args(argv)
    cfg = step_config(**json.loads(Path(args.config).read_text(encoding="utf-8")))
    try:
        finetune(cfg, Path(args.data), Path(args.out), args.run_key)
    except TrainingPreempted as exc:
        print(f"rank {os.environ.get('RANK', '0')}: {exc}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
