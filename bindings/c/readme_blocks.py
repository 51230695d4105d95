#!/usr/bin/env python3
"""Writes the C blocks of the repository README as programs, for `make readme-check`: a block with its own
`main` as it is; a fragment (the chat example) inside a main that loads the model it talks about
($PEFTKIT_SMOLLM2_GGUF) into `m` and prints the reply. Nothing in a block is changed.

    python3 readme_blocks.py ../../README.md OUTDIR      -> OUTDIR/readme_1.c, readme_2.c, ...
"""
import re
import sys

readme, out = sys.argv[1], sys.argv[2]
blocks = re.findall(r"```c\n(.*?)```", open(readme, encoding="utf-8").read(), re.S)
assert blocks, "no C block in the README"
for i, b in enumerate(blocks, 1):
    if "int main" in b:
        src = b
    else:
        src = ("#include <peftkit.h>\n#include <stdio.h>\n#include <stdlib.h>\n\n"
               "int main(void) {\n"
               "    const char *path = getenv(\"PEFTKIT_SMOLLM2_GGUF\");\n"
               "    if (!path) { printf(\"PEFTKIT_SMOLLM2_GGUF not set: fragment compiled, not run\\n\"); return 0; }\n"
               "    peftkit_model *m = NULL;\n"
               "    if (peftkit_model_load(path, &m) != PEFTKIT_OK) { fprintf(stderr, \"%s\\n\", peftkit_last_error()); return 1; }\n"
               "    {\n" + b +
               "    printf(\"reply: %.*s\\n\", (int)len, prompt);\n"
               "    if (n_reply < 1) return 1;\n"
               "    }\n"
               "    peftkit_model_free(m);\n"
               "    return 0;\n}\n")
    open(f"{out}/readme_{i}.c", "w", encoding="utf-8").write(src)
print(len(blocks))
