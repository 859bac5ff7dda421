"""A tiny real training script: logistic regression with numpy on synthetic data (CPU, < 1 s).

Prints one line per epoch (`epoch 3 loss 0.4123 acc 0.8125`) and writes metrics.json into
--save-dir, the two things the Examiner picks up.
"""

import argparse
import json
import os

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--hidden", type=int, default=8, help="random features before the linear layer")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dir", required=True)
    a = p.parse_args()

    rng = np.random.default_rng(a.seed)
    x = rng.normal(size=(512, 4))
    y = (x[:, 0] * x[:, 1] + 0.5 * x[:, 2] > 0).astype(float)  # a non-linear target
    proj = rng.normal(size=(4, a.hidden))
    feats = np.tanh(x @ proj)
    w = np.zeros(a.hidden)
    b = 0.0
    train, val = slice(0, 384), slice(384, 512)
    for epoch in range(1, a.epochs + 1):
        z = feats[train] @ w + b
        p_hat = 1 / (1 + np.exp(-z))
        loss = float(-np.mean(y[train] * np.log(p_hat + 1e-9) + (1 - y[train]) * np.log(1 - p_hat + 1e-9)))
        grad = p_hat - y[train]
        w -= a.lr * feats[train].T @ grad / len(grad)
        b -= a.lr * float(grad.mean())
        acc = float(np.mean((feats[val] @ w + b > 0) == y[val]))
        print(f"epoch {epoch} loss {loss:.4f} acc {acc:.4f}", flush=True)
    os.makedirs(a.save_dir, exist_ok=True)
    np.save(os.path.join(a.save_dir, "model.npy"), np.append(w, b))
    with open(os.path.join(a.save_dir, "metrics.json"), "w") as f:
        json.dump({"train_loss": loss, "val_acc": acc}, f)


if __name__ == "__main__":
    main()
