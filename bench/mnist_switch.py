"""Which noise levels make the samples: sample metrics of two models joined at a masked fraction.

A diagnostic for the ambient study. ``--high`` denoises while more than ``--switch`` of the pixels are
masked (the noisy levels, where the data constrain the model), ``--low`` below it (the levels only the
hard loss reaches). Both are time-agnostic, so the joined denoiser is a valid sampler. If joining the
naive model's noisy levels to the ambient model's clean levels beats both on the sample metrics, the
ambient model's deficit there comes from its noisy levels, not from the hard loss.

    python bench/mnist_switch.py --high bench/results/mnist_runs/naive --low bench/results/mnist_runs/ambient
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tokendiff.checkpoint import load_checkpoint
from tokendiff.evaluation.images import shuffled_test_images
from tokendiff.samplers.images import draw_images
from tokendiff.data.images import MnistData
from tokendiff.evaluation.classifier import load_classifier
from tokendiff.evaluation.images import inpaint, sample_metrics

REPO = Path(__file__).resolve().parents[1]


class Joined(torch.nn.Module):
    """``high`` where a row has more than ``switch`` of its tokens masked, ``low`` elsewhere."""

    def __init__(self, high, low, switch: float, mask_id: int):
        super().__init__()
        self.high, self.low, self.switch, self.mask_id = high, low, switch, mask_id
        self.block_size = high.block_size
        self.time_conditioning = high.time_conditioning or low.time_conditioning  # the samplers read it

    def forward(self, x, t=None):
        noisy = (x == self.mask_id).float().mean(1) > self.switch  # (B,)
        out = self.low(x, t)
        if noisy.any():
            out[noisy] = self.high(x[noisy], None if t is None else t[noisy])
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--high", type=Path, required=True)
    p.add_argument("--low", type=Path, required=True)
    p.add_argument("--switch", type=float, nargs="+", default=[0.7], help="masked fraction where --low takes over")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mnist_switch.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    high, low = load_checkpoint(args.high), load_checkpoint(args.low)
    data = MnistData()
    classifier, _ = load_classifier()
    reference = data.split("val").windows(784).numpy()
    train = data.clean_train_images()
    test = shuffled_test_images(data.split("test").windows(784).numpy(), args.samples)
    results = {}
    for switch in args.switch:
        model = Joined(high.model, low.model, switch, high.kernel.mask_token_id).eval()
        start = time.perf_counter()
        with torch.no_grad():
            samples = draw_images(model, high.kernel, args.samples, args.steps, 1.0, "ancestral", 0, 100, "cpu")
            metrics = sample_metrics(samples, classifier, reference, train)
            accuracy, _, _ = inpaint(model, high.kernel, test, 0.1, args.steps, 0)
        metrics["inpainting_accuracy"] = accuracy
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        results[str(switch)] = metrics
        print(f"switch at {switch:.2f} masked: " + json.dumps({k: round(v, 4) for k, v in metrics.items()}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"args": vars(args), "high": str(args.high), "low": str(args.low), "results": results},
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
