"""nbgrader configuration of the LLM Foundations course (the repository is the course root).

The grading pipeline itself is defined once, in course_utils/grader/pipeline.py: the `course` command and plain
`nbgrader` commands run here both use it. This file adds the paths of the default workspace (./grading/; the
`course` command points them at --workspace) and is the place for a course's own settings.
"""

from course_utils.grader.pipeline import configure

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file
configure(c)

c.CourseDirectory.submitted_directory = "grading/submitted"
c.CourseDirectory.autograded_directory = "grading/autograded"
c.CourseDirectory.feedback_directory = "grading/feedback"
c.CourseDirectory.db_url = "sqlite:///grading/gradebook.db"
c.IntegrityCheck.release_directory = "notebooks"   # `course autograde` uses its workspace copy

# Execution settings (defaults shown): CPU seconds per cell, seconds per notebook, sandbox mode, kernel memory.
c.JudgeExecute.timeout = 60
c.JudgeExecute.notebook_timeout = 900
c.JudgeExecute.sandbox = "auto"             # bwrap > bwrap-userns > setpriv > none (the grades say which)
c.JudgeExecute.memory_mb = 8192
c.JudgeExecute.stderr_fails_tests = False   # a warning on stderr in a test does not fail it

# When each assignment was released: a timestamp.txt before it is flagged (default: the first commit of
# notebooks/<assignment>/ in this repository's git history; see course_utils/grader/timestamps.py).
# c.SubmissionTimes.released = {"01_attention": "2026-01-12T09:00:00+00:00"}
