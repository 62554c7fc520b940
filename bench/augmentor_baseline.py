"""Augmentor's throughput on the same images and machine, for the README's side-by-side figure.

Usage: python augmentor_baseline.py CLASS_DIR N [--threads]
Copies CLASS_DIR's images to a scratch folder, runs the notebook's pipeline
(rotate 0.7/10/10, random_distortion 1/4/4/8, flip_left_right 1), sample(N), prints images/s as JSON.
Needs `pip install Augmentor` (the benchmark script installs it in a cached venv).
"""
import json
import os
import random
import shutil
import sys
import tempfile
import time

import Augmentor


def main():
    src, n = sys.argv[1], int(sys.argv[2])
    multi = "--threads" in sys.argv
    random.seed(1)
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "covid")
        os.makedirs(d)
        for f in sorted(os.listdir(src)):
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                shutil.copy(os.path.join(src, f), d)
        p = Augmentor.Pipeline(d)
        p.rotate(probability=0.7, max_left_rotation=10, max_right_rotation=10)
        p.random_distortion(probability=1, grid_width=4, grid_height=4, magnitude=8)
        p.flip_left_right(probability=1)
        t = time.time()
        p.sample(n, multi_threaded=multi)
        dt = time.time() - t
        written = len(os.listdir(os.path.join(d, "output")))
    print(json.dumps({"tool": "Augmentor " + Augmentor.__version__, "multi_threaded": multi, "images": written,
                      "seconds": dt, "images_per_s": written / dt}))


if __name__ == "__main__":
    main()
