"""Published and launchable: the GitHub workflow, the book's launch and download buttons, and the
first cell of every released exercise (installs course_lib where it is missing, e.g. in Colab;
does nothing in the course environment or the grader's sandbox).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zlib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from course_lib import nbgrader_tools

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_workflow_tests_on_push_and_pull_request(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    test = workflow["jobs"]["test"]
    assert any(s.get("run", "").strip() == "bash .ci/run" for s in _steps(test)), "the test job must run .ci/run"
    assert test["container"]["image"].startswith("python:3.11"), "CI's Python is 3.11 (Makefile, requirements pins)"


def test_workflow_builds_and_deploys_the_book(workflow):
    jobs = workflow["jobs"]
    book = jobs["book"]
    assert any(s.get("run", "").strip() == "make book" for s in _steps(book))
    upload = [s for s in _steps(book) if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    deploy = jobs["deploy"]
    assert set(deploy["needs"]) == {"test", "book"}, "publish only what passed the tests"
    assert "refs/heads/main" in deploy["if"] and "push" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in _steps(deploy))
    for job in jobs.values():  # every action pinned to a release
        for step in _steps(job):
            if "uses" in step:
                assert "@v" in step["uses"], f"unpinned action {step['uses']}"


def test_book_has_launch_and_download_buttons():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url, branch = nbgrader_tools.repository()
    assert (url, branch) == (config["repository"]["url"].rstrip("/"), config["repository"]["branch"])
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert config["launch_buttons"]["binderhub_url"].startswith("https://")
    assert config["html"]["use_download_button"] is True
    assert (ROOT / "binder" / "requirements.txt").read_text().count("-r ../requirements.txt") == 1
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "repo2docker runs binder/postBuild only if it is executable"
    # Binder has the checkout but not what `make` fetches: GPT-2's vocabulary for Chapter 5.
    from course_lib import tokenization

    fetched = tokenization._gpt2_vocab_dirs()[0].relative_to(ROOT)
    assert f"t.fetch_gpt2_vocab('{fetched}')" in post_build.read_text(encoding="utf-8")
    sphinx = config["sphinx"]["config"]
    for name in sphinx["html_css_files"]:
        assert any((ROOT / d / name).is_file() for d in sphinx["html_static_path"]), name
    assert "book/_fonts" in sphinx["html_extra_path"]


def _released() -> list[Path]:
    paths = sorted((ROOT / nbgrader_tools.RELEASE_DIR).glob("*/*.ipynb"))
    assert paths
    return paths


@pytest.mark.parametrize("path", _released(), ids=lambda p: p.parent.name)
def test_every_release_starts_with_the_setup_cell(path):
    first = json.loads(path.read_text(encoding="utf-8"))["cells"][0]
    assert first["cell_type"] == "code" and first["id"] == nbgrader_tools.COLAB_SETUP_ID
    assert "".join(first["source"]) == nbgrader_tools.colab_setup_source(*nbgrader_tools.repository()), (
        f"{path.relative_to(ROOT)}: its first cell is not the current setup cell (was _config.yml's "
        "repository changed?); run `make exercises`")
    meta = first["metadata"]["nbgrader"]
    assert meta["locked"] and not meta["grade"] and not meta["solution"] and meta["checksum"]


def _run_cell(*python_flags: str, source: str | None = None, prelude: str = "") -> subprocess.CompletedProcess:
    """Run the setup cell with subprocess.run replaced by a recorder: what would it install?"""
    source = source or nbgrader_tools.colab_setup_source(*nbgrader_tools.repository())
    harness = prelude + textwrap.dedent(f"""\
        import json, subprocess
        calls = []
        subprocess.run = lambda *a, **k: calls.append([a, k])
        exec({source!r})
        print(json.dumps(calls))
        """)
    return subprocess.run([sys.executable, *python_flags, "-c", harness], capture_output=True, text=True,
                          timeout=120, cwd="/")


def test_setup_cell_does_nothing_where_course_lib_imports():
    proc = _run_cell()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], "the setup cell ran pip although course_lib is importable"


def test_setup_cell_installs_course_lib_from_the_repository_where_it_is_missing():
    proc = _run_cell("-I", "-S")  # no site-packages: course_lib cannot be found, as in Colab
    assert proc.returncode == 0, proc.stderr
    (args, kwargs), = json.loads(proc.stdout)
    command = args[0]
    assert command[1:5] == ["-m", "pip", "install", "--quiet"] and kwargs == {"check": True}
    requirement = Requirement(command[5])
    url, branch = nbgrader_tools.repository()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert requirement.name == project["project"]["name"] == "course_lib"
    assert requirement.url == f"git+{url}@{branch}"


def test_source_notebooks_leave_the_setup_cell_id_free():
    for path in sorted((ROOT / nbgrader_tools.SOURCE_DIR).glob("*/*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            assert nbgrader_tools.COLAB_SETUP_ID not in (gid, cell.get("id")), path


def test_installed_from_the_repository_course_lib_has_its_data_files():
    """`pip install git+...` builds a wheel: every non-Python file course_lib needs must be package data."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = project["tool"]["setuptools"]["package-data"]["course_lib"]
    package = ROOT / "course_lib"
    files = [p.relative_to(package).as_posix() for p in package.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc", ".so") and "__pycache__" not in p.parts]
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) or fnmatch.fnmatch(f, g.removeprefix("**/"))
                                           for g in globs)]
    assert not missing, f"course_lib files a wheel would leave out (add them to package-data): {missing}"


