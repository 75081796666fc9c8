"""course_lib: the tested reference code behind the course on pretrained language models.

Each chapter's code lives in the module named after its concept (``embeddings``,
``word2vec``, ``optim``, ``models.bert``, ...); Triton kernels live in
``course_lib.kernels``, one file per operation; ``data`` holds the offline corpora
and ``grading`` the checks that exercise tests call.
"""

__version__ = "0.1.0"
