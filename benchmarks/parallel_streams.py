"""Is one training process on all cores the best use of a small CPU machine? MobileNetV2 training steps
(32×32, Adam, BCE) with one process on every core against one single-threaded process per core side by side.

    .venv/bin/python benchmarks/parallel_streams.py [--batch-size 32] [--steps 40]

Each worker times ``steps`` steps after 3 warm-up steps on one in-memory batch; the side-by-side figure is
the sum of the workers' images/s (they run at the same time).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch
from record import save_result

from lightning_modules.classifier import build_mobilenetv2


def worker(threads: int, batch_size: int, steps: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_mobilenetv2(1).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch_size, 1)).float()
    t0 = 0.0
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    queue.put(steps * batch_size / (time.perf_counter() - t0))


def run(processes: int, threads: int, batch_size: int, steps: int) -> list[float]:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(threads, batch_size, steps, queue)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results/parallel_streams.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for bs in args.batch_size:
        one = run(1, cores, bs, args.steps)
        side = run(cores, 1, bs, args.steps)
        row = {
            "batch_size": bs,
            f"one_process_{cores}_threads_img_s": round(one[0], 1),
            f"{cores}_processes_1_thread_img_s": [round(r, 1) for r in side],
            "side_by_side_total_img_s": round(sum(side), 1),
            "ratio": round(sum(side) / one[0], 2),
        }
        print(row)
        rows.append(row)
    save_result(args.out, "python benchmarks/parallel_streams.py", cores=cores, steps=args.steps, rows=rows)


if __name__ == "__main__":
    main()
