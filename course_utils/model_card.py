"""Model cards of the bundled models: what ``make models`` measures, records and writes next to the weights.

``metrics.json`` holds everything measured (held-out perplexity, summaries, sentiment, in-context copying,
induction scores, fresh-label in-context learning, and the training curve); ``README.md`` is the card a
person reads, written from it (:func:`write_model_card`). The notebooks quote these files, so a retrained
model brings its own figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from course_utils import world
from course_utils.train import BLOCK_SIZE, MODEL_SHAPE, greedy_completion, perplexity


@torch.no_grad()
def probe(model, tokenizer, n_icl: int = 40) -> dict:
    """What the training curve records: loss on random tokens repeated twice (first and second copy), the
    best induction score, and fresh-label accuracy with 0 and 8 examples (:mod:`course_utils.incontext`)."""
    from course_utils.attention import copy_test
    from course_utils.incontext import TASKS, fresh_label_eval

    was_training = model.training
    model.eval()
    model.set_attn_implementation("eager")
    try:
        test = copy_test(model, len(tokenizer))
        icl = {task: fresh_label_eval(model, tokenizer, ks=(0, 8), n=n_icl, task=task) for task in TASKS}
    finally:
        model.set_attn_implementation("sdpa")
        model.train(was_training)
    return dict(copy_first=round(test.first, 3), copy_second=round(test.second, 3), copy_ratio=round(test.ratio, 3),
                induction=round(float(test.induction.max()), 3), next_after=round(float(test.next_after.max()), 3),
                **{f"{task}_k{r.k}": r.accuracy for task, rs in icl.items() for r in rs})


def evaluate(model, tokenizer, n: int = 50) -> dict:
    """Held-out perplexity per document kind, summary ROUGE-L and sentiment accuracy on seed HELD_OUT_SEED."""
    from rouge_score import rouge_scorer

    seed = world.HELD_OUT_SEED
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    dialogues = world.dialogues(seed, n)
    summaries = [greedy_completion(model, tokenizer, world.summarize_prompt(d.text)) for d in dialogues]
    rouge = sum(scorer.score(d.summary, s)["rougeL"].fmeasure for d, s in zip(dialogues, summaries)) / n
    reviews = world.reviews(seed, n)
    answers = [greedy_completion(model, tokenizer, world.classify_prompt(r.text), 3) for r in reviews]
    accuracy = sum(a.split()[:1] == [r.label] for a, r in zip(answers, reviews)) / n
    return {
        "heldout_perplexity": round(perplexity(model, tokenizer,
                                               world.pretraining_documents(seed, 200)), 3),
        "story_perplexity": round(perplexity(model, tokenizer, world.stories(seed, 100)), 3),
        "dialogue_perplexity": round(perplexity(model, tokenizer, [d.text for d in dialogues]), 3),
        "summary_rougeL": round(rouge, 3),
        "sentiment_accuracy": round(accuracy, 3),
        "example_summary": {"dialogue": dialogues[0].text, "reference": dialogues[0].summary,
                            "model": summaries[0]},
        **in_context_metrics(model, tokenizer, 100 if n >= 50 else 8),
    }


def in_context_metrics(model, tokenizer, n_icl: int = 100) -> dict:
    """Copying and in-context learning: loss on random tokens repeated twice (30 tokens, 4 rows), the best
    induction score, and fresh-label accuracy at k = 0, 1, 2, 4, 8 on ``n_icl`` held-out words per task."""
    from course_utils.incontext import TASKS, fresh_label_eval

    p = probe(model, tokenizer, n_icl=4)
    return {"copy_loss_first": p["copy_first"], "copy_loss_second": p["copy_second"], "copy_ratio": p["copy_ratio"],
            "best_induction_score": p["induction"], "best_next_after_score": p["next_after"],
            **{f"fresh_label_accuracy_{task}": {str(r.k): round(r.accuracy, 3) for r in fresh_label_eval(
                model, tokenizer, ks=(0, 1, 2, 4, 8), n=n_icl, task=task)} for task in TASKS}}


def samples(model, tokenizer) -> dict[str, str]:
    """Greedy continuations of a story, dialogue and review start, for the model card."""
    starts = {"story": "Once upon a time, there was a little fox named",
              "dialogue": "#Person1#: Hello, I am looking for",
              "review": "Review: I bought this lamp last Monday."}
    return {k: s + " " + greedy_completion(model, tokenizer, s, 40) for k, s in starts.items()}


def save_model(model, tokenizer, out_dir: Path, card: dict) -> None:
    """Weights as safetensors, config, tokenizer and a model card (README.md + metrics.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    write_model_card(out_dir, card)
    for f in out_dir.iterdir():  # safetensors writes 0600; the files must be readable by every user
        f.chmod(0o644)


def write_model_card(out_dir: Path, card: dict) -> None:
    """The model card ``README.md`` of a bundled model, from its ``metrics.json`` content ``card``."""
    m = card["metrics"]
    lines = [
        f"# {card['name']}", "", card["description"], "",
        "| what | value |", "|---|---|",
        f"| architecture | GPT-2 (transformers `GPT2LMHeadModel`), {MODEL_SHAPE['n_layer']} layers, "
        f"d_model {MODEL_SHAPE['n_embd']}, {MODEL_SHAPE['n_head']} heads, context {BLOCK_SIZE} |",
        f"| parameters | {card['parameters']:,} |",
        f"| tokenizer | byte-level BPE, {card['vocab_size']} tokens |",
        f"| training data | {card['data']} |",
        f"| training | {card['config']['steps']} steps x batch {card['config']['batch_size']}, "
        f"lr {card['config']['lr']}, {card['train_seconds']:.0f} s on {card['threads']} CPU threads |",
        *_recipe_rows(card['config']),
        f"| held-out perplexity (seed {world.HELD_OUT_SEED}, mixed documents) | {m['heldout_perplexity']} |",
        f"| held-out story perplexity | {m['story_perplexity']} |",
        f"| dialogue-summary ROUGE-L (50 held-out dialogues, greedy) | {m['summary_rougeL']} |",
        f"| review sentiment accuracy (50 held-out reviews, instruction prompt) | {m['sentiment_accuracy']} |",
        *_in_context_rows(card),
        "", "## Samples (greedy)", "",
        *[f"- **{k}**: {v}" for k, v in card["samples"].items()],
        "", "## Summary example", "",
        f"- dialogue: {m['example_summary']['dialogue']}",
        f"- reference: {m['example_summary']['reference']}",
        f"- model: {m['example_summary']['model']}",
        "", "Re-create with `make models` (`python -m course_utils.train`).", "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


def _recipe_rows(cfg: dict) -> list[str]:
    """Model-card rows for the in-context parts of a training recipe (none for an older card)."""
    rows = []
    if cfg.get("positions") == "fourier":
        rows.append("| positions | fixed sinusoids with frequencies spread over (0, pi) (`train_data.fourier_positions`), "
                    "not trained |")
    if cfg.get("copy_rows") or cfg.get("copy_rows_with_text"):
        rows.append(f"| copy rows | {cfg.get('copy_only_steps', 0)} steps of {cfg.get('copy_rows', 0)} copy rows first, "
                    f"then {cfg.get('copy_rows_with_text', 0)} per step beside the text ({cfg.get('copy_width')} tokens: "
                    "one random span repeated to the end of the row) |")
    if cfg.get("attention_weight"):
        rows.append(f"| attention targets | on copy rows only, weight {cfg['attention_weight']}: layer 0 head 0 towards "
                    "the previous token, layer 1 head 0 towards the token after the last occurrence of the current "
                    "one (`train_data.attention_loss`; why: `course_utils/train_data.py`) |")
    return rows


def _in_context_rows(card: dict) -> list[str]:
    """Model-card rows for copying and in-context learning (none for an older card)."""
    m = card["metrics"]
    if "copy_ratio" not in m:
        return []
    rows = [f"| in-context copying (30 random tokens repeated twice, 4 rows) | loss {m['copy_loss_first']} nats/token "
            f"on the first copy, {m['copy_loss_second']} on the second: ratio {m['copy_ratio']} |",
            f"| best induction score (attention to the token after the earlier occurrence) | "
            f"{m['best_induction_score']} |"]
    for key, accs in m.items():
        if key.startswith("fresh_label_accuracy_"):
            task = key.removeprefix("fresh_label_accuracy_")
            rows.append(f"| fresh-label in-context accuracy, {task} (100 held-out words; k = "
                        f"{', '.join(accs)}) | {', '.join(str(a) for a in accs.values())} |")
    return rows
