"""The live phase-change demo of notebook 1: a 2-layer attention-only model trained on repeated random tokens."""

from __future__ import annotations

import pytest
import torch

from course_utils import induction


def test_attention_only_layer_is_causal_and_adds_to_the_residual_stream():
    torch.manual_seed(0)
    layer = induction.AttentionOnlyLayer(d_model=16, n_heads=4)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        out, weights = layer(x)
    assert out.shape == x.shape and weights.shape == (2, 4, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 5))
    assert float(weights.triu(1).abs().max()) == 0.0, "no token attends to a later one"
    x2 = x.clone()
    x2[:, 3:] += 1.0  # changing later tokens leaves the earlier outputs alone
    with torch.no_grad():
        assert torch.allclose(layer(x2)[0][:, :3], out[:, :3])
    with pytest.raises(ValueError, match="multiple of n_heads"):
        induction.AttentionOnlyLayer(d_model=10, n_heads=4)


def test_repeated_span_rows_repeat_one_span_to_the_end():
    rows = induction.repeated_span_batch(torch.Generator().manual_seed(0), 8, 48, 64)
    assert rows.shape == (8, 48)
    for row in rows.tolist():
        assert any(row[n:] == row[:-n] for n in range(6, 25)), row


def test_probe_scores_a_model_that_copies_perfectly():
    """A fake model whose logits put all mass on the right next token in the second copy: ratio near 0."""
    rows = torch.randint(0, 64, (4, 10)).repeat(1, 2)  # (4, 20)

    class Oracle(torch.nn.Module):
        def forward(self, ids):
            B, T = ids.shape
            logits = torch.zeros(B, T, 64)
            logits[:, 10:-1].scatter_(2, ids[:, 11:, None], 50.0)  # second copy: the next token, certain
            maps = [torch.tril(torch.ones(T, T)).div(torch.arange(1, T + 1)[:, None]).expand(B, 2, T, T)] * 2
            return logits, maps

    p = induction.probe_toy(Oracle(), rows)
    assert p.second < 1e-3 and p.first == pytest.approx(torch.log(torch.tensor(64.0)).item(), rel=1e-4)
    assert p.ratio < 1e-3
    assert induction.phase_change_step([p]) == 0
    with pytest.raises(ValueError, match="steps"):
        induction.train_toy(steps=0)


@pytest.mark.slow
def test_the_toy_goes_through_the_phase_change_in_the_notebook_budget():
    torch.set_num_threads(1)
    run = induction.train_toy(steps=800)
    early, end = run.curve[2], run.curve[-1]  # step 50: before; step 800: after
    assert early.ratio > 0.9, f"no copying yet at step 50: {early}"
    change = induction.phase_change_step(run.curve)
    assert change is not None and 200 <= change <= 800, f"phase change at step {change}"
    assert end.ratio < 0.5 and end.induction > 0.3, f"after the phase change: {end}"
