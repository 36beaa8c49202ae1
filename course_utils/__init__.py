"""course_utils: the helper package of the LLM Foundations course. One house, three wings:

* **course content**, what the notebooks import: ``world`` (the generated corpus), ``models``, ``train``,
  ``checks`` (feedback-rich checks), one module per topic (``attention``, ``sampling``, ...), ``widgets``;
* **review**, the self-studying learner's tools: flashcards, spaced repetition, progress, validate;
* **grader**, the instructor's machinery: ``course_utils.grader`` (workspace, sandbox, judge, autograde, ...).

``cli`` is the ``course`` command. Importing the package is cheap: it imports neither torch nor transformers.
Modules that moved keep their old import paths (with a warning): see :mod:`course_utils._moved`.
"""

from course_utils import _moved

__version__ = "0.1.0"
_moved.install()
