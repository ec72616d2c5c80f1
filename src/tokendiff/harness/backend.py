"""The ``tokendiff`` model backend of lm-evaluation-harness: any tokendiff checkpoint (masked, uniform or hybrid
kernels, block diffusion, Hugging Face backbones, autoregressive runs) answers the harness's three requests.

- ``loglikelihood(context, continuation)``: ``-log p(continuation | context)``, exact for autoregressive runs
  and the Monte Carlo conditional NELBO (``mc_num`` draws, seeded per request) for diffusion models
  (:mod:`tokendiff.evaluation.conditional`); ``is_greedy`` from the model's own greedy completion. A diffusion
  model's value is an upper bound on ``-log p``, so its log-likelihood is a lower bound: comparable across
  diffusion models, and conservative against an autoregressive one. Contexts longer than the model's window
  are left-truncated.
- ``loglikelihood_rolling(text)``: the same over disjoint windows of the model's context (as ``tokendiff eval``).
- ``generate_until(context, {until, max_gen_toks, temperature})``: tokendiff's samplers (block-wise in blocks of
  32 by default for masked models, a block diffusion model's own blocks), cut at the first stop sequence.

Several processes (``torchrun``/``accelerate launch``): the harness splits the documents by rank; the backend
joins the process group and gathers. Every request's draws depend on ``(seed, request)`` only, so the numbers
are those of one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import lm_eval.models  # noqa: F401  the built-in backends register first (lm-eval fills an empty registry only)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from tokendiff.build import resolve_dtype
from tokendiff.data.chat import PLAIN_TEMPLATE, plain_text
from tokendiff.data.chat import chat_template as chat_template_of
from tokendiff.checkpoint import load_checkpoint
from tokendiff.errors import TokenDiffError
from tokendiff.evaluation.conditional import request_seed, score_continuation
from tokendiff.harness.settings import harness_settings
from tokendiff.models.diffusion_gemma import DiffusionGemmaLM
from tokendiff.samplers.autoregressive import AutoregressiveSampler
from tokendiff.samplers.canvas import CanvasSettings, continue_rows, end_ids
from tokendiff.samplers.diffusion import DiffusionSampler
from tokendiff.samplers.settings import SamplingSettings

__all__ = ["TokendiffLM"]

BLOCK = 32  # generate_until's block size for masked models, as LLaDA's evaluation


def _device(requested: str) -> torch.device:
    """``auto``: the GPU of this process's rank if there is one. lm-eval's command line passes ``cuda:0`` when
    ``--device`` is not given; on a machine without CUDA that is taken as ``auto`` (and said)."""
    if requested.startswith("cuda") and not torch.cuda.is_available():
        if requested != "cuda:0":
            raise TokenDiffError(f"device={requested}: this machine has no CUDA; use device=cpu")
        print("tokendiff: device=cuda:0 (lm-eval's default) but no CUDA here: running on cpu", file=sys.stderr)
        requested = "auto"
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(requested)


@register_model("tokendiff")
class TokendiffLM(LM):
    """lm-eval's ``LM`` over a tokendiff checkpoint; the keyword arguments are :class:`HarnessSettings`'s."""

    def __init__(self, batch_size=None, max_batch_size=None, device=None, **model_args):
        super().__init__()
        if isinstance(batch_size, int) and not isinstance(batch_size, bool):
            model_args.setdefault("batch_size", batch_size)  # lm-eval's --batch_size (default 1)
        elif batch_size not in (None, "auto"):
            raise TokenDiffError(f"batch_size={batch_size!r} must be an integer >= 1")
        if device is not None:
            model_args.setdefault("device", str(device))
        # model.* settings of a pretrained model (model.trust_remote_code=true; lm-eval's own trust_remote_code)
        model_options = {
            k.removeprefix("model."): model_args.pop(k) for k in list(model_args) if k.startswith("model.")
        }
        if "trust_remote_code" in model_args:
            model_options.setdefault("trust_remote_code", model_args.pop("trust_remote_code"))
        self.s = harness_settings(model_args)
        self._device = _device(self.s.device)
        self._world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._rank = int(os.environ.get("RANK", "0"))
        if self._world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self._device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        self.ckpt = load_checkpoint(self.s.checkpoint, device=self._device, model_options=model_options)
        if self.ckpt.tokenizer.kind == "binary_image":
            raise TokenDiffError(f"{self.ckpt.path} is an image model; lm-eval's tasks need a text model")
        self.model, self.kernel, self.tokenizer = self.ckpt.model, self.ckpt.kernel, self.ckpt.tokenizer
        # a window of the model: an autoregressive run predicts block_size tokens from block_size + 1
        self.window = self.model.block_size + (1 if self.kernel is None else 0)
        dtype = self.s.dtype if self.s.dtype != "auto" else resolve_dtype("auto", self._device)[0]
        self.autocast = (
            (lambda: torch.autocast(self._device.type, dtype=torch.bfloat16))
            if dtype == "bfloat16"
            else contextlib.nullcontext
        )
        saved = self.ckpt.config.sampling.settings()
        self.sampling = {**{k: getattr(saved, k) for k in ("steps", "strategy", "temperature")}, **self.s.sampling}
        self._capped = False  # whether generate_until has said that it writes less than asked
        self.requests_log = []  # what requests_file= holds: one entry per loglikelihood request
        # seconds spent in each request type and requests answered (bench/harness_suite.py reads them)
        self.timing = {kind: [0.0, 0] for kind in ("loglikelihood", "loglikelihood_rolling", "generate_until")}

    # ----- multi-process primitives the harness calls (its evaluator shards the documents by rank)
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._world_size == 1:
            return tensor.reshape(1) if tensor.dim() == 0 else tensor
        out = [torch.zeros_like(tensor) for _ in range(self._world_size)]
        torch.distributed.all_gather(out, tensor)
        return torch.stack(out) if tensor.dim() == 0 else torch.cat(out)

    def gather_object(self, obj, dst: int = 0):
        if self._world_size == 1:
            return [obj]
        out = [None] * self._world_size if self._rank == dst else None
        torch.distributed.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self._world_size > 1:
            torch.distributed.barrier()

    def get_model_info(self) -> dict:
        """Recorded in the results JSON's ``config``."""
        return {
            "tokendiff_checkpoint": str(self.ckpt.path),
            "tokendiff_step": self.ckpt.step,
            "kernel": None if self.kernel is None else self.kernel.describe(),
            "mc_num": self.s.mc_num,
            "sampling": self.sampling,
        }

    # ----- tokens
    # ----- chat templates (lm-eval's --apply_chat_template): the template a chat run was fine-tuned with
    @property
    def tokenizer_name(self) -> str:
        return f"tokendiff-{self.tokenizer.kind}-{self.tokenizer.fingerprint()[:16]}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The tokenizer's own template, or a description of tokendiff's plain one (tokendiff.data.chat)."""
        template = chat_template_of(self.tokenizer)
        return template.tokenizer.tokenizer.chat_template if template.kind == "hf" else PLAIN_TEMPLATE

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as the model was fine-tuned on it (``data.format=chat``): the tokenizer's own template,
        or the plain one. Special tokens of a tokenizer's template are read as tokens from then on."""
        template = chat_template_of(self.tokenizer)
        self._specials = template.kind == "hf"
        if template.kind == "hf":
            return template.tokenizer.tokenizer.apply_chat_template(
                chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return plain_text(chat_history, add_generation_prompt)

    def _encode(self, text: str) -> list[int]:
        """Token ids of ``text``; after a chat template was applied, its special tokens are tokens."""
        if getattr(self, "_specials", False):
            return self.tokenizer.encode(text, specials=True)
        return self.tokenizer.encode(text)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids as the harness's own models split them: trailing spaces of the context
        move to the continuation, and the continuation is what encoding both adds to the context."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self._encode(context + continuation)
        ctx = self._encode(context) if context else []
        if whole[: len(ctx)] != ctx:  # a merge across the boundary: encode the two apart
            return ctx, self._encode(continuation)
        return ctx, whole[len(ctx) :]

    def _score(self, context: list[int], continuation: list[int]):
        with self.autocast():
            return score_continuation(
                self.model, self.kernel, context, continuation, window=self.window, draws=self.s.mc_num,
                seed=self.s.seed, batch_size=self.s.batch_size, device=self._device,
            )  # fmt: skip

    # ----- the three requests
    def _timed(self, kind: str, started: float, n: int) -> None:
        self.timing[kind][0] += time.perf_counter() - started
        self.timing[kind][1] += n

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        started = time.perf_counter()
        out = []
        for req in requests:
            ctx, cont = self._encode_pair(*req.args)
            score = self._score(ctx, cont)
            greedy = self._is_greedy(ctx, cont) if self.s.greedy else False
            out.append((-score.nats, greedy))
            self.requests_log.append(
                {"task": req.task_name, "doc_id": req.doc_id, "choice": req.idx, "nats": score.nats,
                 "stderr": score.stderr, "tokens": score.tokens, "draws": score.draws}
            )  # fmt: skip
        self._write_requests()
        self._timed("loglikelihood", started, len(requests))
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        started = time.perf_counter()
        out = [-self._score([], self._encode(req.args[0])).nats for req in requests]
        self._timed("loglikelihood_rolling", started, len(requests))
        return out

    @torch.no_grad()
    def _is_greedy(self, context: list[int], continuation: list[int]) -> bool:
        """Whether the model's greedy completion of ``context`` is ``continuation``: argmax next tokens for an
        autoregressive run; for a diffusion model its greedy sampler (temperature 0; one token a step, the most
        confident first, for masks) over the continuation's positions, the context left-truncated to fit."""
        n = len(continuation)
        if n == 0:
            return True
        if n >= self.window:
            return False  # more than one window: no single greedy completion to compare with
        if self.kernel is None:
            tokens = torch.tensor(context + continuation, device=self._device)[-self.window :]
            first = len(tokens) - n
            if first == 0:
                return False  # the first token of a text is drawn uniformly: no greedy choice
            with self.autocast():
                logits = self.model(tokens[None, :-1], None)[0, first - 1 :]  # (n, V)
            return bool((logits.argmax(-1) == tokens[first:]).all())
        ctx = context[-(self.model.block_size - n) :] if self.model.block_size > n else []
        if isinstance(self.model, DiffusionGemmaLM):  # its own canvas loop, greedy
            settings = CanvasSettings.from_generation_config(self.model.backbone.generation_config)
            gens = [torch.Generator().manual_seed(request_seed(self.s.seed, ctx, n))]
            with self.autocast():
                out, _ = continue_rows(self.model, ctx, 1, n, settings, gens, greedy=True, device=self._device)
            return out[0].tolist() == continuation
        mask = self.kernel.mask_token_id
        x = torch.tensor([ctx + [mask] * n], device=self._device)
        strategy = "confidence" if self.kernel.reveals_are_final else "ancestral"
        settings = SamplingSettings(steps=n, temperature=0.0, strategy=strategy)
        gens = [torch.Generator().manual_seed(request_seed(self.s.seed, ctx, n))]
        with self.autocast():
            out = DiffusionSampler(self.model, self.kernel, settings).sample(x, gens)
        return out[0, len(ctx) :].tolist() == continuation

    def generate_until(self, requests) -> list[str]:
        started = time.perf_counter()
        jobs = []
        for i, req in enumerate(requests):
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            length = int(kwargs.pop("max_gen_toks", self.s.max_gen_toks))
            temperature = kwargs.pop("temperature", None)
            if temperature is None:
                temperature = 0.0 if kwargs.get("do_sample") is False else self.sampling["temperature"]
            ids = self._encode(context) if context else []
            jobs.append((len(ids), length, float(temperature), i, ids, until))
        texts: list[str | None] = [None] * len(requests)
        jobs.sort(key=lambda j: j[:3])  # equal shapes and settings batch together
        start = 0
        while start < len(jobs):
            stop = start
            while stop < len(jobs) and stop - start < self.s.batch_size and jobs[stop][:3] == jobs[start][:3]:
                stop += 1
            batch = jobs[start:stop]
            for job, text in zip(batch, self._generate(batch)):
                cut = min([text.find(u) for u in job[5] if u and u in text] or [len(text)])
                texts[job[3]] = text[:cut]
            start = stop
        self._timed("generate_until", started, len(requests))
        return texts

    @torch.no_grad()
    def _generate(self, batch) -> list[str]:
        """Continuations of one batch of contexts of equal length (each row seeded by its own request)."""
        _, length, temperature, _, _, _ = batch[0]
        gens = [torch.Generator().manual_seed(request_seed(self.s.seed, job[4], job[1])) for job in batch]
        settings = {**self.sampling, "temperature": temperature}
        if self.kernel is None:
            sampler = AutoregressiveSampler(
                self.model, temperature, settings.get("top_p", 1.0), settings.get("top_k", 0)
            )
            if batch[0][0] == 0:  # no context: a first token drawn uniformly, as tokendiff sample does
                first = torch.stack([torch.randint(0, self.model.vocab_size, (1,), generator=g) for g in gens])
                length -= 1
            else:
                first = torch.tensor([job[4] for job in batch])
            with self.autocast():
                out = sampler.sample(first.to(self._device), first.shape[1] + length, gens)
            new = out[:, -length:] if length else out[:, :0]
            prefix = [row[:1] for row in first.tolist()] if batch[0][0] == 0 else [[] for _ in batch]
            return [self._decode(p + row) for p, row in zip(prefix, new.tolist())]
        if isinstance(self.model, DiffusionGemmaLM):  # its own canvas loop and generation config
            return self._generate_canvases(batch, length, temperature, gens)
        block = settings.get("block_size") or self.model.block_diffusion
        if block is None and self.kernel.reveals_are_final:
            block = min(BLOCK, self.model.block_size)
        settings["steps"] = self.s.sampling.get("steps", length)  # default: a token a step, as LLaDA's evaluation
        settings["block_size"] = block if not self.model.block_diffusion else None
        mask = self.kernel.mask_token_id
        context = [job[4] for job in batch]
        if block is None:  # the whole continuation in one window: the context left-truncated to fit
            if length >= self.model.block_size:  # max_gen_toks is a most: this kernel writes one window at most
                if not self._capped:
                    print(
                        f"tokendiff: max_gen_toks={length} is more than this model writes in its window of "
                        f"{self.model.block_size} tokens without block-wise sampling ({self.kernel.name} noise); "
                        f"generating {self.model.block_size - 1}",
                        file=sys.stderr,
                    )
                    self._capped = True
                length = self.model.block_size - 1
            keep = self.model.block_size - length
            context = [c[-keep:] for c in context]
        x = torch.tensor([c + [mask] * length for c in context], device=self._device)
        sampler = DiffusionSampler(self.model, self.kernel, SamplingSettings(**settings))
        with self.autocast():
            out = sampler.sample(x, gens, stop_id=self.tokenizer.eos_id)
        return [self._decode(row[len(c) :]) for c, row in zip(context, out.tolist())]

    def _generate_canvases(self, batch, length: int, temperature: float, gens) -> list[str]:
        """A DiffusionGemma's continuations: canvases after each context (left-truncated so that context and
        continuation fit the model's positions), ``sampling.steps`` its denoising steps when set."""
        steps = self.s.sampling.get("steps")
        overrides = {} if steps is None else {"max_denoising_steps": int(steps)}
        settings = CanvasSettings.from_generation_config(self.model.backbone.generation_config, **overrides)
        room = self.model.block_size - 1 - length  # positions left for the context after BOS and the new tokens
        if room < 0:
            raise TokenDiffError(
                f"max_gen_toks={length} does not fit this DiffusionGemma's {self.model.block_size} positions; "
                f"ask for at most {self.model.block_size - 1}"
            )
        texts, ends = [], end_ids(self.model, self.tokenizer)
        for job, g in zip(batch, gens):  # one row each: the contexts differ
            context = job[4][-room:] if room else []
            with self.autocast():
                out, _ = continue_rows(
                    self.model, context, 1, length, settings, [g], greedy=temperature == 0, device=self._device
                )
            row = out[0].tolist()
            cut = next((j for j, token in enumerate(row) if token in ends), len(row))
            texts.append(self.tokenizer.decode(row[:cut]))
        return texts

    def _decode(self, ids: list[int]) -> str:
        eos = self.tokenizer.eos_id
        if eos is not None and eos in ids:
            ids = ids[: ids.index(eos)]
        return self.tokenizer.decode(ids)

    def _write_requests(self) -> None:
        if not self.s.requests_file:
            return
        path = self.s.requests_file
        if self._world_size > 1:
            root, ext = os.path.splitext(path)
            path = f"{root}.rank{self._rank}{ext}"
        with open(path, "w") as f:
            for row in self.requests_log:
                f.write(json.dumps(row) + "\n")
