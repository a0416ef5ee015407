"""RSS, PSS and USS of every process of a worker command, a few seconds after its start.

    python bench/tools/process_memory.py [SECONDS] -- python manage.py qcluster

Run it in a project directory (a bench work folder: ``bench/results/tmp/<run>/work/<system>``).
PSS splits the pages that forked processes share between them, USS is what each has alone:
the breakdown behind the zygote (one copy of Django for the sentinel, the zygote and the
workers, instead of the sentinel's plus the forkserver's).
"""

import subprocess
import sys
import time

import psutil

args = sys.argv[1:]
wait = float(args.pop(0)) if args and args[0] != "--" else 4.0
command = args[1:] if args and args[0] == "--" else args
with open("process-memory.log", "w") as log:
    process = subprocess.Popen(command, stderr=log, stdout=log)
    try:
        time.sleep(wait)
        root = psutil.Process(process.pid)
        total = 0
        for each in [root, *root.children(recursive=True)]:
            memory = each.memory_full_info()
            total += memory.pss
            print(f"{each.pid:>7} {' '.join(each.cmdline())[:60]:60} rss {memory.rss / 2**20:6.1f} "
                  f"pss {memory.pss / 2**20:6.1f} uss {memory.uss / 2**20:6.1f} MB")
        print(f"total PSS {total / 2**20:.1f} MB")
    finally:
        process.terminate()
        process.wait(60)
