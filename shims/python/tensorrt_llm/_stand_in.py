"""Replaces the current process with a stand-in binary, keeping its arguments."""

import os
import sys


def exec_stand_in(name):
    directory = os.environ.get("SHIM_BIN_DIR")
    program = os.path.join(directory, name) if directory else name
    try:
        os.execvp(program, [name, *sys.argv[1:]])
    except OSError as error:
        sys.stderr.write(f"tensorrt_llm stand-in: cannot run `{program}`: {error}\n")
        sys.exit(127)
