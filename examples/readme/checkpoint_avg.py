"""Stub of the README's checkpoint_avg.py: averages the last --num checkpoints."""

import argparse
import glob
import os

p = argparse.ArgumentParser()
p.add_argument("--inputs", required=True)
p.add_argument("--num", type=int, default=5)
p.add_argument("--output", required=True)
a = p.parse_args()
ckpts = sorted(glob.glob(os.path.join(a.inputs, "checkpoint*.pt")))[-a.num :]
if not ckpts:
    raise SystemExit(f"no checkpoints in {a.inputs}")
values = [float(open(c).read()) for c in ckpts]
with open(a.output, "w") as f:
    f.write(f"{sum(values) / len(values)}\n")
print(f"averaged {len(ckpts)} checkpoints into {a.output}")
