"""course_utils: the helper package of the LLM Foundations course.

One module per concern: ``world`` (the generated corpus), ``models`` (loading bundled or hub models),
``train`` (re-creating the bundled models), one module per topic, ``widgets``, ``checks`` (feedback-rich
checks for the exercises), ``flashcards``, ``grading`` and ``cli`` (the ``course`` command).
Importing the package is cheap: it imports neither torch nor transformers.
"""

__version__ = "0.1.0"
