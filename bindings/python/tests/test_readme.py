"""The Python example of the repository README runs as written."""

import contextlib
import io
import os
import re

from conftest import REPO


def test_readme_python_example(tmp_path):
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    cwd = os.getcwd()
    out = io.StringIO()
    try:
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(out):
            exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    printed = out.getvalue()
    assert "after 20 steps" in printed and printed.count("token ") == 8
    assert (tmp_path / "task-adapter" / "adapter.safetensors").is_file()
