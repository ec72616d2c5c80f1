"""Supervised fine-tuning (data.format=chat): chat files and templates, the response objective (the prompt never
scored, its NELBO equal to -log p(response | prompt) with exact conditionals, by enumeration), and the CLI."""

import itertools
import json
import math

import pytest
import torch

from test_cli import run
from test_training import TINY
from tokendiff.data.chat import (
    PAD,
    PROMPT,
    RESPONSE,
    chat_template,
    pack_example,
    read_chat_file,
    response_end,
)
from tokendiff.data.play_chat import QUESTION, who_speaks_next
from tokendiff.data.tokenizers import CharTokenizer
from tokendiff.errors import TokenDiffError
from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.objectives import ResponseObjective
from tokendiff.processes import AbsorbingKernel, HybridKernel
from tokendiff.schedules import LogLinearSchedule
from toy import Toy, random_joint_tensor


# ---------------------------------------------------------------- files and templates
def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_chat_files_take_messages_or_prompt_and_response_and_refuse_the_rest_in_one_line(tmp_path):
    good = write_jsonl(
        tmp_path / "good.jsonl",
        [
            {"prompt": "hi", "response": "ho"},
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ]
            },  # fmt: skip
        ],
    )
    examples = read_chat_file(good)
    assert examples[0] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]
    assert [m["role"] for m in examples[1]] == ["system", "user", "assistant"]
    bad_rows = {
        "fields": ({"question": "a", "answer": "b"}, "has no messages nor prompt and response fields"),
        "last": (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            "must be the assistant's",
        ),  # fmt: skip
        "role": (
            {"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "roles: user, assistant, system",
        ),  # fmt: skip
        "json": ("{not json", "is not JSON"),
    }
    for name, (row, words) in bad_rows.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", [{"prompt": "x", "response": "y"}, row])
        with pytest.raises(TokenDiffError) as err:
            read_chat_file(path)
        assert words in str(err.value) and f"{name}.jsonl:2" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TokenDiffError, match="not a .jsonl file"):
        read_chat_file(tmp_path / "x.txt")


def test_the_plain_template_splits_prompt_and_response_and_packs_roles():
    tok = CharTokenizer.train("User:\nAssistant:\n abcdefghijklmnopqrstuvwxyz?")
    template = chat_template(tok)
    assert template.kind == "plain"
    prompt, response = template.example_ids(
        [{"role": "user", "content": "who is\n\nit?"}, {"role": "assistant", "content": "me"}]
    )
    assert tok.decode(prompt) == "User:\nwho is\nit?\n\nAssistant:\n"  # a blank line inside a turn is one newline
    assert tok.decode(response) == "me\n\n"  # the answer and its end (no EOS in a character vocabulary)
    ids, roles = pack_example(prompt, response, 40, 99, "eos")
    assert len(ids) == 40 and ids[len(prompt) + len(response) :] == [99] * (40 - len(prompt) - len(response))
    assert roles == [PROMPT] * len(prompt) + [RESPONSE] * (40 - len(prompt))  # eos padding is scored
    _, roles = pack_example(prompt, response, 40, 99, "mask")
    assert roles[len(prompt) + len(response) :] == [PAD] * (40 - len(prompt) - len(response))
    assert pack_example(prompt, response, len(prompt) + len(response) - 1, 99, "eos") is None  # too long
    assert response_end(template, "me\n\nUser:\nmore") == "me"


def test_a_tokenizers_own_chat_template_is_used_and_its_special_tokens_kept():
    transformers = pytest.importorskip("transformers")
    from tokendiff.data.hf_tokenizer import HFTokenizer
    from tokendiff.harness.backend import TokendiffLM

    words = ["[PAD]", "[UNK]", "[MASK]", "<s>", "</s>", "<|user|>", "<|assistant|>", "hi", "ho", "there"]
    hf = transformers.BertTokenizer(
        vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]",
        sep_token="</s>", cls_token="<s>", do_lower_case=False,
    )  # fmt: skip
    hf.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"], "eos_token": "</s>"})
    hf.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}{% if m['role'] == 'assistant' %} </s>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tok = HFTokenizer(hf)
    template = chat_template(tok)
    assert template.kind == "hf"
    prompt, response = template.example_ids([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}])
    names = lambda ids: [words[i + (i >= 2)] if i < 2 else words[i + 1] for i in ids]  # noqa: E731  tokendiff ids skip [MASK]
    assert names(prompt) == ["<|user|>", "hi", "<|assistant|>"]  # special tokens are tokens, not text
    assert names(response) == ["ho", "</s>"] and response[-1] == tok.eos_id
    # lm-eval's --apply_chat_template: the backend writes the template as text and reads its special tokens back
    # as tokens, so that the harness's prompts are the ids the model was fine-tuned on
    lm = TokendiffLM.__new__(TokendiffLM)
    lm.tokenizer = tok
    text = lm.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|user|> hi<|assistant|>" and lm._encode(text) == prompt
    assert tok.encode(text) != prompt  # without it, the special tokens would be split into text


