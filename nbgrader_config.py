"""nbgrader configuration for the course (nbgrader 0.9.6).

Layout, relative to this file (the course root, wherever nbgrader is started from):

    solutions/<assignment>/<notebook>.ipynb   the source: solutions and hidden tests
    exercises/<assignment>/<notebook>.ipynb   the release students get (generated, committed)
    submitted/, autograded/, feedback/         instructor-only, gitignored

Regenerate the release without touching the gradebook:

    python -m course_lib.nbgrader_tools release        (what `make exercises` runs)

Grade a class (in the instructor's own copy of the repository, as root on Linux):

    make grade ASSIGNMENT=ch01_embeddings SEED=<secret integer>
    python -m course_lib.autograde ch01_embeddings --seed <secret integer>   # the same

That command (course_lib/autograde/, guide: book/running_the_course.md) runs nbgrader's own
autograde with the defences below, but with each student's kernel in a sandbox, re-checks every
graded function in a fresh sandboxed process against solutions/<assignment>/grading_spec.py, and
counts a test cell's points only when both agree. Plain `nbgrader autograde` runs student code in
the same kernel as the tests: a submission can patch the comparisons and score full marks.
Use a new seed for every grading round; it never enters the sandbox.
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

# ---- where things are ---------------------------------------------------------------------
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "pretrained-lm-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# The default layout is {nbgrader_step}/{student_id}/{assignment_id}; generate_assignment
# uses student_id "." so the release lands at exercises/<assignment>/.
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")  # gitignored
# grading_spec.py (the independent checks, with the hidden-input generators) stays in solutions/:
# nbgrader copies every other file of solutions/<assignment>/ into the release, never this one.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store", "grading_spec.py"]

# ---- what students receive ----------------------------------------------------------------
# Solution regions become this stub; a cell with a grade or solution marker but no nbgrader
# metadata (or the reverse) is an error instead of being released with the answer in it.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.enforce_metadata = True
c.ClearHiddenTests.enforce_metadata = True
# Instructions, setup and test cells cannot be edited or deleted in Jupyter.
c.LockCells.lock_grade_cells = True
c.LockCells.lock_readonly_cells = True
c.LockCells.lock_solution_cells = True
c.LockCells.lock_all_cells = False
# Every released notebook starts with a locked cell that installs course_lib where it is missing
# (Colab) and does nothing in the course environment or the grader's sandbox: nbgrader's own
# preprocessors, with course_lib.nbgrader_tools.ColabSetup in place of IncludeHeaderFooter.
from course_lib.nbgrader_tools import generate_assignment_preprocessors  # noqa: E402

c.GenerateAssignment.preprocessors = generate_assignment_preprocessors()

# ---- grading ------------------------------------------------------------------------------
# Autograde restores every locked and test cell from the gradebook (checksummed at
# generate time), so an edited or deleted test cell is put back and run as written.
c.OverwriteCells.add_missing_cells = True
# Each cell gets this many seconds; an endless loop is interrupted and recorded as an error.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
c.Execute.raise_on_iopub_timeout = True
c.Execute.execute_retries = 0
# Keep feedback readable when a submission prints in a loop.
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 60
