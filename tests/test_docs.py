"""The documentation: generated pages agree with the committed result files and the preset registry; the README
keeps its front door; every script's --help is grouped and shows every default."""
import contextlib
import importlib.util
import io
import os
import re
import shutil

import pytest

from conftest import REPO, run_script


def load_make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", os.path.join(REPO, "scripts", "make_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_pages_are_what_make_docs_makes():
    proc = run_script("scripts/make_docs.py", ["--check"])
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_check_names_a_page_edited_by_hand_and_a_rewrite_restores_it(tmp_path, monkeypatch):
    make_docs = load_make_docs()
    docs = tmp_path / "docs"
    shutil.copytree(os.path.join(REPO, "docs"), docs, ignore=shutil.ignore_patterns("*.png", "*.csv"))
    monkeypatch.setattr(make_docs, "DOCS", str(docs))
    monkeypatch.setattr(make_docs, "RESULTS", str(docs / "results"))
    page = docs / "results" / "digits_random" / "results.md"
    original = page.read_text()
    page.write_text(original.replace("| 10 |", "| 9 |", 1))
    (docs / "presets.md").unlink()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert make_docs.main(["--check"]) == 1
    assert "docs/results/digits_random/results.md" in err.getvalue() and "docs/presets.md" in err.getvalue()
    with contextlib.redirect_stdout(io.StringIO()):
        assert make_docs.main([]) == 0
        assert make_docs.main(["--check"]) == 0
    assert page.read_text() == original


def test_every_results_folder_is_in_the_index_and_no_result_table_is_typed():
    with open(os.path.join(REPO, "docs", "results", "index.md"), encoding="utf-8") as f:
        index = f.read()
    results = os.path.join(REPO, "docs", "results")
    for name in os.listdir(results):
        if os.path.isdir(os.path.join(results, name)):
            assert f"]({name}/" in index, name
    handwritten = [os.path.join(REPO, "README.md")] + [
        os.path.join(REPO, "docs", p) for p in os.listdir(os.path.join(REPO, "docs")) if p.endswith(".md")]
    for path in handwritten:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert "| Avg. Gap |" not in text and "| U-LiRA" not in text, path


def test_readme_opens_with_the_two_commands_and_keeps_its_sections():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("# Machine unlearning by gradient masking\n\n```bash\npip install -r requirements.txt && "
                           "python benchmark.py\npython -m pytest -q\n```\n")
    for heading in ("What it found", "One method on your own model and data", "Coming from the reference code"):
        assert f"\n## {heading}\n" in text
    assert "docs/results/README.md" in text.split("## What it found", 1)[1].split("\n## ", 1)[0]
    assert text.count("\n") <= 250


def help_text(script):
    module = importlib.import_module(script.replace("main_", "commands."))  # the program behind the script
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.parse(["--help"])
    return out.getvalue()


@pytest.mark.parametrize("script", ["main_baseline", "main_imp", "main_forget", "main_backdoor"])
def test_help_is_grouped_and_shows_every_default(script):
    text = help_text(script)
    assert "forget set:" in text and "model and files:" in text and "training:" in text
    flags = re.findall(r"^  (-{1,2}\w[\w-]*)", text, re.M)
    assert len(flags) > 10 and flags[0] == "-h"
    assert text.count("default:") == len(flags) - 1  # every flag but --help
