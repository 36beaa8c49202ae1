"""course_utils.quantization (size accounting, perplexity, demos) and the bit-width widget.

The tests carry their own small quantizers (the course package must not): they follow the conventions the
notebook states, and the widget is driven with them headlessly.
"""

import copy
import math

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from course_utils import quantization as qz
from course_utils import world
from course_utils.models import count_parameters, load_model
from course_utils.train import perplexity as per_document_perplexity

torch.set_num_threads(1)  # a 1M-parameter model: one thread is as fast, and far faster on a busy machine


# -- reference quantizers for driving the demos (the notebook's exercises, written independently) ------------


def absmax(w, bits=8, axis=None):
    Q = 2 ** (bits - 1) - 1
    if axis is None:
        amax = w.abs().max()
    else:
        amax = w.abs().amax(dim=tuple(d for d in range(w.dim()) if d != axis % w.dim()), keepdim=True)
    scale = (amax / Q).float()
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.round(w / scale).clamp(-Q, Q).to(torch.int8), scale


def zeropoint(w, bits=8, axis=None):
    top = 2 ** bits - 1
    if axis is None:
        lo, hi = w.min(), w.max()
    else:
        dims = tuple(d for d in range(w.dim()) if d != axis % w.dim())
        lo, hi = w.amin(dim=dims, keepdim=True), w.amax(dim=dims, keepdim=True)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / top
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zp = torch.round(-lo / scale).clamp(0, top).long()
    return (torch.round(w / scale) + zp).clamp(0, top).to(torch.uint8), scale, zp


def dequant(q, scale, zero_point=0):
    return (q.float() - torch.as_tensor(zero_point, dtype=torch.float32)) * scale


def quantize_model(model, bits=8, scheme="absmax", granularity="tensor"):
    model = copy.deepcopy(model)
    for module in model.modules():
        if not isinstance(module, (nn.Linear, Conv1D)):
            continue
        w = module.weight.detach()
        w = w.T if isinstance(module, Conv1D) else w  # (out, in)
        shape = w.shape
        if isinstance(granularity, int):
            w, axis = w.reshape(-1, granularity), 0
        else:
            axis = None if granularity == "tensor" else 0
        if scheme == "absmax":
            w_hat = dequant(*absmax(w, bits, axis))
        else:
            w_hat = dequant(*zeropoint(w, bits, axis))
        w_hat = w_hat.reshape(shape)
        with torch.no_grad():
            module.weight.copy_(w_hat.T if isinstance(module, Conv1D) else w_hat)
    return model


@pytest.fixture(scope="module")
def base():
    return load_model("tiny-base")


@pytest.fixture(scope="module")
def batch(base):
    return qz.heldout_batch(base[1])


# -- size accounting -----------------------------------------------------------------------------------------


def test_linear_modules_are_the_conv1d_layers_and_the_tied_head(base):
    model, _ = base
    names = [n for n, _ in qz.linear_modules(model)]
    n_layer = model.config.n_layer
    assert len(names) == 4 * n_layer + 1
    assert names[-1] == "lm_head"
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: one tensor


def test_float_sizes_count_every_parameter_once(base):
    model, _ = base
    n = count_parameters(model)
    assert qz.size_bytes(model) == 4 * n
    assert qz.size_bytes(model, 16) == 2 * n
    stored = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    assert qz.size_bytes(model) == stored


