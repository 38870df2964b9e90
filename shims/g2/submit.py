#!/usr/bin/env python3
"""Drop-in for TensorRT-LLM's jenkins/scripts/perf/submit.py (G2, the unified generator, @39778d35).

Runs `launch-gen --compat g2` with every argument as it is, so a pipeline that runs
`python3 <dir>/submit.py ARGS` switches generator by path. launch-gen: the one beside this
script, else the one in the folder above it (the layout of target/dist), else on PATH.
"""
import os
import sys

GENERATION = "g2"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    program = "launch-gen"
    for folder in (here, os.path.dirname(here)):
        candidate = os.path.join(folder, "launch-gen")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            program = candidate
            break
    try:
        os.execvp(program, [program, "--compat", GENERATION] + sys.argv[1:])
    except OSError as error:
        sys.stderr.write("error: cannot run %s: %s\n" % (program, error.strerror))
        sys.exit(127)


if __name__ == "__main__":
    main()