# ---------------------------------------------------------------- the objective
def logits_model(V, L, B, seed=0):
    """A 'model' whose logits are one free tensor (B, L, V), so that their gradient can be read."""
    logits = torch.randn(B, L, V, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    return logits, lambda xt, t: logits


@pytest.mark.parametrize("kernel, estimator", [("absorbing", "time"), ("absorbing", "count"), ("hybrid", "time")])
def test_the_loss_never_scores_a_prompt_token_nor_a_held_one(kernel, estimator):
    V, L, B = 5, 10, 64
    k = AbsorbingKernel(V, LogLinearSchedule()) if kernel == "absorbing" else HybridKernel(V, p_uniform=0.3)
    roles = torch.tensor([PROMPT] * 4 + [RESPONSE] * 4 + [PAD] * 2).expand(B, L)
    x0 = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(1))
    logits, model = logits_model(V, L, B)
    seen = []
    objective = ResponseObjective(k, estimator=estimator)
    terms = objective.loss_terms(lambda xt, t: seen.append(xt) or model(xt, t), x0, torch.Generator().manual_seed(2),
                                 roles=roles)  # fmt: skip
    terms.sum().backward()
    # d loss / d logits is exactly zero at the prompt and the held positions; not at the response
    assert (logits.grad[:, :4] == 0).all() and (logits.grad[:, 8:] == 0).all()
    assert (logits.grad[:, 4:8] != 0).any() and (terms[:, :4] == 0).all() and (terms[:, 8:] == 0).all()
    (xt,) = seen
    assert torch.equal(xt[:, :4], x0[:, :4])  # the prompt is never noised
    assert (xt[:, 8:] == k.mask_token_id).all()  # held positions are masked at every time
    assert (xt[:, 4:8] != x0[:, 4:8]).any()  # the response is
    with pytest.raises(TokenDiffError, match="data.format=chat"):
        objective.loss_terms(model, x0, roles=None)


def test_the_response_nelbo_of_exact_conditionals_is_minus_log_p_of_the_response_given_the_prompt():
    # a known joint over V = 3 tokens, L = 3 positions: position 0 the prompt, 1 and 2 the response. The exact
    # denoiser of masks (p(x_i | unmasked tokens), the prompt always among them) makes the response NELBO
    # -log p(x1, x2 | x0) (the any-order identity on the conditional; alpha(1) = 0: no prior term); the bound's
    # estimate averages to it within 4 standard errors for every sequence. With position 2 held masked
    # (data.chat_padding=mask) the response is x1 alone, and the bound is -log p(x1 | x0): the marginal.
    V, L = 3, 3
    joint = random_joint_tensor(V, L, seed=5)
    kernel = AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    toy = Toy(kernel, joint)
    objective = ResponseObjective(kernel)
    for x0 in itertools.product(range(V), repeat=L):
        for roles_row, target in (
            ([PROMPT, RESPONSE, RESPONSE], float(joint[x0] / joint[x0[0]].sum())),
            ([PROMPT, RESPONSE, PAD], float(joint[x0[:2]].sum() / joint[x0[0]].sum())),
        ):
            n = roles_row.count(RESPONSE)
            windows = torch.tensor([x0]).repeat(512, 1)
            roles = torch.tensor([roles_row], dtype=torch.uint8).repeat(512, 1)
            r = evaluate_likelihood(toy.model, objective, (windows, roles), num_draws=2, batch_size=1024, seed=7)
            exact = -math.log(target) / n  # per response token
            assert r.tokens_per_sequence == n and r.prior_nats_per_token == 0.0
            assert abs(r.nelbo_nats_per_token - exact) < 4 * r.nelbo_nats_per_token_stderr + 1e-9, (x0, roles_row)


