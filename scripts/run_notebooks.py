"""Execute the project's notebooks with the evcxr kernel and report each cell.

Usage: run_notebooks.py [--update] [--rerun] [--check] [NOTEBOOK ...]   (default: notebooks/*.ipynb,
the main notebook covid_cxr.ipynb first, since the others load the model it saves)

  (no option)  check the committed notebooks (every code cell executed, no error output, under
               5 MB, no machine-specific path), then execute them; fail on any cell error.
  --rerun      as without an option, and then every code cell of the main notebook runs a second
               time, in order, in the same kernel (as an educator re-running cells would); an
               error there fails too.
               The executed copies go to $COVID_CXR_CACHE/notebooks-out; the notebooks in the
               work tree are not rewritten.
  --update     execute them and write them back in place with their outputs (machine-specific
               paths scrubbed, no timing metadata), refusing to write one over 5 MB.
  --update --rerun
               both: executes, re-runs the main notebook's cells, and writes back only when both
               passed (the outputs written are the first run's).
  --check      only the checks of the committed notebooks, no execution.

A cell fails on a compile error, and on a panic or an `.expect()` failure because every
notebook's first cell installs a panic hook that exits the kernel process.
"""
import copy
import glob
import os
import re
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

MAX_BYTES = 5 * 1024 * 1024
MAIN = "covid_cxr.ipynb"


def machine_paths(root, cache):
    """Absolute paths of this machine that must not appear in a committed notebook, longest first."""
    paths = {root, os.path.realpath(root), cache, os.path.realpath(cache), os.path.expanduser("~")}
    return sorted((p for p in paths if p and p != "/"), key=len, reverse=True)


def scrub_text(text, root, cache):
    for p in machine_paths(root, cache):
        if p in (root, os.path.realpath(root)):
            text = text.replace(p + "/notebooks/", "").replace(p, "<repo>")
        elif p in (cache, os.path.realpath(cache)):
            text = text.replace(p, "<cache>")
        else:
            text = text.replace(p, "~")
    return re.sub(r"/tmp/[A-Za-z0-9_.-]+", "<tmp>", text)


def scrub(nb, root, cache):
    """Removes machine-specific paths from outputs and per-run metadata from cells."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for o in cell.get("outputs", []):
            if "text" in o:
                o["text"] = scrub_text(o["text"], root, cache)
            data = o.get("data", {})
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in data:
                    v = data[mime]
                    data[mime] = scrub_text("".join(v) if isinstance(v, list) else v, root, cache)
            if o.get("output_type") == "error":
                o["traceback"] = [scrub_text(t, root, cache) for t in o.get("traceback", [])]


def committed_problems(path, root, cache):
    """What is wrong with a committed notebook: unexecuted code cells, error outputs, size, paths."""
    problems = []
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        problems.append(f"{size / 1e6:.1f} MB, over the 5 MB limit")
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is None:
            problems.append(f"code cell {i} was not executed (run scripts/run-notebooks.sh --update)")
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                problems.append(f"code cell {i} has an error output: {o.get('ename')}: {o.get('evalue')}")
            if o.get("output_type") == "stream" and o.get("name") == "stderr" and "panicked at" in o.get("text", ""):
                problems.append(f"code cell {i} shows a panic")
    text = open(path, encoding="utf-8").read()
    for p in machine_paths(root, cache):
        if p in text:
            problems.append(f"contains the machine-specific path {p}")
    return problems


def execute(path, root, cache, rerun=False):
    """Executes the notebook; with `rerun`, then runs every code cell again, in order, in the same
    kernel (the outputs kept are the first run's). Returns (the executed notebook, error or None)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="rust",
        timeout=1500,
        startup_timeout=120,
        record_timing=False,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
    )
    phase = "run"
    try:
        with client.setup_kernel():
            for i, cell in enumerate(nb.cells):
                client.execute_cell(cell, i)
            if rerun:
                phase = "re-run in the same kernel"
                t0 = time.time()
                for i, cell in enumerate(nb.cells):
                    again = copy.deepcopy(cell)
                    client.execute_cell(again, i)
                    for o in again.get("outputs", []):
                        if o.get("output_type") == "error":
                            return nb, f"{phase}: cell {i}: {o.get('ename')}: {o.get('evalue')}"
                print(f"  {os.path.basename(path)}: every code cell ran again in the same kernel without error "
                      f"({time.time() - t0:.0f}s)")
    except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError) as e:
        return nb, f"{phase}: " + str(e)[-3000:]
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                return nb, f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
    return nb, None


def main(argv):
    flags = set()
    args = []
    for a in argv:
        if a in ("--update", "--check", "--rerun"):
            flags.add(a[2:])
        elif a.startswith("-"):
            print(f"unknown option {a}", file=sys.stderr)
            return 2
        else:
            args.append(a)
    if "check" in flags and len(flags) > 1:
        print("--check runs nothing: it does not combine with --update or --rerun", file=sys.stderr)
        return 2
    rerun = "rerun" in flags
    mode = "check" if "check" in flags else "update" if "update" in flags else "run"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cache = os.environ.get("COVID_CXR_CACHE", os.path.expanduser("~/.cache/covid-cxr"))
    out_dir = os.path.join(cache, "notebooks-out")
    os.makedirs(out_dir, exist_ok=True)
    paths = args or sorted(glob.glob(os.path.join(root, "notebooks", "*.ipynb")),
                           key=lambda p: (os.path.basename(p) != MAIN, p))
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    failed = 0
    if mode in ("run", "check"):
        for path in paths:
            problems = committed_problems(path, root, cache)
            for p in problems:
                print(f"--- {os.path.basename(path)}: {p}", file=sys.stderr)
            failed += bool(problems)
        if mode == "check" or failed:
            print(f"committed notebooks: {len(paths) - failed} fine, {failed} with problems")
            return 1 if failed else 0
    for path in paths:
        t0 = time.time()
        nb, err = execute(path, root, cache, rerun=(rerun and os.path.basename(path) == MAIN))
        status = "ok"
        if err:
            status = "FAILED"
            failed += 1
            print(f"--- {os.path.basename(path)}: {err}", file=sys.stderr)
        scrub(nb, root, cache)
        dest = path if (mode == "update" and not err) else os.path.join(out_dir, os.path.basename(path))
        tmp = dest + ".partial"
        nbformat.write(nb, tmp)
        if mode == "update" and os.path.getsize(tmp) > MAX_BYTES:
            status = f"FAILED ({os.path.getsize(tmp) / 1e6:.1f} MB, over 5 MB: not written)"
            failed += 1
            os.remove(tmp)
        else:
            os.replace(tmp, dest)
        where = "written back" if dest == path else f"executed copy: {dest}"
        print(f"notebook {os.path.basename(path)}: {status} in {time.time() - t0:.0f}s ({where})")
    n = len(paths)
    print(f"notebooks: {n - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
