"""Does the trainer's data path keep up with the model? (run on demand)

    python benchmarks/bench_train.py [--n 256] [--size 64] [--batch-size 32]
                                     [--arch resnet18] [--device auto]

Builds a store of ``n`` synthetic items (random images, written through
ahdi.pipeline.store), then reports

* data images/s: uint8 batches from the in-memory source plus the batch
  augmentation and normalisation (what the model waits for per step);
* model images/s: forward + backward + optimizer step on a ready batch;
* their ratio (goal: data >= 3 x model, so the loader never starves the model);
* one training epoch with the store in memory and streamed by DataLoader
  workers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


class _Source:
    def describe(self):
        return "synthetic"


def make_store(path, n, size):
    from ahdi.kernels import AhdiParams
    from ahdi.pipeline.layout import create_store
    rng = np.random.default_rng(0)
    items = [SimpleNamespace(video_id=f"v{i:05d}", subject=f"s{i % 8}",
                             labels={"y": float(i % 2)}, source=_Source()) for i in range(n)]
    store = create_store(str(path), items, AhdiParams(size=size, crop="center", patch=3),
                         ["ahdi"], dataset="bench", source="bench", overwrite=True)
    for i in range(n):
        store.write_item(i, SimpleNamespace(
            ahdi=rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mdv=None, sdi=None,
            mean=None, flow=None, motion=np.zeros(4), eps=0.0, bounds=None,
            windows=np.zeros((1, 2), int), n_frames=4), fps=25.0)
    return store


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)

    from ahdi.train.data import BatchTransform, ImageSource, select_items
    from ahdi.train.engine import _loss_fn, resolve_device, train_one_epoch
    from ahdi.train.models import build_model

    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp) / "bench.zarr", args.n, args.size)
        sel = select_items(store, "y", "binary")
        pos = np.arange(len(sel))
        targets = torch.from_numpy(sel.targets).to(dev)
        tf = BatchTransform(train=True, seed=0)
        mem = ImageSource(store, sel, "ahdi", dev, in_memory="always")

        # data path: batches + augmentation, twice over the items
        for x, _, _ in mem.batches(pos[:args.batch_size * 2], args.batch_size):
            tf(x)
        _sync(dev)
        t0, n_img = time.perf_counter(), 0
        for rep in range(2):
            for x, _, p in mem.batches(pos, args.batch_size, True, np.random.default_rng(rep)):
                tf(x)
                n_img += p.numel()
        _sync(dev)
        data_ips = n_img / (time.perf_counter() - t0)

        # model step on a ready batch
        model = build_model("single", args.arch, "none").to(dev)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss_fn = _loss_fn("binary")
        x, _, p = next(mem.batches(pos[:args.batch_size], args.batch_size))
        inp = tf(x)
        if cuda:
            inp = inp.contiguous(memory_format=torch.channels_last)
        y = targets[p]
        steps = 8 if not cuda else 50

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                loss = loss_fn(model(inp).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for _ in range(2):
            step()
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(dev)
        model_ips = steps * p.numel() / (time.perf_counter() - t0)

        # whole epochs: in memory vs streamed
        def epoch(source):
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
            t = time.perf_counter()
            train_one_epoch(model, source.batches(pos, args.batch_size, True,
                                                  np.random.default_rng(0)),
                            tf, opt, sched, loss_fn, targets, amp=cuda, channels_last=cuda)
            _sync(dev)
            return time.perf_counter() - t
        t_mem = epoch(mem)
        stream = ImageSource(store, sel, "ahdi", dev, in_memory="never",
                             num_workers=args.workers)
        epoch(stream)                       # starts the workers
        t_stream = epoch(stream)
    out = {"device": str(dev), "n": args.n, "size": args.size, "batch_size": args.batch_size,
           "arch": args.arch, "data_images_per_s": round(data_ips, 1),
           "model_images_per_s": round(model_ips, 1),
           "data_over_model": round(data_ips / model_ips, 2),
           "epoch_s_in_memory": round(t_mem, 2), "epoch_s_streaming": round(t_stream, 2),
           "stream_workers": stream.num_workers}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
