"""The training script's quick mode: it runs end to end and writes loadable models with cards."""

import json

import pytest

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
