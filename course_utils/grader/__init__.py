"""The grader wing: everything an instructor runs to grade submissions, and nothing a learner imports.

``workspace`` (course root, workspace, release), ``pipeline`` (nbgrader's stages, defined once), ``submissions``
(import, never modify), ``integrity`` (the submission against the release), ``sandbox`` and ``sandbox_launch``
(where the student's kernel runs), ``oracle`` (in that kernel: answers the judge), ``wire`` (plain-data messages),
``proxy`` and ``judge`` (the trusted side that decides every test), ``cells`` (what a test cell is, what the judge
must run), ``executor`` and ``workers`` (jobs and warm worker processes), ``autograde`` (the coordinator),
``sanitize`` (nothing a student wrote runs in a page), ``feedback`` (feedback pages, grades CSV), ``version`` (what
can change a grade).
"""
