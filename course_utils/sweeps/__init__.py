"""Cached experiments too long for a notebook's time budget, each re-creatable from the command line.

* :mod:`course_utils.sweeps.finetuning` -- notebook 3's comparison of full fine-tuning, BitFit, LoRA ranks and prompt
  tuning (``python -m course_utils.sweeps.finetuning --sweep``);
* :mod:`course_utils.sweeps.rlhf` -- notebook 4's PPO runs at several KL weights (``python -m course_utils.sweeps.rlhf``).

A sweep module runs the whole pipeline with the functions from the instructor notebook's answer cells, writes
its result with its provenance (configuration, seeds, library versions, date) under ``course_utils/assets``,
and the notebook shows the cached result unless the learner asks for a fresh run with their own functions.
"""
