"""A small local task suite from the play, one task per request type of lm-evaluation-harness, for models of
Tiny Shakespeare (or any text): written as task YAMLs and JSON lines files into a folder for ``include_path``.

- ``td_choice`` (``multiple_choice``): a real line of the play against the same line with its characters
  shuffled. A shuffle keeps the characters, so a model blind to their order gives both one likelihood and
  scores exactly 0.5 (lm-eval's argmax takes the first choice; the real line is first in every other
  document); anything above that is knowledge of order.
- ``td_ppl`` (``loglikelihood_rolling``): word and byte perplexity, bits per byte of passages of the play.
- ``td_gen`` (``generate_until``): a speaker's name and a newline, then the speech up to the end of its first
  line; scored by exact match with the play's line (0 for small models) and by chrF (sacrebleu's character
  n-gram F-score, 0 to 100), which credits the right letters and short words in the right order.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["write_play_tasks", "PLAY_TASKS"]

PLAY_TASKS = ("td_choice", "td_ppl", "td_gen")


def _data(path: Path) -> str:
    # absolute: lm-eval resolves data_files against the working directory, not the YAML's folder
    return f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path.resolve()}\ntest_split: test\n"


def write_play_tasks(
    folder: Path, text: str, *, choices: int = 40, passages: int = 3, prompts: int = 3, max_gen_toks: int = 24
) -> list[str]:
    """Write the three tasks of ``text`` (taken from its last 100,000 characters, the validation end of a
    90/10 split) into ``folder``; returns their names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tail = text[-100_000:]
    lines = [line for line in tail.splitlines() if 30 <= len(line) <= 60][:choices]
    rng = random.Random(0)
    rows = []
    for i, line in enumerate(lines):
        chars = list(line)
        rng.shuffle(chars)
        options = [line, "".join(chars)] if i % 2 == 0 else ["".join(chars), line]  # the real line alternates
        rows.append({"choices": options, "label": i % 2})
    texts = [{"text": tail[-20_000 + 900 * i : -20_000 + 900 * i + 300]} for i in range(passages)]
    speeches = []
    blocks = [b for b in tail.split("\n\n") if b.count("\n") >= 1 and b.split("\n", 1)[0].endswith(":")]
    for block in blocks[:prompts]:
        speaker, speech = block.split("\n", 1)
        speeches.append({"prompt": speaker + "\n", "answer": speech.split("\n", 1)[0]})
    for name, data in (("choice", rows), ("ppl", texts), ("gen", speeches)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    (folder / "td_choice.yaml").write_text(
        "task: td_choice\n" + _data(folder / "choice.jsonl") + 'output_type: multiple_choice\ndoc_to_text: ""\n'
        'target_delimiter: ""\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (folder / "td_ppl.yaml").write_text(
        "task: td_ppl\n" + _data(folder / "ppl.jsonl") + 'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
        'doc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n'
        "  - metric: bits_per_byte\n"
    )
    (folder / "td_gen.yaml").write_text(
        "task: td_gen\n" + _data(folder / "gen.jsonl") + 'output_type: generate_until\ndoc_to_text: "{{prompt}}"\n'
        f'doc_to_target: "{{{{answer}}}}"\ngeneration_kwargs:\n  until: ["\\n"]\n  max_gen_toks: {max_gen_toks}\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: chrf\n    aggregation: chrf\n    higher_is_better: true\n"
    )
    return list(PLAY_TASKS)
