"""The training script's quick mode: it runs end to end and writes loadable models with cards."""

import json

import pytest
import torch

from course_utils import train
from course_utils.models import load_model


@pytest.mark.slow
def test_quick_training_writes_loadable_models(tmp_path):
    assert train.main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("tiny-base", "tiny-instruct"):
        folder = tmp_path / name
        card = json.loads((folder / "metrics.json").read_text())
        assert card["config"]["steps"] > 0 and card["parameters"] > 0
        model, tokenizer = load_model(folder)
        assert model.config.n_layer == train.MODEL_SHAPE["n_layer"]
        assert tokenizer.eos_token_id == model.config.eos_token_id


def test_quick_refuses_to_overwrite_the_bundled_models():
    with pytest.raises(SystemExit):
        train.main(["--quick"])


def test_instruction_labels_mask_the_prompt():
    tokenizer = train.build_tokenizer(["Summarize the dialogue: hello there. Summary: hi"], vocab_size=300)
    (ids, labels), = train.encode_pairs(tokenizer, [("Summarize the dialogue: hello", " hi")])
    n_prompt = len(tokenizer("Summarize the dialogue: hello")["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tokenizer.eos_token_id


def test_schedule_warms_up_then_decays():
    cfg = train.TrainConfig(steps=100, warmup=10)
    lrs = [train._schedule(s, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1.0
    assert lrs[-1] < lrs[50] < lrs[10]
    assert min(lrs[10:]) >= 0.1


def test_copy_rows_repeat_one_random_span_to_the_end():
    from course_utils import train_data

    gen = torch.Generator().manual_seed(0)
    batch = train_data.copy_batch(gen, 20, 64, 500)
    assert batch.shape == (20, 64) and int(batch.min()) >= 1 and int(batch.max()) < 500
    for row in batch.tolist():
        period = next(n for n in range(8, 33) if row[n:] == row[:-n])  # the row repeats with the span's length
        assert len(set(row[:period])) > period // 2, "the span itself is random, not a repeat"
    with pytest.raises(ValueError, match="lengths"):
        train_data.copy_row(gen, 500, 64, lengths=(5, 2))


def test_attention_targets_point_after_the_last_occurrences():
    from course_utils import train_data

    ids = torch.tensor([[5, 6, 7, 5, 6, 7, 5]])
    target, has = train_data.attention_targets(ids)
    assert has.tolist() == [[False, False, False, True, True, True, True]]
    assert target[0, 3].tolist() == [0, 1, 0, 0, 0, 0, 0]  # the 5 at 3: the token after the 5 at 0
    assert target[0, 6, 1] == target[0, 6, 4] == 0.5  # two earlier 5s: half each
    assert torch.allclose(target[has].sum(-1), torch.ones(4))


def test_attention_loss_is_low_only_for_the_right_heads():
    from course_utils import train_data

    ids = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8]])  # each token occurs at most once before: one target each
    T = ids.shape[1]
    target = train_data.attention_targets(ids)[0][0]  # (T, T)
    prev = torch.zeros(T, T)
    prev[0, 0] = 1.0
    prev[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    right = [torch.stack([prev, uniform])[None], torch.stack([target + (target.sum(-1, keepdim=True) == 0) * uniform,
                                                                uniform])[None]]  # (1, H=2, T, T) per layer
    wrong = [torch.stack([uniform, prev])[None], torch.stack([uniform, uniform])[None]]
    assert float(train_data.attention_loss(right, ids)) < 1e-3
    assert float(train_data.attention_loss(wrong, ids)) > 1.0


def test_fourier_positions_make_every_position_distinct_from_its_neighbours():
    from course_utils import train_data

    pe = train_data.fourier_positions(256, 128, scale=1.0)
    gram = pe @ pe.T  # (256, 256): sum_i cos(w_i (p - q))
    assert gram.diagonal().allclose(gram.new_full((256,), 64.0))
    off = gram - 64.0 * torch.eye(256)
    assert float(off.abs().max()) < 0.5 * 64  # no other position comes close to being the same
    assert float(gram.diagonal(offset=1).abs().max()) < 5  # neighbours are nearly orthogonal