def test_quantized_size_by_hand(base):
    model, _ = base
    layers = qz.linear_modules(model)
    quantized = sum(m.weight.numel() for _, m in layers)
    rest = count_parameters(model) - quantized
    outs = sum((m.weight.shape[0] if isinstance(m, nn.Linear) else m.weight.shape[1]) for _, m in layers)

    b = qz.size_breakdown(model, 8, "absmax", "tensor")
    assert b == {"weights": quantized, "scales": 4 * len(layers), "other": 4 * rest,
                 "total": quantized + 4 * len(layers) + 4 * rest}
    assert qz.size_breakdown(model, 8, "zeropoint", "tensor")["scales"] == 5 * len(layers)
    assert qz.size_breakdown(model, 4, "absmax", "channel")["weights"] == math.ceil(quantized / 2)
    assert qz.size_breakdown(model, 4, "absmax", "channel")["scales"] == 4 * outs
    assert qz.size_breakdown(model, 2, "absmax", 32)["scales"] == 4 * quantized // 32
    assert qz.size_breakdown(model, 3, "absmax", "tensor")["weights"] == sum(math.ceil(m.weight.numel() * 3 / 8)
                                                                              for _, m in layers)
    # int8 is ~3.5x smaller than fp32, int4 per channel ~6x (the figures the notebook teaches)
    assert 3.3 < qz.size_bytes(model) / qz.size_bytes(model, 8) < 3.9
    assert 5.5 < qz.size_bytes(model) / qz.size_bytes(model, 4, "absmax", "channel") < 6.5


@pytest.mark.parametrize("args", [(9,), (1,), (64,), (8, "minmax"), (4, "absmax", "row"), (4, "absmax", 0),
                                  (4, "absmax", True)])
def test_size_rejects_bad_settings(base, args):
    with pytest.raises(ValueError):
        qz.size_bytes(base[0], *args)


# -- perplexity ----------------------------------------------------------------------------------------------


def test_heldout_batch_pads_and_masks(base):
    _, tok = base
    b = qz.heldout_batch(tok, n=5, max_tokens=40)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    assert b["input_ids"].shape[0] == 5 and b["input_ids"].shape[1] <= 40
    assert bool(((b["labels"] == -100) == (b["attention_mask"] == 0)).all())
    again = qz.heldout_batch(tok, n=5, max_tokens=40)
    assert torch.equal(b["input_ids"], again["input_ids"])


def test_batched_perplexity_equals_the_per_document_one(base):
    model, tok = base
    docs = world.pretraining_documents(world.HELD_OUT_SEED, 6)
    b = qz.heldout_batch(tok, n=6, max_tokens=256)
    assert qz.perplexity(model, b) == pytest.approx(per_document_perplexity(model, tok, docs), rel=1e-4)


def test_the_bundled_model_is_good_and_survives_int8(base, batch):
    model, _ = base
    ppl = qz.perplexity(model, batch)
    assert 1.0 < ppl < 3.0
    assert qz.perplexity(quantize_model(model, 8), batch) == pytest.approx(ppl, rel=0.01)


def test_round_weights_and_changed_parameters(base):
    model, _ = base
    rounded = qz.round_weights(model, torch.bfloat16)
    w = rounded.transformer.h[0].mlp.c_fc.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, w.to(torch.bfloat16).float())
    assert rounded.lm_head.weight is rounded.transformer.wte.weight
    assert "transformer.h.0.mlp.c_fc.weight" in qz.changed_parameters(model, rounded)
    assert qz.changed_parameters(model, copy.deepcopy(model)) == []


def test_weight_error_and_compare_table(base, batch):
    model, _ = base
    assert qz.weight_error(model, model)["max_abs"] == 0.0
    rows = qz.compare(model, batch, [(32, "-", "-"), (16, "-", "-"), (4, "absmax", "channel"), (2, "absmax", 32)],
                      quantize_model)
    assert [r.name for r in rows] == ["fp32", "bf16", "int4 absmax per-channel", "int2 absmax group-32"]
    assert rows[0].rel_error == 0 and rows[0].size == qz.size_bytes(model)
    assert rows[1].ppl == pytest.approx(rows[0].ppl, rel=0.01)
    assert rows[2].rel_error < rows[3].rel_error
    table = qz.format_table(rows)
    assert "int4 absmax per-channel" in table and table.count("\n") == len(rows)


def test_int2_needs_groups(base, batch):
    """The notebook's lesson: int2 per channel breaks the model, groups of 32 rescue most of it."""
    model, _ = base
    ppl = qz.perplexity(model, batch)
    per_channel = qz.perplexity(quantize_model(model, 2, "absmax", "channel"), batch)
    groups = qz.perplexity(quantize_model(model, 2, "zeropoint", 32), batch)
    assert per_channel > 2 * ppl
    assert groups < per_channel


