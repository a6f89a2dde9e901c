"""The end of a process of a multi-process launch (torchrun, accelerate, deepspeed)."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_launched_process(code: int = 0) -> NoReturn:
    """Exit a process of a launch once its work is done: the ranks meet, the process group is destroyed, atexit
    handlers run and non-daemon threads are joined as at a normal exit, then the process ends without finalising
    the interpreter.

    Why not a normal exit: a gloo worker thread may release a finished collective's tensors after the caller saw it
    complete (ZeRO-3's gathers; a barrier's work holds the works queued before it), and that release takes the GIL.
    A thread taking the GIL while the interpreter finalises is ended inside that C++ destructor, and the process
    aborts ("terminate called without an active exception", SIGABRT) after a run that succeeded. No barrier or
    wait closes that window; not finalising does.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