def test_the_who_speaks_next_pairs_are_consecutive_speeches_of_the_play():
    text = "A:\nHello there.\n\nB:\nGood day.\n\nA:\nFarewell, sir, and a very long speech indeed.\n\nB:\nBye."
    pairs = who_speaks_next(text, count=10, max_chars=72)  # the pair (B, long A) is 76 characters: left out
    assert pairs[0] == {"prompt": f"A:\nHello there.\n{QUESTION}", "response": "B:\nGood day."}
    assert [p["response"] for p in pairs] == ["B:\nGood day.", "B:\nBye."]
    assert who_speaks_next(text, count=1, max_chars=72) == pairs[:1]


# ---------------------------------------------------------------- the CLI
CHAT_TINY = [a for a in TINY if not a.startswith("model.block_size")] + ["model.block_size=48"]


def chat_file(tmp_path, n=40):
    rows = [{"prompt": f"say {w}", "response": f"{w} {w}"} for w in ("ab", "ba", "abc", "cab") * (n // 4)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


@pytest.mark.parametrize("padding", ["mask", "eos"])
def test_fine_tuning_trains_evaluates_and_answers_in_chat_from_the_cli(tmp_path, capsys, padding):
    data = chat_file(tmp_path)
    out = tmp_path / "sft"
    args = ["train", "data.format=chat", f"data.input={data}", f"output_dir={out}", "training.max_iters=3", *CHAT_TINY,
            f"data.chat_padding={padding}"]  # fmt: skip
    code, _, err = run(capsys, *args)
    assert code == 0, err
    code, printed, err = run(capsys, "eval", f"checkpoint={out}", "eval.num_draws=2")
    assert code == 0, err
    result = json.loads(printed)
    # per response token: a response is "ab ab\n\n" (7 characters) .. "abc abc\n\n" (9), and with eos padding the
    # newlines that fill the 48 positions after "User:\nsay ab\n\nAssistant:\n" too
    scored = result["tokens_per_sequence"]
    assert (7 <= scored <= 9) if padding == "mask" else (scored > 9)
    assert math.isfinite(result["nelbo_nats_per_token"])
    assert result["bits_per_char"] is None
    code, printed, err = run(capsys, "sample", f"checkpoint={out}", "prompt=say ab", "sampling.chat=true",
                             "num_samples=2", "sampling.steps=8")  # fmt: skip
    assert code == 0, err
    answers = [s.split("-----\n", 1)[1].strip("\n") for s in printed.split("----- sample ")[1:]]
    assert len(answers) == 2 and all("User:" not in a and "\n\n" not in a for a in answers)  # the answer alone
    code, _, err = run(capsys, "sample", f"checkpoint={out}", "sampling.chat=true")
    assert code == 2 and "give prompt=" in err
    # lm-eval's --apply_chat_template writes the plain template the run was fine-tuned with
    from tokendiff.harness.backend import TokendiffLM

    lm = TokendiffLM(checkpoint=str(out), mc_num=2)
    assert lm.apply_chat_template([{"role": "user", "content": "say ab"}]) == "User:\nsay ab\n\nAssistant:\n"
    assert lm.tokenizer_name.startswith("tokendiff-char-") and "Assistant:" in lm.chat_template(True)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["model.causal=true"], "fine-tunes a diffusion LM on its responses"),
        (["model.block_size=8"], "fit in model.block_size=8"),
        (["data.chat_padding=zeros"], "data.chat_padding='zeros' is unknown"),
        (["data.format=chat", "data.input=null", "data.dataset=other"], "data.input=<file>.jsonl"),
    ],
)
def test_fine_tuning_refuses_what_it_cannot_do_in_one_line(tmp_path, capsys, extra, words):
    data = chat_file(tmp_path)
    args = ["train", "data.format=chat", f"data.input={data}", f"output_dir={tmp_path / 'x'}", *CHAT_TINY, *extra]
    code, _, err = run(capsys, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_a_chat_file_without_the_fields_is_one_line_from_the_cli(tmp_path, capsys):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"text": "no pairs here"}])
    code, _, err = run(capsys, "train", "data.format=chat", f"data.input={data}", f"output_dir={tmp_path / 'x'}",
                       *CHAT_TINY)  # fmt: skip
    assert code == 2 and "bad.jsonl:1 has no messages nor prompt and response fields" in err
