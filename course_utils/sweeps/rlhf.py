"""The cached beta sweep of notebook 4: the RLHF pipeline once per KL coefficient, with its provenance.

The notebook shows what PPO does at several values of beta (the weight of the KL penalty), including the
reward hacking at beta = 0; training four policies does not fit a notebook's time budget, so the sweep is run
once and cached in ``assets/rlhf/beta_sweep.json`` together with everything that fixes its numbers.
``python -m course_utils.sweeps.rlhf`` (or the older ``python -m course_utils.rlhf``) re-creates it with the functions
from the instructor notebook's answer cells: about 2 minutes for the four betas on one CPU thread. The
notebook's sweep cell (``RUN_SWEEP = True``) runs the same :func:`beta_sweep` with the learner's own functions.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from course_utils import world
from course_utils.ppo import RewardModelScorer, evaluate, frozen_copy, make_prompts, run_ppo, sample
from course_utils.reward_model import (RM_HELD_OUT_SEED, RM_TRAIN_SEED, load_reward_model, pairwise_accuracy,
                                       preference_triples, train_reward_model)

SWEEP_PATH = Path(__file__).resolve().parents[1] / "assets" / "rlhf" / "beta_sweep.json"
EXERCISES = ("rankings_to_pairs", "pairwise_reward_loss", "kl_penalized_rewards", "ppo_clipped_loss")
SOLUTIONS_NOTEBOOK = Path(__file__).resolve().parents[2] / "solutions" / "04_rlhf" / "04_rlhf.ipynb"


@dataclass
class SweepConfig:
    """Everything that fixes the cached sweep's numbers (the seeds included); stored with the results."""
    betas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    steps: int = 24               # PPO steps per beta
    batch_size: int = 32          # completions per PPO step
    lr: float = 3e-4
    ppo_epochs: int = 2
    clip_eps: float = 0.2
    max_new_tokens: int = 48
    seed: int = 0                 # PPO prompts and sampling (per step: seed * 100_003 + step)
    rm_train_prompts: int = 200   # ranked prompts from world.preferences(RM_TRAIN_SEED, ...)
    rm_steps: int = 300
    rm_lr: float = 3e-3
    rm_seed: int = 0              # the score head's initialisation and training
    calibration_prompts: int = 64
    calibration_seed: int = 3
    eval_prompts: int = 64
    eval_seed: int = 999


