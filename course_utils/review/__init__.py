"""The review wing: the self-studying learner's own tools, outside any grading.

``cards`` (the flashcard decks in ``course_utils/decks/``), ``srs`` (SM-2 spaced repetition and the progress file),
``flashcards`` (the review widget at the end of each notebook and in ``99_review``), ``selfcheck`` (the start
notebook's predict-then-run self-check), ``validate`` (``course validate``: which checks of a notebook fail) and
``progress`` (``course progress``: checks passing per notebook, cards due). Notebooks run through the one runner,
:mod:`course_utils.runner`.
"""
