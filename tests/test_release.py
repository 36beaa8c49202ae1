"""Release hygiene: notebooks/ is exactly what `course release` makes of solutions/, and leaks nothing.

`course release` regenerates notebooks/ from solutions/ (nbgrader's generate_assignment with a temporary
gradebook): run it and commit notebooks/ whenever a solutions notebook changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from course_utils.grader import workspace as grading

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (ROOT / "solutions").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
RELEASES = sorted(p for p in (ROOT / "notebooks").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def _release_of(source: Path) -> Path:
    return ROOT / "notebooks" / source.parent.name / source.name


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """`course release` of every assignment into a temporary folder."""
    if not SOURCES:
        pytest.skip("no solutions notebooks yet")
    out = tmp_path_factory.mktemp("release")
    grading.release(ROOT, sorted({p.parent.name for p in SOURCES}), out)
    return out


def test_every_solutions_notebook_has_a_release():
    missing = [str(_release_of(p).relative_to(ROOT)) for p in SOURCES if not _release_of(p).is_file()]
    assert not missing, f"not released yet: {missing}; run `course release` (or `make release`) and commit notebooks/"


def test_no_release_without_a_source():
    orphans = [str(p.relative_to(ROOT)) for p in RELEASES
               if not (ROOT / "solutions" / p.parent.name / p.name).is_file()]
    assert not orphans, f"notebooks/ has notebooks with no solutions/ source: {orphans}"


@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_release_is_in_sync_with_its_source(source: Path, fresh: Path):
    committed = _release_of(source)
    if not committed.is_file():
        pytest.skip(f"{committed.relative_to(ROOT)} not released yet (see test_every_solutions_notebook_has_a_release)")
    regenerated = fresh / source.parent.name / source.name
    if committed.read_bytes() != regenerated.read_bytes():
        old, new = nbformat.read(committed, as_version=4), nbformat.read(regenerated, as_version=4)
        differ = [i for i, (a, b) in enumerate(zip(old.cells, new.cells)) if a != b]
        pytest.fail(f"{committed.relative_to(ROOT)} differs from `course release` of {source.relative_to(ROOT)} "
                    f"(cells {differ[:10]}, {len(old.cells)} vs {len(new.cells)} cells): run `course release` "
                    "and commit notebooks/")


def test_release_is_deterministic(fresh: Path, tmp_path: Path):
    name = SOURCES[0].parent.name
    grading.release(ROOT, [name], tmp_path)
    for path in (fresh / name).glob("*.ipynb"):
        assert (tmp_path / name / path.name).read_bytes() == path.read_bytes()


def _regions(source: str, begin: str, end: str) -> list[str]:
    lines, inside, out = source.split("\n"), False, []
    for line in lines:
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            out.append(line.strip())
    return out


@pytest.mark.parametrize("release", RELEASES, ids=[p.parent.name for p in RELEASES])
def test_release_leaks_no_solution_and_no_hidden_test(release: Path):
    text = release.read_text()
    for marker in MARKERS:
        assert marker not in text, f"{release.relative_to(ROOT)} contains {marker!r}"
    source_path = ROOT / "solutions" / release.parent.name / release.name
    if not source_path.is_file():
        pytest.skip("no source to compare with")
    source, student = nbformat.read(source_path, as_version=4), nbformat.read(release, as_version=4)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in student.cells}
    leaks = []
    for cell in source.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in cells:
            continue
        outside = set(line.strip() for line in re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS).*?### END \1", "",
                                                      cell.source, flags=re.S).split("\n"))
        secret = _regions(cell.source, "BEGIN SOLUTION", "END SOLUTION") + \
            _regions(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        released_lines = set(line.strip() for line in cells[grade_id].source.split("\n"))
        leaks += [f"{grade_id}: {line}" for line in secret
                  if len(line) >= 20 and line in released_lines and line not in outside]
    assert not leaks, f"{release.relative_to(ROOT)} leaks solution or hidden-test lines: {leaks[:5]}"
    for cell in student.cells:
        assert not cell.get("outputs"), f"{release.relative_to(ROOT)} ships cell outputs"


EXERCISE_HEADING = re.compile(r"^### ✏️ Exercise (\d+) — .+ \((\d+) points?\)$", re.M)
QUESTION_HEADING = re.compile(r"^### ❓ Question (\d+) — .+ \((\d+) points?\)$", re.M)
CONCEPT_PREFIX = "concept_"


def _graded_sections(source: Path) -> dict[str, list]:
    """Walk a notebook's cells: for each kind ('exercise', 'question') the headings in order as
    (number, stated points, carried points, grade ids of the graded cells under it); graded cells outside
    any heading are listed under 'outside'. A section ends at the next exercise or question heading or at
    the next '## ' section heading."""
    found: dict[str, list] = {"exercise": [], "question": [], "outside": []}
    current: list | None = None
    for cell in nbformat.read(source, as_version=4).cells:
        if cell.cell_type == "markdown":
            for kind, form, word in (("exercise", EXERCISE_HEADING, "Exercise"), ("question", QUESTION_HEADING, "Question")):
                loose = re.findall(rf"^#+ .*{word} \d+.*$", cell.source, re.M)
                matched = form.findall(cell.source)
                assert len(matched) == len(loose), f"{source.name}: heading not in the house form: {loose}"
            headings = [(m.start(), "exercise", m) for m in EXERCISE_HEADING.finditer(cell.source)] + \
                       [(m.start(), "question", m) for m in QUESTION_HEADING.finditer(cell.source)]
            if headings:
                _, kind, m = max(headings, key=lambda h: h[0])
                for _, k, mm in sorted(headings, key=lambda h: h[0]):
                    found[k].append([int(mm.group(1)), int(mm.group(2)), 0, []])
                current = found[kind][-1]
            elif re.search(r"^## ", cell.source, re.M):
                current = None
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            if current is None:
                found["outside"].append(meta.get("grade_id"))
            else:
                current[2] += int(meta.get("points", 0))
                current[3].append(meta.get("grade_id"))
    return found


@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_exercise_and_question_headings_are_numbered_in_order_and_state_the_points_their_tests_carry(source: Path):
    """House style: '### ✏️ Exercise N — title (P points)' for code exercises and '### ❓ Question N — title
    (P point)' for concept questions, each numbered 1, 2, ... in order; P is what the graded cells up to the
    next heading (or '## ' section) are worth, so a learner reads the same points the gradebook will show."""
    found = _graded_sections(source)
    for kind in ("exercise", "question"):
        numbers = [n for n, *_ in found[kind]]
        assert numbers == list(range(1, len(numbers) + 1)), f"{source.name}: {kind}s out of order: {numbers}"
        stated = [(n, p) for n, p, *_ in found[kind]]
        carried = [(n, c) for n, _, c, _ in found[kind]]
        assert stated == carried, f"{source.name}: {kind} headings state {stated}, graded cells carry {carried}"
        empty = [n for n, _, c, _ in found[kind] if c == 0]
        assert not empty, f"{source.name}: {kind}s {empty} have no graded cell"
    assert not found["outside"], f"{source.name}: graded cells outside any exercise or question: {found['outside']}"


@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_concept_questions_have_concept_ids_and_exercises_do_not(source: Path):
    """Concept questions are graded like code, but their grade ids start with 'concept_' (answer cell and
    test cell) so that the gradebook, feedback and progress tell them apart from code exercises."""
    found = _graded_sections(source)
    wrong_q = [g for *_, ids in found["question"] for g in ids if not g.startswith(CONCEPT_PREFIX)]
    wrong_e = [g for *_, ids in found["exercise"] for g in ids if g.startswith(CONCEPT_PREFIX)]
    assert not wrong_q, f"{source.name}: graded cells of concept questions must have ids starting {CONCEPT_PREFIX!r}: {wrong_q}"
    assert not wrong_e, f"{source.name}: code exercises' test cells must not use the {CONCEPT_PREFIX!r} prefix: {wrong_e}"


TOPICS = [p for p in SOURCES if p.parent.name[:2].isdigit() and 1 <= int(p.parent.name[:2]) <= 98]


@pytest.mark.parametrize("source", TOPICS, ids=[p.parent.name for p in TOPICS])
def test_every_topic_notebook_asks_at_least_three_concept_questions(source: Path):
    found = _graded_sections(source)
    assert len(found["question"]) >= 3, f"{source.name}: {len(found['question'])} concept questions, want at least 3"


@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_concept_answers_are_plain_values_and_keys_stay_hidden(source: Path):
    """An answer cell binds answer_* names to plain values inside the solution markers (never widget state);
    its test cell checks the form visibly and compares with the key only inside the hidden tests."""
    for cell in nbformat.read(source, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if not str(meta.get("grade_id", "")).startswith(CONCEPT_PREFIX):
            continue
        if meta.get("solution"):
            inside = "\n".join(_regions(cell.source, "BEGIN SOLUTION", "END SOLUTION"))
            assert re.search(r"^answer_\w+ = ", inside, re.M), f"{meta['grade_id']}: no `answer_... = value` in the solution"
            assert "widget" not in inside and ".value" not in inside, f"{meta['grade_id']}: answers are values, not widget state"
        elif meta.get("grade"):
            visible = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", cell.source, flags=re.S)
            hidden = "\n".join(_regions(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"))
            assert "expect_answer" not in visible, f"{meta['grade_id']}: the key is compared outside the hidden tests"
            assert "expect_answer" in hidden, f"{meta['grade_id']}: no hidden expect_answer (the key)"
            assert re.search(r"expect_(choice|numeric|mapping)\(", visible), \
                f"{meta['grade_id']}: the visible part should check the answer's form (expect_choice/numeric/mapping)"


def _concept_pairs(source: Path) -> list[tuple[str, str, str]]:
    """(grade id, answer cell source, test cell source) of every concept question of a notebook."""
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nbformat.read(source, as_version=4).cells}
    return [(gid[: -len("_answer")], cell.source, cells[gid[: -len("_answer")]].source) for gid, cell in cells.items()
            if gid and gid.startswith(CONCEPT_PREFIX) and gid.endswith("_answer")]


CONCEPTS = [(src, gid, answer, test) for src in SOURCES for gid, answer, test in _concept_pairs(src)]


def _wrong_answers(right, test_source: str) -> list:
    """Well-formed wrong answers: the other options, other numbers, a dict with one value changed."""
    if isinstance(right, str):
        options = re.search(r'expect_choice\(\w+, "(\w+)"', test_source).group(1)
        return [o for o in options if o != right.lower()]
    if isinstance(right, (int, float)):
        return [right * 2, right / 2, right * 10, -right, right + 1e6]
    values = re.search(r"expect_mapping\(\w+, \w+, (\[[^\]]*\])", test_source).group(1)
    allowed = eval(values)  # a literal list of strings in the test cell  # noqa: S307
    out = []
    for k in right:
        for v in allowed:
            if v != right[k]:
                out.append({**right, k: v})
    return out


@pytest.mark.parametrize("source,gid,answer,test", CONCEPTS, ids=[f"{s.parent.name}:{g}" for s, g, _, _ in CONCEPTS])
def test_concept_key_accepts_the_solution_and_explains_every_wrong_answer(source, gid, answer, test):
    """Each concept question's test cell, run as the grader runs it: the solution's answer passes; every other
    well-formed answer passes the visible form check (it does not give the key away) and fails the hidden
    check with an explanation written for that answer (not the generic fallback), without printing the key;
    a malformed answer fails the visible check."""
    from course_utils import checks

    var = re.search(r"^(answer_\w+) = ", answer, re.M).group(1)
    solved = "\n".join(line for line in answer.split("\n") if "### " not in line)
    namespace: dict = {"checks": checks}
    exec(solved, namespace)  # noqa: S102 - the instructor's own cell
    right = namespace[var]
    exec(test, dict(namespace))  # noqa: S102 - must pass with the solution
    visible = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", test, flags=re.S)
    for wrong in _wrong_answers(right, test):
        exec(visible, {"checks": checks, var: wrong})  # noqa: S102 - the form check must not judge the choice
        with pytest.raises(checks.CheckFailure) as failure:
            exec(test, {"checks": checks, var: wrong})  # noqa: S102
        message = str(failure.value)
        assert "not this one" not in message or isinstance(right, (int, float)), \
            f"{gid}: the wrong answer {wrong!r} gets the generic fallback, not an explanation"
        assert f"expected" not in message, f"{gid}: the failure message shows an expected value: {message}"
        if isinstance(right, str):
            assert f"'{right}'" not in message and f'"{right}"' not in message, f"{gid}: the message names the key"
    malformed = 42 if isinstance(right, (str, dict)) else "many"
    with pytest.raises(checks.CheckFailure):
        exec(visible, {"checks": checks, var: malformed})  # noqa: S102


# Every seed concept is checked by a graded cell somewhere (a code exercise's test or a concept question);
# the ideas only taught in prose before concept questions existed are the first group.
SEED_CONCEPT_CHECKS = {
    "benchmarks (GLUE, SuperGLUE, MMLU, BIG-bench, HELM)": ["03_finetuning:concept_benchmarks"],
    "FLAN and multi-task instruction tuning, catastrophic forgetting": ["03_finetuning:concept_multitask"],
    "the three classes of PEFT": ["03_finetuning:concept_peft_classes"],
    "adapters": ["03_finetuning:test_bottleneck_adapter", "03_finetuning:test_add_adapters",
                 "03_finetuning:concept_adapter_merge"],
    "QLoRA": ["03_finetuning:concept_qlora"],
    "model families (MLM, CLM, seq2seq) and their use cases": ["01_attention:concept_objective",
                                                               "01_attention:concept_families"],
    "the RL vocabulary (agent, environment, action, reward, policy)": ["04_rlhf:concept_rl_vocabulary"],
    "head-only vs whole-model tuning": ["03_finetuning:concept_head_tuning"],
    "constitutional AI": ["04_rlhf:concept_constitutional_ai"],
    "red teaming": ["04_rlhf:concept_red_teaming"],
    "domain pre-training (BloombergGPT)": ["05_quantization:concept_domain_pretraining"],
    "petaflop/s-days and compute budgets": ["05_quantization:concept_pf_days"],
    "Chinchilla, over-parameterized and under-trained models": ["05_quantization:concept_chinchilla"],
    "tokenization": ["01_attention:concept_unknown_word", "01_attention:concept_tokens_per_word"],
    "RNN limits": ["01_attention:concept_rnn"],
    "zero-, one- and few-shot in-context learning": ["02_sampling:concept_in_context"],
    "prompt engineering vs prompt tuning (soft prompts)": ["02_sampling:concept_prompt_tuning", "03_finetuning:test_soft_prompt"],
    "max new tokens and generate's settings": ["02_sampling:concept_generate_defaults"],
    "PEFT saves memory, not compute": ["03_finetuning:concept_peft_cost"],
    "reward hacking and the KL penalty": ["04_rlhf:concept_reward_hacking", "04_rlhf:test_kl_penalized_rewards"],
    "quantization methods (LLM.int8(), GPTQ, AWQ, QLoRA)": ["05_quantization:concept_quant_methods"],
    "distillation": ["05_quantization:test_distillation_soft", "05_quantization:concept_distillation"],
    # taught by code exercises
    "instruction fine-tuning with prompt-completion pairs (-100 labels)": ["03_finetuning:test_instruction_batch"],
    "PPO returns and advantages (GAE)": ["04_rlhf:test_gae_advantages", "04_rlhf:test_gae_padding"],
    "a KL penalty over a padded batch": ["04_rlhf:test_masked_kl_rewards", "04_rlhf:test_sequence_kl"],
    "self-attention, encoder/decoder masks, multi-head": ["01_attention:test_sdpa_mask", "01_attention:test_causal_mask",
                                                         "01_attention:test_split_heads"],
    "greedy vs random sampling, temperature, top-k, top-p": ["02_sampling:test_sample_distribution",
                                                             "02_sampling:concept_temperature_top_p"],
    "ROUGE and BLEU": ["03_finetuning:test_rouge_n", "03_finetuning:test_rouge_l", "03_finetuning:test_bleu"],
    "LoRA": ["03_finetuning:test_lora_forward", "03_finetuning:test_lora_merge"],
    "rankings to pairwise data, the reward model": ["04_rlhf:test_rankings_to_pairs", "04_rlhf:test_pairwise_reward_loss"],
    "PPO's clipped objective": ["04_rlhf:test_ppo_clipped_loss"],
    "memory of a model (1B parameters = 4 GB)": ["05_quantization:test_memory_inference", "05_quantization:test_memory_training"],
    "quantization, pruning": ["05_quantization:test_absmax_per_tensor", "05_quantization:test_magnitude_prune"],
    "DDP, FSDP, ZeRO": ["05_quantization:test_zero_memory"],
}


def test_every_seed_concept_is_checked_by_a_graded_cell():
    graded = {f"{p.parent.name}:{c.metadata['nbgrader']['grade_id']}" for p in SOURCES
              for c in nbformat.read(p, as_version=4).cells if c.metadata.get("nbgrader", {}).get("grade")}
    missing = {concept: [g for g in ids if g not in graded] for concept, ids in SEED_CONCEPT_CHECKS.items()}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"seed concepts whose graded cells are gone: {missing}"
    questions = {g for g in graded if g.split(":")[1].startswith(CONCEPT_PREFIX)}
    unlisted = questions - {g for ids in SEED_CONCEPT_CHECKS.values() for g in ids}
    assert not unlisted, f"concept questions not mapped to a seed concept here: {sorted(unlisted)}"


def test_the_heading_walk_sees_points_numbers_and_stray_cells(tmp_path: Path):
    """The walk the heading tests rely on: it reads questions and exercises apart, and sees a wrong count."""
    from tools.nbauthor import md, solution, tests, write

    path = write(tmp_path / "x.ipynb", [
        md("### ✏️ Exercise 1 — f (2 points)"), solution("f", "### BEGIN SOLUTION\nf = 1\n### END SOLUTION"),
        tests("test_f", 1, '"""f."""\nassert f'),
        md("### ❓ Question 1 — q (1 point)"), solution("concept_q_answer", "### BEGIN SOLUTION\nanswer_q = 'a'\n### END SOLUTION"),
        tests("concept_q", 1, '"""q."""\nassert answer_q'),
        md("## Next section"), tests("stray", 1, '"""stray."""\npass'),
    ])
    found = _graded_sections(path)
    assert found["exercise"] == [[1, 2, 1, ["test_f"]]]
    assert found["question"] == [[1, 1, 1, ["concept_q"]]]
    assert found["outside"] == ["stray"]
    bad = write(tmp_path / "y.ipynb", [md("### ❓ Question 1: q (1 point)")])
    with pytest.raises(AssertionError, match="house form"):
        _graded_sections(bad)