# ---- Chinese terms: the bundled font subset has every character the book uses -----------------

CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\ufe10-\ufe1f\ufe30-\ufe4f\uff00-\uffef]")


def _woff_cmap(data: bytes) -> set[int]:
    """The code points of a WOFF 1 font's cmap (formats 4 and 12): zlib, so the standard library
    reads it (the served .woff2 needs Brotli)."""
    signature, _, _, n_tables = struct.unpack(">4sIIH", data[:14])
    assert signature == b"wOFF", signature
    cmap = None
    for i in range(n_tables):
        tag, offset, comp_len, orig_len, _ = struct.unpack(">4sIIII", data[44 + 20 * i:64 + 20 * i])
        if tag == b"cmap":
            raw = data[offset:offset + comp_len]
            cmap = zlib.decompress(raw) if comp_len < orig_len else raw
    assert cmap is not None, "the font has no cmap table"
    points: set[int] = set()
    for i in range(struct.unpack(">H", cmap[2:4])[0]):
        (sub,) = struct.unpack(">I", cmap[8 + 8 * i:12 + 8 * i])
        fmt = struct.unpack(">H", cmap[sub:sub + 2])[0]
        if fmt == 12:
            (n_groups,) = struct.unpack(">I", cmap[sub + 12:sub + 16])
            for g in range(n_groups):
                start, end, _ = struct.unpack(">III", cmap[sub + 16 + 12 * g:sub + 28 + 12 * g])
                points.update(range(start, end + 1))
        elif fmt == 4:
            seg2 = struct.unpack(">H", cmap[sub + 6:sub + 8])[0]
            ends = struct.unpack(f">{seg2 // 2}H", cmap[sub + 14:sub + 14 + seg2])
            starts = struct.unpack(f">{seg2 // 2}H", cmap[sub + 16 + seg2:sub + 16 + 2 * seg2])
            points.update(c for s, e in zip(starts, ends) if s != 0xFFFF for c in range(s, e + 1))
    return points