def exercise_functions(notebook: Path | str = SOLUTIONS_NOTEBOOK) -> dict[str, Callable[..., Any]]:
    """The four exercise functions, defined by running the answer cells of ``notebook`` (nbgrader metadata).

    Used by ``python -m course_utils.rlhf`` to re-create the cached sweep with the solutions' functions,
    which live in the instructor notebook, not in this package.
    """
    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}: pass --notebook with the path of 04_rlhf.ipynb")
    namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
    for cell in json.loads(path.read_text())["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("solution") and not meta.get("grade"):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            exec(compile(source, f"{path.name}:{meta.get('grade_id')}", "exec"), namespace)  # noqa: S102
    missing = [name for name in EXERCISES if not callable(namespace.get(name))]
    if missing:
        raise ValueError(f"{path} defines no {', '.join(missing)} in its answer cells")
    return {name: namespace[name] for name in EXERCISES}


def beta_sweep(pairs_fn: Callable[..., Any], rm_loss_fn: Callable[..., Any], kl_fn: Callable[..., Any],
               ppo_loss_fn: Callable[..., Any], config: SweepConfig | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """The notebook's whole pipeline, then one PPO run per beta: ``{"provenance": {...}, "runs": {beta: ...}}``.

    Reward model (trained with ``rm_loss_fn`` on pairs from ``pairs_fn``), calibration on the reference
    policy's samples, an evaluation before training, then for each beta a fresh ``tiny-instruct`` trained
    with ``kl_fn`` and ``ppo_loss_fn`` and evaluated on the same held-out prompts.
    """
    import platform

    import transformers

    from course_utils.models import load_model

    cfg = config or SweepConfig()
    t_start = time.perf_counter()
    torch.manual_seed(0)
    reference, tokenizer = load_model("tiny-instruct")
    reference = frozen_copy(reference)
    train = preference_triples(world.preferences(RM_TRAIN_SEED, cfg.rm_train_prompts), pairs_fn)
    held_out = preference_triples(world.preferences(RM_HELD_OUT_SEED, 40), pairs_fn)
    reward_model, rm_tokenizer = load_reward_model("tiny-base", seed=cfg.rm_seed)
    train_reward_model(reward_model, rm_tokenizer, train, rm_loss_fn, steps=cfg.rm_steps, lr=cfg.rm_lr,
                       seed=cfg.rm_seed)
    accuracy = pairwise_accuracy(reward_model, rm_tokenizer, held_out)
    reward_fn = RewardModelScorer(reward_model, rm_tokenizer)
    calibration = sample(reference, tokenizer, make_prompts(cfg.calibration_prompts, cfg.calibration_seed),
                         seed=cfg.calibration_seed)
    reward_fn.calibrate(calibration.prompts, calibration.texts)
    before = evaluate(reference, reference, tokenizer, reward_fn, n=cfg.eval_prompts, seed=cfg.eval_seed,
                      judge=reference)
    log(f"reward model: held-out pair accuracy {accuracy:.3f}; before PPO: reward {before['reward']:+.2f}, "
        f"labeller {before['labeller']:+.2f}")
    runs: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for beta in cfg.betas:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        policy, _ = load_model("tiny-instruct")
        hist = run_ppo(policy, reference, tokenizer, reward_fn, kl_fn, ppo_loss_fn, beta=beta, steps=cfg.steps,
                       batch_size=cfg.batch_size, ppo_epochs=cfg.ppo_epochs, lr=cfg.lr, clip_eps=cfg.clip_eps,
                       max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        after = evaluate(policy, reference, tokenizer, reward_fn, n=cfg.eval_prompts, seed=cfg.eval_seed,
                         judge=reference)
        runs[str(float(beta))] = {"history": hist.to_dict(), "eval": after, "before": before}
        seconds[str(float(beta))] = round(time.perf_counter() - t0, 1)
        log(f"beta {beta}: reward {after['reward']:+.2f}, labeller {after['labeller']:+.2f}, KL {after['kl']:.1f}, "
            f"distinct-2 {after['distinct_2']:.2f} ({seconds[str(float(beta))]:.0f} s)")
    provenance = {
        "config": asdict(cfg), "reward_model_held_out_accuracy": accuracy,
        "seconds_per_beta": seconds, "seconds_total": round(time.perf_counter() - t_start, 1),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "regenerate": "python -m course_utils.sweeps.rlhf   (or the notebook's sweep cell with RUN_SWEEP = True)",
    }
    return {"provenance": provenance, "runs": runs}


def save_sweep(runs: dict[str, dict[str, Any]], path: Path = SWEEP_PATH, keep_texts: int = 16,
               provenance: dict[str, Any] | None = None) -> Path:
    """Write ``{"provenance": ..., "runs": {beta: {"history", "eval", "before"}}}`` as JSON.

    The evaluations' ``texts`` and ``prompts`` are cut to their first ``keep_texts`` entries.
    """
    runs = copy.deepcopy(runs)
    for run in runs.values():
        for part in (v for v in run.values() if isinstance(v, dict)):
            for key in ("texts", "prompts"):
                if key in part:
                    part[key] = list(part[key])[:keep_texts]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": provenance or {}, "runs": runs}, indent=1, sort_keys=True) + "\n")
    return path


def _read_sweep(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no cached beta sweep at {path}: run `python -m course_utils.sweeps.rlhf`, or the "
                                "notebook's sweep cell with RUN_SWEEP = True, to create it")
    data = json.loads(Path(path).read_text())
    return data if "runs" in data else {"provenance": {}, "runs": data}


def load_sweep(path: Path = SWEEP_PATH) -> dict[str, dict[str, Any]]:
    """The cached beta sweep's runs: ``{"0.0": {"history": {...}, "eval": {...}, "before": {...}}, ...}``."""
    return _read_sweep(path)["runs"]


def sweep_provenance(path: Path = SWEEP_PATH) -> dict[str, Any]:
    """How the cached sweep was made: configuration and seeds, library versions, date, seconds."""
    return _read_sweep(path)["provenance"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m course_utils.sweeps.rlhf``: re-create the cached beta sweep (about 30 s per beta on one CPU thread)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_utils.sweeps.rlhf", description=main.__doc__)
    parser.add_argument("--notebook", default=str(SOLUTIONS_NOTEBOOK),
                        help="notebook whose answer cells define the four exercise functions (default: the solutions)")
    parser.add_argument("--out", default=str(SWEEP_PATH), help="where to write the sweep (default: the cached one)")
    parser.add_argument("--betas", default=",".join(str(b) for b in SweepConfig.betas),
                        help="comma-separated KL coefficients")
    parser.add_argument("--steps", type=int, default=SweepConfig.steps, help="PPO steps per beta")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar per model
    torch.set_num_threads(1)
    fns = exercise_functions(args.notebook)
    cfg = SweepConfig(betas=tuple(float(b) for b in args.betas.split(",")), steps=args.steps)
    sweep = beta_sweep(*(fns[name] for name in EXERCISES), config=cfg, log=lambda m: print(m, flush=True))
    print("wrote", save_sweep(sweep["runs"], Path(args.out), provenance=sweep["provenance"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
