"""``tokendiff sample`` (text or images) and ``tokendiff demo`` (one sample's denoising in a browser)."""

from __future__ import annotations

import contextlib
import sys
import time

from tokendiff.cli.arguments import load_config
from tokendiff.cli.output import strict_json
from tokendiff.errors import TokenDiffError

__all__ = ["cmd_sample", "cmd_demo"]


def cmd_sample(args):
    from tokendiff.build import default_device
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.configs import inherit_sampling, to_dict
    from tokendiff.pretrained import model_overrides
    from tokendiff.samplers.text import generate, sampling_options
    from tokendiff.samples_file import write_samples

    cfg, overrides = load_config(args)
    device = default_device(cfg.system.device)
    ckpt = load_checkpoint(cfg.checkpoint, device=device, model_options=model_overrides(cfg, overrides))
    inherit_sampling(cfg, overrides, ckpt.config)
    if ckpt.tokenizer.kind == "binary_image":
        return _sample_images(cfg, ckpt, device)
    s = cfg.sampling
    prompt, chat = cfg.prompt, None
    if s.chat:  # the prompt is a user turn in the chat template; the answer is what is printed
        from tokendiff.data.chat import chat_template
        from tokendiff.samplers.text import unescape

        if not cfg.prompt or cfg.template:
            raise TokenDiffError("sampling.chat=true writes prompt=... as a user turn; give prompt= (and no template=)")
        chat = chat_template(ckpt.tokenizer)
        prompt = chat.prompt_ids([{"role": "user", "content": unescape(cfg.prompt)}])  # token ids
    if s.output:  # checked before the work, so a bad path costs nothing
        from tokendiff.viz.files import check_output_file

        check_output_file(s.output, "sampling.output", (".jsonl",), replace=cfg.overwrite)
    frames = []
    watchers = []
    if s.trajectory:
        from tokendiff.viz.text import check_trajectory_path

        check_trajectory_path(s.trajectory, replace=cfg.overwrite)
        watchers.append(lambda step, x: frames.append(x[0].cpu().clone()))
    live = contextlib.nullcontext()
    if s.live:
        if ckpt.kernel is None:
            raise TokenDiffError("sampling.live=true shows denoising; an autoregressive model has none to show")
        from tokendiff.viz.live import LiveView

        live = LiveView(ckpt.tokenizer, ckpt.kernel.mask_token_id, s.steps)
        watchers.append(live.update)
    callback = (lambda step, x: [w(step, x) for w in watchers]) if watchers else None
    start = time.perf_counter()
    with live:
        texts, stats = generate(
            ckpt.model,
            ckpt.kernel,
            ckpt.tokenizer,
            **sampling_options(s),
            num_samples=cfg.num_samples,
            length=s.length or ckpt.config.model.block_size,
            prompt=prompt,
            template=cfg.template,
            seed=cfg.seed,
            device=device,
            callback=callback,
        )
    seconds = time.perf_counter() - start
    if chat is not None:  # the answers alone, each cut where the template ends a turn
        from tokendiff.data.chat import response_end

        head = ckpt.tokenizer.decode(prompt)
        texts = [response_end(chat, t[len(head) :] if t.startswith(head) else t) for t in texts]
    if s.output:
        made_by = dict(checkpoint=ckpt.path, step=ckpt.step, seed=cfg.seed, prompt=cfg.prompt, template=cfg.template)
        write_samples(s.output, texts, **made_by, sampling=to_dict(cfg)["sampling"])
        print(f"[{len(texts)} samples written to {s.output}]", file=sys.stderr)
    for i, text in enumerate(texts):
        print(f"----- sample {i} -----\n{text}\n")
    print(
        f"[{cfg.num_samples} samples, {stats['model_calls']} model calls, "
        f"{stats['tokens'] / seconds:,.0f} tokens/s, checkpoint {ckpt.path}]",
        file=sys.stderr,
    )
    if s.trajectory:
        from tokendiff.viz.text import write_trajectory

        path = write_trajectory(s.trajectory, frames, ckpt.tokenizer, ckpt.kernel.mask_token_id)
        print(f"[denoising trajectory of sample 0 written to {path}]", file=sys.stderr)


def _sample_images(cfg, ckpt, device) -> None:
    import numpy as np

    from tokendiff.data.mnist import load_binarized_mnist
    from tokendiff.evaluation.images import inpaint, shuffled_test_images
    from tokendiff.samplers.images import draw_images
    from tokendiff.viz.files import check_output_file
    from tokendiff.viz.images import save_grid, save_trajectory

    s = cfg.sampling
    if cfg.prompt or cfg.template:
        raise TokenDiffError("an image model takes no prompt or template; use sampling.inpaint=true")
    output = s.output or ("inpainting.png" if s.inpaint else "samples.png")
    check_output_file(output, "sampling.output", (".png", ".gif", ".jpg", ".jpeg", ".webp"), replace=cfg.overwrite)
    if s.trajectory:
        check_output_file(s.trajectory, "sampling.trajectory", (".gif", ".png"), replace=cfg.overwrite)
    start = time.perf_counter()
    if s.inpaint:
        clean = shuffled_test_images(load_binarized_mnist("test", cfg.data.data_dir), cfg.num_samples)
        q = ckpt.config.data.observed_fraction  # the corruption the model was trained for
        accuracy, corrupted, completed = inpaint(ckpt.model, ckpt.kernel, clean, q, s.steps, cfg.seed, device=device)
        save_grid(np.concatenate([corrupted, completed, clean]), output, nrow=len(clean))  # observed, completed, truth
        print(
            strict_json(
                {"inpainting_accuracy": accuracy, "observed_fraction": q, "images": len(clean), "output": str(output)}
            )
        )
        return
    frames = []
    callback = (lambda step, x: frames.append(x.cpu().numpy().copy())) if s.trajectory else None  # noqa: E731
    images = draw_images(
        ckpt.model,
        ckpt.kernel,
        cfg.num_samples,
        s.steps,
        s.temperature,
        s.strategy,
        cfg.seed,
        s.batch_size,
        device,
        callback,
    )
    save_grid(images, output)
    seconds = time.perf_counter() - start
    print(f"[{cfg.num_samples} images in {seconds:.1f}s written to {output}; checkpoint {ckpt.path}]", file=sys.stderr)
    if s.trajectory:
        path = save_trajectory(frames, s.trajectory)
        print(f"[denoising trajectory written to {path}]", file=sys.stderr)


def cmd_demo(args):
    """A local Gradio page (``pip install 'tokendiff[demo]'``) that streams one sample's denoising."""
    from tokendiff.build import default_device
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.configs import inherit_sampling
    from tokendiff.pretrained import model_overrides
    from tokendiff.viz.demo import serve
    from tokendiff.viz.demo_checks import check_gradio, split_server_args

    host, port, rest = split_server_args(args)  # demo.host= / demo.port= are not config keys
    cfg, overrides = load_config(rest)
    check_gradio()
    device = default_device(cfg.system.device)
    ckpt = load_checkpoint(cfg.checkpoint, device=device, model_options=model_overrides(cfg, overrides))
    if ckpt.kernel is None or ckpt.tokenizer.kind == "binary_image":
        raise TokenDiffError("tokendiff demo shows the denoising of text; give a text diffusion checkpoint")
    inherit_sampling(cfg, overrides, ckpt.config)
    length = cfg.sampling.length or ckpt.config.model.block_size
    serve(ckpt, cfg.sampling, length=length, prompt=cfg.prompt, seed=cfg.seed, host=host, port=port, device=device)
