"""Runs ``python -m monai.bundle ...`` command lines in forked children of one warmed-up interpreter.

Used by the bad-input tests: each case then costs its own work, not another few seconds of importing torch and
MONAI. A child is what ``python -m monai.bundle <args>`` would be: ``sys.argv`` set, ``monai.bundle.__main__`` run
with ``runpy``, stdout and stderr on its own files, an uncaught error handed to ``sys.excepthook`` as the interpreter
does (the bundle configs install theirs by importing ``brainvq_monai.bundle.errors``, which this server does not
import itself), and the exit status reported back.

Protocol: one JSON request per line on stdin, ``{"args": [...], "env": {...}, "stdout": path, "stderr": path}``;
one JSON reply per line on stdout, ``{"rc": exit status, negative for a signal}``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

import ignite  # noqa: F401 - warm-up imports of every bundle run
import monai.bundle  # noqa: F401
import torch

import brainvq_monai.engines  # noqa: F401
import brainvq_monai.handlers  # noqa: F401
import brainvq_monai.transforms  # noqa: F401


def _child(request: dict) -> None:
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.update(request.get("env", {}))
    sys.argv = [monai.bundle.__file__, *request["args"]]
    code = 0
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught error
        sys.excepthook(*sys.exc_info())
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    torch.set_num_threads(1)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
