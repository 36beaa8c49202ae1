"""Tests of the attention notebook's helpers: course_utils.attention and course_utils.widgets.attention.

Most tests use a small randomly initialised GPT-2 (eager attention) and a tokenizer trained on a slice of
the course world, so they run without the bundled models; the last ones use ``tiny-base`` when it exists.
"""

from __future__ import annotations

import io
import statistics

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from course_utils import attention as A  # noqa: E402
from course_utils import world  # noqa: E402
from course_utils.models import ASSETS_DIR  # noqa: E402
from course_utils.widgets import attention as W  # noqa: E402

HAVE_TINY_BASE = (ASSETS_DIR / "tiny-base" / "config.json").is_file()


@pytest.fixture(scope="module")
def tokenizer():
    from course_utils.train import build_tokenizer

    return build_tokenizer(world.pretraining_documents(world.TRAIN_SEED, 300), vocab_size=600)


def _model(tokenizer, implementation: str = "eager"):
    """A small random GPT-2 (2 layers, 4 heads, d = 32, context 64) with the given attention implementation."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=4, n_positions=64,
                        bos_token_id=0, eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_implementation=implementation)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return _model(tokenizer)


# ----------------------------------------------------------------------------------------------
# Tokens


def test_token_label_marks_spaces_and_newlines():
    assert A.token_label(" cat") == "·cat"
    assert A.token_label("cat") == "cat"
    assert A.token_label("\n") == "⏎"
    assert A.token_label("") == "∅"


def test_token_labels_one_per_id_and_rejects_batches(tokenizer):
    ids = tokenizer("Tom lost a red ball.")["input_ids"]
    labels = A.token_labels(tokenizer, torch.tensor(ids))
    assert len(labels) == len(ids)
    assert "".join(labels).replace("·", " ") == "Tom lost a red ball."
    with pytest.raises(ValueError, match="ids\\[0\\]"):
        A.token_labels(tokenizer, torch.tensor([ids]))


def test_show_tokens_counts(tokenizer):
    text = "Tom lost a red ball."
    shown = A.show_tokens(tokenizer, text, width=30)
    n = len(tokenizer(text)["input_ids"])
    assert shown.endswith(f"({len(text)} characters, 5 words -> {n} tokens)")
    assert all(len(line) <= 30 for line in shown.splitlines()[:-1])


# ----------------------------------------------------------------------------------------------
# Attention maps


def test_attention_weights_are_causal_distributions(model, tokenizer):
    ids = torch.tensor([tokenizer("Tom lost a red ball. Tom was sad.")["input_ids"]])
    w = A.attention_weights(model, ids)
    T = ids.shape[1]
    assert w.shape == (1, 2, 4, T, T)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 4, T))
    assert torch.all(w.triu(diagonal=1) == 0)


def test_attention_weights_explain_sdpa_and_length(tokenizer):
    sdpa = _model(tokenizer, "sdpa")
    with pytest.raises(ValueError, match="eager"):
        A.attention_weights(sdpa, torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="context of 64"):
        A.attention_weights(_model(tokenizer), torch.ones(1, 65, dtype=torch.long))


def test_attention_maps_and_head_bounds(model, tokenizer):
    maps = A.attention_maps(model, tokenizer, "Tom lost a red ball.")
    assert maps.weights.shape[:2] == (2, 4) and maps.n_layers == 2 and maps.n_heads == 4
    assert len(maps.labels) == len(maps.ids) == maps.weights.shape[-1]
    torch.testing.assert_close(maps.head(1, 3), maps.weights[1, 3])
    with pytest.raises(ValueError, match="layers 0..1"):
        maps.head(2, 0)
    with pytest.raises(ValueError, match="heads 0..3"):
        maps.head(0, -1)
    with pytest.raises(ValueError, match="empty"):
        A.attention_maps(model, tokenizer, "   ")


def test_layer_io_is_what_the_attention_layer_sees_and_returns(model, tokenizer):
    ids = torch.tensor(tokenizer("Anna found a golden key.")["input_ids"])
    block = model.transformer.h[0]
    with torch.no_grad():
        hidden = model(ids[None], output_hidden_states=True).hidden_states
    hooks_before = (len(block.attn._forward_hooks), len(block.ln_1._forward_hooks))  # transformers adds its own
    x, y = A.layer_io(model, ids, layer=0)
    with torch.no_grad():
        torch.testing.assert_close(x, block.ln_1(hidden[0]))
        mid = hidden[0] + y                                   # residual after attention
        torch.testing.assert_close(mid + block.mlp(block.ln_2(mid)), hidden[1])
    assert (len(block.attn._forward_hooks), len(block.ln_1._forward_hooks)) == hooks_before  # hooks removed


# ----------------------------------------------------------------------------------------------
# Test sequences and baselines


def test_repeated_random_tokens():
    x = A.repeated_random_tokens(100, length=20, repeats=3, seed=1, batch=2)
    assert x.shape == (2, 60)
    assert torch.equal(x[:, :20], x[:, 20:40]) and torch.equal(x[:, :20], x[:, 40:])
    assert not (x == 0).any()
    assert all(len(set(row[:20].tolist())) == 20 for row in x)       # no token twice within one copy
    assert torch.equal(x, A.repeated_random_tokens(100, length=20, repeats=3, seed=1, batch=2))
    assert not torch.equal(x, A.repeated_random_tokens(100, length=20, repeats=3, seed=2, batch=2))
    with pytest.raises(ValueError, match="length=1"):
        A.repeated_random_tokens(100, length=1)
    with pytest.raises(ValueError, match="too few"):
        A.repeated_random_tokens(10, length=20)


def test_causal_uniform_baseline_matches_a_uniform_map():
    T = 7
    uniform = torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]
    direct = float(torch.diagonal(uniform, offset=-1).mean())
    assert A.causal_uniform_baseline(T) == pytest.approx(direct)
    assert A.causal_uniform_baseline(5) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4)
    with pytest.raises(ValueError):
        A.causal_uniform_baseline(1)


# ----------------------------------------------------------------------------------------------
# Positions, RNN demo, model families


def test_sinusoidal_positions():
    pe = A.sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16)
    assert torch.equal(pe[0, 0::2], torch.zeros(8)) and torch.equal(pe[0, 1::2], torch.ones(8))
    assert pe[1, 0] == pytest.approx(torch.sin(torch.tensor(1.0)).item())
    assert pe[3, 2] == pytest.approx(torch.sin(torch.tensor(3 / 10_000 ** (2 / 16))).item(), rel=1e-5)
    with pytest.raises(ValueError, match="even"):
        A.sinusoidal_positions(10, 7)


def test_cosine_similarity_matrix():
    sim = A.cosine_similarity_matrix(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]))
    torch.testing.assert_close(torch.diagonal(sim), torch.ones(3))
    assert sim[0, 1] == pytest.approx(0.0) and sim[0, 2] == pytest.approx(2 ** -0.5)


def test_rnn_influence_decays_with_distance():
    g = A.rnn_influence(T=40, d=16, seed=0)
    assert g.shape == (40,)
    assert g[-1] > 100 * g[-11] and g[-11] > 100 * g[0]


def test_family_examples_objectives():
    text = "Tom lost a red ball in the park on a sunny day."
    ex = A.family_examples(text, seed=0)
    assert set(ex) == {"autoencoding (MLM)", "autoregressive (CLM)", "sequence-to-sequence (span corruption)"}
    assert "[MASK]" in ex["autoencoding (MLM)"][0]
    corrupted, target = ex["sequence-to-sequence (span corruption)"]
    assert "<X>" in corrupted and target.startswith("<X>")
    # putting the spans back gives the original words
    spans = {}
    for chunk in target.split("<")[1:]:
        name, _, words = chunk.partition(">")
        spans[f"<{name}>"] = words.strip()
    restored = " ".join(spans.get(w, w) for w in corrupted.split())
    assert restored == " ".join(world_words(text))
    with pytest.raises(ValueError, match="at least 4 words"):
        A.family_examples("Tom ran.")


def world_words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+|[^\w\s]", text)


# ----------------------------------------------------------------------------------------------
# Plots


def test_plot_attention_checks_shapes():
    fig = W.plot_attention(torch.eye(3), ["a", "b", "c"], title="t")
    assert fig.axes[0].get_title() == "t"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    W.plot_attention(torch.ones(2, 3) / 3, ["x", "y"], col_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="weights\\[layer, head\\]"):
        W.plot_attention(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="2 entries for 3 tokens"):
        W.plot_attention(torch.eye(3), ["a", "b"])


def test_other_plots(model, tokenizer):
    fig = W.plot_masks({"a": torch.ones(2, 2), "b": (torch.eye(2), ["x", "y"], ["p", "q"])})
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="one \\(T_q, T_k\\) map"):
        W.plot_masks({"bad": torch.ones(2, 2, 2)})
    maps = A.attention_maps(model, tokenizer, "Tom lost a red ball.")
    assert len(W.plot_head_grid(maps).axes) == 8
    fig = W.plot_head_scores(torch.rand(2, 4), title="s", baseline=0.2)
    assert "0.20" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="layers, heads"):
        W.plot_head_scores(torch.rand(4), title="s")


# ----------------------------------------------------------------------------------------------
# The explorer, driven headlessly


def _pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_explorer_paints_the_selected_map_in_the_right_cells(model, tokenizer):
    explorer = W.attention_explorer(model, tokenizer, "Tom lost a red ball. Tom was sad.")
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    explorer.layer.value, explorer.head.value = 1, 2
    assert explorer.redrawer.last_error is None
    w = explorer.maps.weights[1, 2].numpy()
    assert (explorer.shown == w).all()
    frame = explorer._cache[explorer.text.value][1]
    img = _pixels(explorer.image.value)
    T = w.shape[0]
    cmap = matplotlib.colormaps[W.CMAP]
    rows, cols = frame.bottom - frame.top, frame.right - frame.left
    for i, j in [(0, 0), (T - 1, 0), (T - 1, T - 1), (T // 2, 1), (1, T - 1)]:
        y = frame.top + int((i + 0.5) * rows / T)
        x = frame.left + int((j + 0.5) * cols / T)
        expected = (torch.tensor(cmap(float(w[i, j]))[:3], dtype=torch.float32) * 255).round()
        assert torch.allclose(torch.tensor(img[y, x], dtype=torch.float32), expected, atol=2), (i, j)
    assert "layer 1, head 2" in explorer.info.value


def test_explorer_caches_the_model_per_text(model, tokenizer):
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        explorer = W.attention_explorer(model, tokenizer, "Tom lost a red ball.")
        first = explorer.image.value
        explorer.text.value = "Anna found a golden key in the garden."
        assert len(calls) == 2 and explorer.image.value != first
        assert "".join(explorer.maps.labels).startswith("Anna")
        explorer.text.value = "Tom lost a red ball."
        for layer in (0, 1):
            for head in range(4):
                explorer.layer.value, explorer.head.value = layer, head
        assert len(calls) == 2                      # back to a cached text, and head changes: no forward pass
        assert explorer.image.value == first or explorer.layer.value != 0
    finally:
        hook.remove()


def test_explorer_reports_errors_and_keeps_working(model, tokenizer):
    explorer = W.attention_explorer(model, tokenizer, "Tom lost a red ball.", max_tokens=10)
    explorer.text.value = "Tom lost a red ball. Tom was sad. Then a kind girl came and asked why."
    assert "at most 10" in explorer.redrawer.last_error
    explorer.text.value = ""
    assert "empty" in explorer.redrawer.last_error
    explorer.text.value = "Tom was sad."
    assert explorer.redrawer.last_error is None and "".join(explorer.maps.labels).startswith("Tom·was")


def test_explorer_shows_the_learners_score(model, tokenizer):
    def unanswered(attn):
        raise NotImplementedError()

    def broken(attn):
        return attn.sum(dim=(1, 2, 3))           # fails: (H, T, T) has no dim 3

    def works(attn):
        return torch.diagonal(attn, offset=-1, dim1=-2, dim2=-1).mean(-1)

    assert "write" in W.attention_explorer(model, tokenizer, "Tom ran home.", score_fn=unanswered).info.value
    e = W.attention_explorer(model, tokenizer, "Tom ran home.", score_fn=broken)
    assert "IndexError" in e.info.value and e.redrawer.last_error is None and e.image.value
    e = W.attention_explorer(model, tokenizer, "Tom ran home.", score_fn=works)
    e.head.value = 3
    assert f"{float(works(e.maps.weights[0])[3]):.3f}" in e.info.value


def test_explorer_refuses_a_model_without_maps(tokenizer):
    with pytest.raises(ValueError, match="eager"):
        W.attention_explorer(_model(tokenizer, "sdpa"), tokenizer)


# ----------------------------------------------------------------------------------------------
# With the bundled model


@pytest.mark.skipif(not HAVE_TINY_BASE, reason="the bundled tiny-base is not built yet (make models)")
def test_tiny_base_maps_and_explorer_redraw_time():
    model, tok = A.load_attention_model("tiny-base")
    text = world.stories(world.HELD_OUT_SEED, 1)[0][:200]
    explorer = W.attention_explorer(model, tok, text)
    assert explorer.maps.weights.shape[:2] == (model.config.n_layer, model.config.n_head)
    explorer.redrawer.timings_ms.clear()
    for _ in range(2):
        for layer in range(model.config.n_layer):
            for head in range(model.config.n_head):
                explorer.layer.value, explorer.head.value = layer, head
    assert explorer.redrawer.last_error is None
    median = statistics.median(explorer.redrawer.timings_ms)
    assert median <= 100, f"layer/head redraw median {median:.1f} ms > 100 ms"
