"""Execute the project's notebooks with the evcxr kernel and report each cell.

Usage: run_notebooks.py [NOTEBOOK ...]   (default: notebooks/*.ipynb)
A cell fails on a compile error, and on a panic or an `.expect()` failure because every
notebook's first cell installs a panic hook that exits the kernel process.
"""
import glob
import os
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError


def main(paths):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cache = os.environ.get("COVID_CXR_CACHE", os.path.expanduser("~/.cache/covid-cxr"))
    out_dir = os.path.join(cache, "notebooks-out")
    os.makedirs(out_dir, exist_ok=True)
    paths = paths or sorted(glob.glob(os.path.join(root, "notebooks", "*.ipynb")))
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    failed = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        t0 = time.time()
        client = NotebookClient(
            nb,
            kernel_name="rust",
            timeout=1500,
            startup_timeout=120,
            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
        )
        status = "ok"
        try:
            client.execute()
        except (CellExecutionError, DeadKernelError, RuntimeError) as e:
            status = "FAILED"
            failed += 1
            print(f"--- {os.path.basename(path)}: {str(e)[-3000:]}", file=sys.stderr)
        # an error output in any cell counts as a failure too
        if status == "ok":
            for i, cell in enumerate(nb.cells):
                for o in cell.get("outputs", []):
                    if o.get("output_type") == "error":
                        status = "FAILED"
                        failed += 1
                        print(f"--- {os.path.basename(path)} cell {i}: {o.get('ename')}: {o.get('evalue')}", file=sys.stderr)
                        break
                if status != "ok":
                    break
        dest = os.path.join(out_dir, os.path.basename(path))
        tmp = dest + ".partial"
        nbformat.write(nb, tmp)
        os.replace(tmp, dest)
        print(f"notebook {os.path.basename(path)}: {status} in {time.time() - t0:.0f}s (executed copy: {dest})")
    n = len(paths)
    print(f"notebooks: {n - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
