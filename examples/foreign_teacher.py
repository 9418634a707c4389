"""A teacher from outside transferkit: plain PyTorch, exported to ONNX, as another project ships it.

It is trained the way the PyTorch MNIST example trains (inputs normalised with
``mean 0.1307, std 0.3081``), with a bare loop and no transferkit code; transferkit is used
only to read the MNIST files. The ONNX file records no transferkit input convention, so
``transferkit distill --teacher teacher.onnx`` needs ``--teacher-input`` to feed it what it
expects (README, "Teachers from other toolchains").

    TRANSFERKIT_DATA_DIR=../shared/datasets python examples/foreign_teacher.py --out teacher.onnx
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from transferkit.data import load_dataset

MEAN, STD = 0.1307, 0.3081  # the PyTorch MNIST example's normalisation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="teacher.onnx")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    mnist = load_dataset("mnist")  # images in [0, 1], 1 x 28 x 28
    x, y = (mnist.train.x - MEAN) / STD, mnist.train.y
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for rows in torch.randperm(len(x)).split(128):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[rows]), y[rows]).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        test = (mnist.test.x - MEAN) / STD
        accuracy = (net(test).argmax(1) == mnist.test.y).float().mean().item()
    out = Path(args.out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), out, dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    print(f"{out}: MNIST test accuracy {accuracy:.2%} on inputs normalised with mean {MEAN}, "
          f"std {STD} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
