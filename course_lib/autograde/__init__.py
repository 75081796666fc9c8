"""Autograding a class that cannot be fooled: ``python -m course_lib.autograde ASSIGNMENT``.

Plain ``nbgrader autograde`` runs the student's code in the same kernel as the tests, so a
submission can patch the comparison (``np.isclose = lambda *a, **k: True``), read the
instructor's files, or hang and crash the grader. This package grades in layers (the top
layer of ``course_lib``: nothing below imports it):

``batch``     the instructor's command: parallel workers, one gradebook writer, a ledger that
              makes a killed run resumable, CSV export (``cli`` parses the options);
``worker``    one submission: intake -> nbgrader in the sandbox -> independent check -> scores;
``notebook``  intake (the submission is rebuilt from the release), the sandboxed kernel manager
              and an Execute preprocessor that survives dead or deaf kernels;
``extract``   the student's definitions, read from the notebook's text;
``check``     the independent check: cases and references outside, the student's functions in
              a fresh sandboxed process (``runner``), results back as plain data (``wire``);
``spec``      what the instructor writes per assignment (``solutions/<a>/grading_spec.py``);
``jail``      the sandbox: namespaces, a minimal read-only root, rlimits, an unprivileged uid;
``feedback``  the per-student HTML page.

A test cell's points count only when the notebook's test passed *and* the independent check
of the same function passed. The book's page "Running the course" is the instructor's guide.
"""
