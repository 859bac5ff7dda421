"""Stub of the README's train.py: pretends to train, writes checkpoints into --save-dir."""

import argparse
import os
import time

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("--save-dir", required=True)
p.add_argument("--norm", required=True)
p.add_argument("--moment", type=float, default=0.1)
p.add_argument("--early-stop", action="store_true")
a = p.parse_args()
os.makedirs(a.save_dir, exist_ok=True)
epochs = 3 if a.early_stop else 5
for epoch in range(1, epochs + 1):
    time.sleep(0.05)
    loss = 5.0 / epoch + (0.3 if a.norm == "batch" else 0.1) + a.moment
    print(f"epoch {epoch} | loss {loss:.3f} | gpu {os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    with open(os.path.join(a.save_dir, f"checkpoint{epoch}.pt"), "w") as f:
        f.write(f"{loss}\n")
