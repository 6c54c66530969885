"""Run by test_exactly_once under ``torchrun --nproc_per_node=2``: each rank reads its share of a
Kafka topic (through a DataLoader with workers) and writes the (partition, offset) pairs it got.

Usage: ddp_reader.py BOOTSTRAP TOPIC OUT_DIR NUM_WORKERS
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch.distributed as dist

import tensorfeed as tfd


def main() -> None:
    bootstrap, topic, out_dir, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    warnings.filterwarnings("ignore", message=".*set_vital.*")
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    stream = tfd.KafkaStream(bootstrap, topic, timeout=20)
    loader = tfd.DataLoader(stream, batch_size=16, num_workers=workers)
    seen = []
    padded = 0
    for batch in loader:
        if loader.stats.ddp_padded > padded:  # the loader repeats a finished rank's last batch
            padded = loader.stats.ddp_padded  # so ranks stay in step (ddp="pad"): not new data
            continue
        seen.extend(zip(batch["partition"].tolist(), batch["offset"].tolist()))
    offsets = [[t, p, o] for (t, p), o in stream.offsets(loader).items()]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "pairs": seen, "offsets": offsets, "padded": padded}, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