# -- distillation and scaling --------------------------------------------------------------------------------


def test_train_student_runs_with_a_given_loss(base, batch):
    model, tok = base
    blocks = qz.training_blocks(tok, n_docs=30, block=32)
    assert blocks.shape[1] == 32
    logits = qz.all_teacher_logits(model, blocks[:8])
    assert logits.shape == (8, 32, model.config.vocab_size)

    def ce(student_logits, teacher_logits, temperature, alpha, labels):
        return nn.functional.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), labels.reshape(-1))

    run = qz.train_student(model, blocks[:8], batch, ce, steps=3, batch_size=4, eval_every=3, teacher_logits=logits)
    assert len(run.losses) == 3 and len(run.eval_ppl) == 1
    assert count_parameters(run.student) < count_parameters(model) / 3
    assert all(math.isfinite(v) for v in run.losses)


def test_chinchilla_fit_is_compute_optimal_near_20_tokens_per_parameter():
    for c in (1e20, 1e22, 1e24):
        n = torch.logspace(6, 13, 4000, dtype=torch.float64)
        loss = qz.chinchilla_loss(n, c / (6 * n))
        best = n[int(loss.argmin())]
        assert 15 < (c / (6 * best)) / best < 30
    assert qz.training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    assert qz.PETAFLOP_S_DAY == 8.64e19


# -- the widget ------------------------------------------------------------------------------------------------


@pytest.fixture()
def explorer(base, batch):
    from course_utils.widgets.quantization import bit_width_explorer

    return bit_width_explorer(quantize_model, absmax, zeropoint, dequant, model=base[0], batch=batch)


def test_widget_draws_and_caches(explorer):
    w = explorer
    assert w.redraw.last_error is None
    assert w.last["key"] == (4, "absmax", "channel") and w.last["n_levels"] == 15
    assert "<svg" in w.plot.value and "kB" in w.summary.value
    w.bits.value = 2
    assert w.last["n_levels"] == 3
    w.scheme.value = "zeropoint"
    assert w.last["n_levels"] == 4 and w.last["key"] == (2, "zeropoint", "channel")
    w.granularity.value = 32
    assert w.last["key"] == (2, "zeropoint", 32)
    w.bits.value = 16
    assert w.last["key"] == (16,) and w.last["n_levels"] is None
    assert w.last["size"] == qz.size_bytes(w.model, 16)
    n_cached = len(w.cache)
    w.bits.value = 2                                   # back to a setting already seen: served from the cache
    assert len(w.cache) == n_cached
    assert w.redraw.timings_ms[-1] < 100


def test_widget_error_in_a_learner_function_is_shown(base, batch):
    from course_utils.widgets.quantization import bit_width_explorer

    def not_done(*args, **kwargs):
        raise NotImplementedError()

    w = bit_width_explorer(not_done, not_done, not_done, not_done, model=base[0], batch=batch)
    assert w.redraw.last_error and "NotImplementedError" in w.redraw.last_error
    assert w.last == {} and w.cache == {}  # nothing half-drawn from a failed call


def test_widget_rejects_bad_arguments(base, batch):
    from course_utils.widgets.quantization import bit_width_explorer

    with pytest.raises(ValueError, match="layer"):
        bit_width_explorer(quantize_model, absmax, zeropoint, dequant, model=base[0], batch=batch, layer="nope")
    with pytest.raises(ValueError, match="bits"):
        bit_width_explorer(quantize_model, absmax, zeropoint, dequant, model=base[0], batch=batch, bits=12)


def test_compute_optimal_follows_chinchillas_rule():
    n, d = qz.compute_optimal(5.88e23)
    assert n == pytest.approx(70e9) and d == pytest.approx(1.4e12)
    n, d = qz.compute_optimal(1e21, tokens_per_param=10)
    assert 6 * n * d == pytest.approx(1e21) and d / n == pytest.approx(10)
    for bad in (0, -1.0):
        with pytest.raises(ValueError):
            qz.compute_optimal(bad)
