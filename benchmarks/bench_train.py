"""Does the trainer's data path keep up with the model, and do the CUDA paths agree? (on demand)

    python benchmarks/bench_train.py [--n 256] [--size 64] [--batch-size 32]
                                     [--arch resnet18] [--device auto] [--no-runs]

Builds a store of ``n`` synthetic items (noise images; label 1 = the left
half brightened, so a model can learn it), written through
ahdi.pipeline.store, then reports

* where ``--in-memory auto`` puts the images (the GPU-resident path when
  the store fits) and on which device;
* data images/s: uint8 batches from the in-memory source plus the batch
  augmentation and normalisation (what the model waits for per step);
* model images/s: forward + backward + optimizer step on a ready batch;
* their ratio (goal: data >= 3 x model, so the loader never starves the model);
* one training epoch with the store in memory and streamed by DataLoader
  workers, and on CUDA the GPU utilisation sampled during the in-memory
  epoch (when torch can read it: the ``nvidia-ml-py`` package);
* unless ``--no-runs``: the same short 2-fold run through ``run_training``
  in float32 and, on CUDA, with bf16 autocast, + channels_last and
  + ``torch.compile``: their held-out accuracy and loss should agree within
  noise, and their seconds per epoch say what each buys.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
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
        img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        if i % 2:
            img[:, : size // 2] += 120
        store.write_item(i, SimpleNamespace(
            ahdi=img, mdv=None, sdi=None, mean=None, flow=None, motion=np.zeros(4), eps=0.0,
            bounds=None, windows=np.zeros((1, 2), int), n_frames=4), fps=25.0)
    return store


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


class _Utilisation:
    """GPU utilisation (%) sampled every 0.1 s in a thread; None where unreadable."""

    def __init__(self, dev):
        self.samples, self.dev = [], dev
        self._stop = threading.Event()
        self._thread = None
        if dev.type == "cuda":
            try:
                torch.cuda.utilization(dev)
            except Exception:  # noqa: BLE001 - no NVML: no samples
                return
            self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(torch.cuda.utilization(self.dev))
            time.sleep(0.1)

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self):
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def data_and_model(args, store, dev) -> dict:
    """Images/s of the data path and of the model step, and one epoch each way."""
    from ahdi.train.data import BatchTransform, ImageSource, select_items
    from ahdi.train.loop import loss_function, train_one_epoch
    from ahdi.train.models import build_model

    cuda = dev.type == "cuda"
    sel = select_items(store, "y", "binary")
    pos = np.arange(len(sel))
    targets = torch.from_numpy(sel.targets).to(dev)
    tf = BatchTransform(train=True, seed=0)
    auto = ImageSource(store, sel, "ahdi", dev, in_memory="auto")
    mem = ImageSource(store, sel, "ahdi", dev, in_memory="always")

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

    model = build_model("single", args.arch, "none").to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = loss_function("binary")
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

    def epoch(source):
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        t = time.perf_counter()
        train_one_epoch(model, source.batches(pos, args.batch_size, True,
                                              np.random.default_rng(0)),
                        tf, opt, sched, loss_fn, targets, amp=cuda, channels_last=cuda)
        _sync(dev)
        return time.perf_counter() - t
    with _Utilisation(dev) as util:
        t_mem = epoch(mem)
    stream = ImageSource(store, sel, "ahdi", dev, in_memory="never", num_workers=args.workers)
    epoch(stream)                       # starts the workers
    t_stream = epoch(stream)
    return {"auto_in_memory": auto.in_memory,
            "auto_images_on": str(auto.images.device) if auto.in_memory else "streamed",
            "data_images_per_s": round(data_ips, 1), "model_images_per_s": round(model_ips, 1),
            "data_over_model": round(data_ips / model_ips, 2),
            "epoch_s_in_memory": round(t_mem, 2), "epoch_s_streaming": round(t_stream, 2),
            "gpu_utilisation_in_memory_epoch": util.mean,
            "stream_workers": stream.num_workers}


def variant_runs(args, store_path, dev, tmp) -> dict:
    """The same 2-fold run in float32 and with each CUDA path: metrics and seconds per epoch."""
    from ahdi.train.engine import run_training
    from ahdi.train.tracking import Console

    variants = {"fp32": dict(amp=False, channels_last=False)}
    if dev.type == "cuda":
        variants.update({"bf16": dict(amp=True, channels_last=False),
                         "bf16+channels_last": dict(amp=True, channels_last=True),
                         "bf16+channels_last+compile": dict(amp=True, channels_last=True,
                                                            compile=True)})
    out = {}
    for name, settings in variants.items():
        t0 = time.perf_counter()
        result = run_training(dict(store=str(store_path), label="y", task="binary",
                                   protocol="kfold:2", epochs=args.epochs, arch=args.arch,
                                   batch_size=args.batch_size, lr=1e-3, device=str(dev.type),
                                   out=str(Path(tmp) / name), **settings),
                              console=Console(enabled=False))
        rows = [r for f in result["folds"] for r in f["history"]]
        out[name] = {"accuracy": round(result["aggregate"]["accuracy"]["mean"], 4),
                     "auc": round(result["aggregate"]["auc"]["mean"], 4),
                     "final_train_loss": round(float(np.mean(
                         [f["history"][-1]["train_loss"] for f in result["folds"]])), 4),
                     "s_per_epoch": round(float(np.mean([r["seconds"] for r in rows])), 2),
                     "run_s": round(time.perf_counter() - t0, 1)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each variant run")
    ap.add_argument("--no-runs", action="store_true", help="skip the variant runs")
    args = ap.parse_args(argv)

    from ahdi.train.loop import describe_device, resolve_device

    dev = resolve_device(args.device)
    out = {"device": describe_device(dev), "n": args.n, "size": args.size,
           "batch_size": args.batch_size, "arch": args.arch, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp) / "bench.zarr", args.n, args.size)
        out.update(data_and_model(args, store, dev))
        if not args.no_runs:
            out["runs"] = variant_runs(args, Path(tmp) / "bench.zarr", dev, tmp)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
