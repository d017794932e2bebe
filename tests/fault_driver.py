"""Runs `dltrain` with one fault injected, for tests/test_faults.py (not a test module itself).

The fault comes from the environment, DLTRAIN_FAULT=KIND:ARGS:
  kill-write:N          SIGKILL ourselves at the Nth write of a run or checkpoint file
  signal-write:SIG:N    send ourselves SIG (a number) at the Nth write
  signal-phase:SIG:P    send ourselves SIG when phase P starts: data, epoch2, evaluate
  kill-exchange:WHEN    SIGKILL just before or after the run folder's exchange (before, after)
  kill-store:N          SIGKILL ourselves at the Nth write into the on-disk store (parsing the CSV)
DLTRAIN_FAULT_BLOCK_ROWS=N makes predict write N rows at a time (several writes on a small file).
"""

import os
import signal
import sys

from dltrain import build, files, fit_session, system, train
from dltrain.cli import main
from dltrain.data import store

kind, *args = os.environ["DLTRAIN_FAULT"].split(":")
writes = [0]
write_all = files.write_all


def counted_write(handle, payload):
    writes[0] += 1
    if kind == "kill-write" and writes[0] == int(args[0]):
        handle.write(payload[: len(payload) // 2])  # half a file, then the process is gone
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "signal-write" and writes[0] == int(args[1]):
        os.kill(os.getpid(), int(args[0]))
    write_all(handle, payload)


files.write_all = counted_write

if kind == "kill-store":
    store_writes = [0]
    store_write = store.write_all

    def killing_store_write(handle, payload):
        store_writes[0] += 1
        if store_writes[0] == int(args[0]):
            handle.write(payload[: len(payload) // 2])
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        store_write(handle, payload)

    store.write_all = killing_store_write

if kind == "kill-exchange":
    exchange = system.exchange

    def killed_exchange(first, second):
        if args[0] == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        done = exchange(first, second)
        os.kill(os.getpid(), signal.SIGKILL)
        return done

    system.exchange = killed_exchange

if kind == "signal-phase":
    number, phase = int(args[0]), args[1]

    def at_phase(function, name):
        def wrapped(*positional, **keywords):
            if name == phase:
                os.kill(os.getpid(), number)
            return function(*positional, **keywords)

        return wrapped

    build.prepare_data = at_phase(build.prepare_data, "data")
    fit_session._split_metrics = at_phase(fit_session._split_metrics, "evaluate")
    train_epoch = train.Trainer.train_epoch

    def epoch_hook(self, epoch, lr, max_batches=None):
        if phase == f"epoch{epoch}":
            os.kill(os.getpid(), number)
        return train_epoch(self, epoch, lr, max_batches)

    train.Trainer.train_epoch = epoch_hook

if os.environ.get("DLTRAIN_FAULT_BLOCK_ROWS"):
    from dltrain.commands import predict

    predict.BLOCK_ROWS = int(os.environ["DLTRAIN_FAULT_BLOCK_ROWS"])

sys.argv = ["dltrain", *sys.argv[1:]]
main()
