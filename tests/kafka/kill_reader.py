"""Run by test_checkpoint: reads a topic, saves the loader's state after a few batches, prints
SAVED and waits to be SIGKILLed (the test then resumes from the saved state in another process).

Usage: kill_reader.py BOOTSTRAP TOPIC STATE_PATH SEEN_PATH NUM_WORKERS
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import torch

import tensorfeed as tfd


def main() -> None:
    bootstrap, topic, state_path, seen_path = sys.argv[1:5]
    workers = int(sys.argv[5])
    warnings.filterwarnings("ignore", message=".*set_vital.*")
    stream = tfd.KafkaStream(bootstrap, topic, group_id="killed-run", timeout=20)
    loader = tfd.DataLoader(stream, batch_size=10, num_workers=workers)
    seen = []
    for i, batch in enumerate(loader):
        seen.extend(zip(batch["partition"].tolist(), batch["offset"].tolist()))
        if i == 4:
            torch.save(loader.state_dict(), state_path + ".tmp")
            os.replace(state_path + ".tmp", state_path)
            with open(seen_path, "w") as f:
                json.dump(seen, f)
            print("SAVED", flush=True)
            time.sleep(600)  # the test kills us here, mid-epoch, with batches prefetched


if __name__ == "__main__":
    main()
