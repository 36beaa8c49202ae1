"""Canvas in and out: its submissions zip becomes ``submissions/``, the grades become its gradebook CSV.

**Roster** (``load_roster``): ``student_id,canvas_user_id[,name,sis_user_id,sis_login_id,section]``, or Canvas's own
gradebook export (Grades > Export: ``Student,ID,SIS User ID,SIS Login ID,Section,...``; ``ID`` is the Canvas user
id, the student id is an added ``student_id`` column, else ``SIS Login ID``). Student ids are folder names
(letters, digits, ``_ . @ + -``). Every bad line is reported with file, line, value and the fix.

**In** (``collect_canvas``). Canvas names each uploaded file ``<name>_[LATE_]<user id>_<file id>_<file name>``
(canvas-lms ``lib/content_zipper.rb``: ``<name>`` is the lower-cased sortable name without punctuation, absent under
anonymous grading, where the user id is ``anon_<id>``; ``<file id>`` is the upload's attachment id, which grows with
every upload); a file name uploaded again becomes ``01_attention-1.ipynb``, ``-2``, ... Every attempt is kept in
``OUT/.canvas/attempts/<student>/<assignment>/<file id>/`` (with ``attempt.json``: zip, entry, late flag, sha256);
the latest (highest file id, then re-upload number) is copied to ``OUT/<student>/<assignment>/<assignment>.ipynb``,
the layout ``course autograde`` reads (it skips dot-folders). The same zip again changes nothing; a newer zip moves
the latest forward; a notebook there that is none of the attempts (edited by hand) is never overwritten. No
``timestamp.txt``: the zip has no submission time (rubyzip stamps entries with the time the zip was built) and
``LATE`` is only yes/no, so it goes into ``attempt.json`` and the report. Entries that are not collected are listed
with the reason, on screen and in ``OUT/.canvas/reports/``. Zip entries are hostile input: absolute paths, ``..``,
links, encrypted or oversized entries are refused, and output paths are built only from roster ids and known
assignment names, never from the zip.

**Out** (``write_canvas_grades``). canvas-lms's ``GradebookImporter`` reads a header
``Student,ID,SIS User ID,SIS Login ID,Section,<assignment>...``, matches students by ``ID`` (then SIS ids, then
name) and assignment columns by ``Title (assignment id)`` or title (an unknown title creates an assignment), and an
optional ``Points Possible`` line. We write one column per graded assignment (the Canvas export's header when its
title is the assignment's name), points possible = ``max_score``, one line per roster student. Not graded (nothing
handed in, or a grading error) is blank, which Canvas reads as "no score"; ``missing="zero"`` writes 0 for work that
was not handed in.
"""

from course_utils.grader.canvas.collect import (CanvasFile, Collected, CollectReport, Limits, collect_canvas,
                                             match_notebook, parse_canvas_name)
from course_utils.grader.canvas.export import CanvasExport, canvas_gradebook, read_grades_csv, write_canvas_grades
from course_utils.grader.canvas.roster import CANVAS_INFO, Roster, RosterError, Student, load_roster

__all__ = ["CANVAS_INFO", "CanvasExport", "CanvasFile", "CollectReport", "Collected", "Limits", "Roster", "RosterError", "Student",
           "canvas_gradebook", "collect_canvas", "load_roster", "match_notebook", "parse_canvas_name",
           "read_grades_csv", "write_canvas_grades"]
