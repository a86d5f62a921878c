# Entry point. On a board, boot runs /main.py, which calls run(["/bundle"]); on the unix port:
#   MICROPYPATH=.frozen:<repo> micropython -m firmware.main BUNDLE_DIR [--replay FILE.csv]
#       [--trace FILE] [--duration SECONDS] [--time-scale N] [--stats-every SECONDS]
# This module stays in RAM while the node runs, so it holds only this: start-up is two modules
# (firmware/start.py, then firmware/assemble.py) that drop themselves when done.
import gc
import sys


def run(argv=None):
    from firmware import start

    prepared = start.prepare(sys.argv[1:] if argv is None else argv)
    del start
    gc.collect()
    from firmware import assemble

    node, stats_every = assemble.start(prepared)
    del prepared, assemble
    gc.collect()
    node.run(stats_every)


if __name__ == "__main__":
    run()