def _makefile_var(name: str) -> str:
    m = re.search(rf"^{name} := (.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert m, f"Makefile sets no {name}"
    return m.group(1).strip()


def test_the_cjk_font_subset_covers_every_chinese_character_of_the_book():
    """A term added with a character outside the subset would be drawn as a box (or in whatever
    font the reader's machine has). The served files are WOFF2; the same subset's WOFF, in the
    npm package that `make fonts` checked, says which characters it has."""
    version = _makefile_var("CJK_FONT_VERSION")
    package = ROOT / ".cache" / "cjk-font" / f"fontsource-noto-sans-sc-{version}.tgz"
    assert package.is_file(), f"{package.relative_to(ROOT)} is missing: run `rm -rf book/_fonts && make fonts`"
    served = _makefile_var("CJK_FONT_FILES").split()
    with tarfile.open(package) as tar:
        fonts = {name: _woff_cmap(tar.extractfile(f"package/files/{name.removesuffix('2')}").read())
                 for name in served}
    used: dict[str, set[str]] = {}
    sources = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "book").glob("*.ipynb")) + [ROOT / "_toc.yml"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        for ch in CJK.findall(text):
            used.setdefault(ch, set()).add(path.name)
    assert len(used) > 100, f"expected the book's Chinese terms, found {len(used)} characters"
    for name, points in fonts.items():
        missing = {ch: sorted(files) for ch, files in sorted(used.items()) if ord(ch) not in points}
        assert not missing, f"{name} has no glyph for {''.join(missing)} (used in {missing})"


# ---- the book's pages: launchable in Colab, and polished for reading --------------------------


def _chapters() -> list[Path]:
    pages = sorted((ROOT / "book").glob("ch*.ipynb"))
    assert pages
    return pages


def _code(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.stem)
def test_chapter_page_opens_in_colab(path):
    """The Colab launch button opens the page's notebook from the repository, where nothing of
    the course is installed: its first code cell installs it (and is left out of the HTML)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    assert _code(first) == nbgrader_tools.book_setup_source(page=path.stem), (
        f"{path.name}: the first code cell must be the cell that installs course_lib in Colab "
        "(nbgrader_tools.book_setup_source(), tagged remove-cell): run "
        "`.venv/bin/python -m course_lib.nbgrader_tools book-setup` (make exercises does)")
    assert "remove-cell" in first["metadata"].get("tags", []), f"{path.name}: tag the Colab cell remove-cell"


def test_book_setup_cell_installs_course_lib_and_the_missing_extras():
    source = nbgrader_tools.book_setup_source()
    proc = _run_cell(source=source)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], "the book's setup cell ran pip although course_lib is importable"
    proc = _run_cell("-I", "-S", source=source)  # neither course_lib nor gensim: as in Colab
    assert proc.returncode == 0, proc.stderr
    (args, kwargs), = json.loads(proc.stdout)
    requirements = [Requirement(r) for r in args[0][5:]]
    url, branch = nbgrader_tools.repository()
    assert args[0][1:5] == ["-m", "pip", "install", "--quiet"] and kwargs == {"check": True}
    assert requirements[0].name == "course_lib" and requirements[0].url == f"git+{url}@{branch}"
    pins = {r.name: str(r.specifier) for r in requirements[1:]}
    assert pins == {"gensim": "==" + nbgrader_tools.pinned("gensim").split("==")[1]}
    # course_lib there (from this checkout) but no gensim: only gensim is installed.
    proc = _run_cell("-I", "-S", source=source, prelude=f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n")
    assert proc.returncode == 0, proc.stderr
    (args, _), = json.loads(proc.stdout)
    assert args[0][5:] == [nbgrader_tools.pinned("gensim")]


def test_a_page_that_reads_data_files_fetches_them_only_after_installing_course_lib():
    """Chapter 5 reads GPT-2's vocabulary, which `make gpt2-vocab` puts in a checkout: in Colab
    its set-up cell fetches it (course_lib.tokenization.fetch_gpt2_vocab) after pip."""
    assert set(nbgrader_tools.BOOK_PAGE_DATA) <= {p.stem for p in _chapters()}
    source = nbgrader_tools.book_setup_source(page="ch05_roberta_albert")
    assert source.startswith(nbgrader_tools.book_setup_source()) and source != nbgrader_tools.book_setup_source()
    proc = _run_cell(source=source)  # the course environment: nothing at all
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    proc = _run_cell("-I", "-S", source=source)  # Colab: pip, then the fetch, in that order
    assert proc.returncode == 0, proc.stderr
    (install, _), (fetch, kwargs) = json.loads(proc.stdout)
    assert install[0][1:4] == ["-m", "pip", "install"]
    assert fetch[0][1] == "-c" and kwargs == {"check": True}
    assert fetch[0][2] == nbgrader_tools.BOOK_PAGE_DATA["ch05_roberta_albert"]  # test_byte_level_bpe runs it
    # course_lib there but gensim not: pip for gensim only, no fetch (course_lib is not new).
    proc = _run_cell("-I", "-S", source=source, prelude=f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n")
    assert proc.returncode == 0, proc.stderr
    (args, _), = json.loads(proc.stdout)
    assert args[0][5:] == [nbgrader_tools.pinned("gensim")]


def test_a_page_that_reads_repository_files_fetches_them_after_installing_course_lib(tmp_path):
    """Chapter 8 plots committed results (benchmarks/results/*.json): Colab opens the notebook
    without the repository, so its set-up cell fetches them, from the branch it installs."""
    for page, names in nbgrader_tools.BOOK_PAGE_FILES.items():
        text = (ROOT / "book" / f"{page}.ipynb").read_text(encoding="utf-8")
        for name in names:
            assert (ROOT / name).is_file(), f"{page} fetches {name}, which is not in the repository"
            assert Path(name).stem in text, f"{page} fetches {name} but never reads it"
    source = nbgrader_tools.book_setup_source(page="ch08_decoder_only")
    harness = textwrap.dedent(f"""\
        import json, subprocess, urllib.request
        calls = []
        subprocess.run = lambda *a, **k: calls.append([a, k])
        urllib.request.urlretrieve = lambda url, name: calls.append([[url, name], {{}}])
        exec({source!r})
        print(json.dumps(calls))
        """)
    here = subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout) == [], "the set-up cell installed or fetched in the course environment"
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", harness], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # as in Colab: no course_lib, no repository
    assert proc.returncode == 0, proc.stderr
    (install, _), *fetches = json.loads(proc.stdout)
    assert install[0][1:4] == ["-m", "pip", "install"]
    url, branch = nbgrader_tools.repository()
    raw = "https://raw.githubusercontent.com/" + url.removeprefix("https://github.com/") + f"/{branch}"
    names = nbgrader_tools.BOOK_PAGE_FILES["ch08_decoder_only"]
    assert [call[0] for call in fetches] == [[f"{raw}/{name}", name] for name in names]
    assert (tmp_path / "benchmarks" / "results").is_dir()  # the page's ROOT search stops here
    with pytest.raises(ValueError, match="github.com/OWNER/REPO"):
        nbgrader_tools.raw_url("https://gitlab.com/a/b", "main")


def test_book_setup_command_inserts_the_cell_once_and_updates_it(tmp_path):
    page = tmp_path / "ch09_new.ipynb"
    nb = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# Title"]},
                    {"cell_type": "code", "execution_count": None, "id": "b", "metadata": {}, "outputs": [],
                     "source": ["import torch"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    page.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    assert nbgrader_tools.put_book_setup_cell(page, source="old = 1")
    assert nbgrader_tools.put_book_setup_cell(page)  # the source changed: updated in place
    assert not nbgrader_tools.put_book_setup_cell(page)  # nothing to do
    cells = json.loads(page.read_text(encoding="utf-8"))["cells"]
    assert [c["id"] for c in cells] == ["a", "ch09-colab-setup", "b"]
    assert _code(cells[1]) == nbgrader_tools.book_setup_source()
    assert cells[1]["metadata"]["tags"] == ["remove-cell"]


def test_exercise_links_point_at_the_repository():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert "sphinx.ext.extlinks" in config["sphinx"]["extra_extensions"]
    url, branch = nbgrader_tools.repository()
    github = url.removeprefix("https://")
    links = config["sphinx"]["config"]["extlinks"]
    assert links["exercise"] == [f"{url}/blob/{branch}/exercises/%s", "%s"]
    assert links["colab"] == [f"https://colab.research.google.com/github/{github.split('/', 1)[1]}"
                              f"/blob/{branch}/exercises/%s", "%s"]


@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.stem)
def test_chapter_page_reads_well(path):
    """The set-up cell behind a toggle, code that fits the page, and the same ending everywhere:
    Summary, Exercises (linked), References."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    colab = nbgrader_tools.book_setup_source(page=path.stem)
    setup = code[1] if len(code) > 1 and _code(code[0]) == colab else code[0]
    assert "hide-input" in setup["metadata"].get("tags", []), f"{path.name}: tag the set-up cell hide-input"
    long = [(cell.get("id"), len(line)) for cell in code for line in _code(cell).splitlines() if len(line) > 88]
    assert not long, f"{path.name}: code lines over 88 characters (cell id, length): {long}"
    markdown = "\n".join(_code(c) for c in cells if c["cell_type"] == "markdown")
    heads = re.findall(r"^## (.+?)\s*$", markdown, re.M)
    assert heads[-3:] == ["Summary", "Exercises", "References"], (
        f"{path.name}: its last sections are {heads[-3:]}; end with Summary, Exercises, References")
    exercises = markdown[markdown.rindex("\n## Exercises"):markdown.rindex("\n## References")]
    name = path.stem
    assert (ROOT / "exercises" / name / f"{name}.ipynb").is_file(), f"no exercises/{name}/{name}.ipynb"
    for role in ("exercise", "colab"):
        assert re.search(rf"\{{{role}\}}`[^`]*<{name}/{name}\.ipynb>`", exercises), (
            f"{path.name}: its Exercises section must link the exercise with {{{role}}}`... <{name}/{name}.ipynb>`")


def _pages() -> list[Path]:
    return [ROOT / "book" / "intro.md", *_chapters()]


@pytest.mark.parametrize("path", _pages(), ids=lambda p: p.stem)
def test_every_chinese_term_of_a_page_is_in_the_glossary(path):
    """A term is given with its Chinese name at first use, "English (中文)"; the glossary holds
    them all (a name that only drops 模型, "model", counts as the same term)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        text = "\n".join(_code(c) for c in json.loads(text)["cells"] if c["cell_type"] == "markdown")
    glossary = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    terms = set(re.findall(r"[(（]([\u4e00-\u9fff][\u4e00-\u9fff·–-]*)", text))
    missing = sorted(t for t in terms if t not in glossary and t.removesuffix("模型") not in glossary)
    assert not missing, f"{path.name}: Chinese terms not in book/glossary.md: {', '.join(missing)}"
