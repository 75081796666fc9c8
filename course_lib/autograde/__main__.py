"""``python -m course_lib.autograde ASSIGNMENT``: grade a class (see ``course_lib.autograde``)."""

import sys

from .cli import main

sys.exit(main())
