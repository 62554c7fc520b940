"""Reference outputs of scikit-image's quickshift and lime's local model (lime + scikit-learn) on small,
deterministic inputs, written as JSON fixtures for the Rust tests (tests/parity.rs).

    bash bench/parity/run.sh          # makes the venv (pinned versions) and runs this script

Inputs (written by this script when absent, then committed): three 64 x 64 RGB PNGs drawn from a
formula (no random library), and a LIME problem (0/1 sample matrix with the all-ones row first, class
probabilities, cosine distances) drawn with NumPy's RandomState(7). Outputs: tests/fixtures/parity/
quickshift.json (label maps) and lime.json (the inputs and lime_base's results for several feature
selections and feature counts).
"""
import json
import math
import os
import sys

import numpy as np
import PIL
from PIL import Image
import skimage
import sklearn
from skimage.segmentation import quickshift
from sklearn.metrics import pairwise_distances
import lime
from lime.lime_base import LimeBase

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "parity")


def versions():
    import importlib.metadata as md
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "scikit-learn": sklearn.__version__,
        "lime": md.version("lime"),
        "pillow": PIL.__version__,
    }


def film(k, size=64):
    """A textured test picture: smooth blobs and bands plus integer-hash grain, so that quickshift's
    densities have no ties (its 1e-5 tie-breaking noise is NumPy's in Python, ChaCha's in Rust)."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    for y in range(size):
        for x in range(size):
            h = (x * 73856093 ^ y * 19349663 ^ (k + 1) * 83492791) & 0xFFFFFFFF
            grain = (h % 17) - 8
            blob = 90 * math.exp(-((x - 14 - 6 * k) ** 2 + (y - 18) ** 2) / (60.0 + 20 * k))
            blob2 = 70 * math.exp(-((x - 34) ** 2 + (y - 30 + 4 * k) ** 2) / 80.0)
            band = 40 if (x + 2 * y + 7 * k) % 24 < 8 else 0
            base = 60 + blob + blob2 + band + grain
            img[y, x] = [
                max(0, min(255, int(base + 25 * math.sin(x / (5.0 + k))))),
                max(0, min(255, int(base))),
                max(0, min(255, int(base - 20 + 15 * math.cos(y / 4.0)))),
            ]
    return img


def quickshift_fixture():
    cases = []
    for k in range(3):
        name = f"film{k}.png"
        path = os.path.join(OUT, name)
        if not os.path.exists(path):
            Image.fromarray(film(k)).save(path)
        img = np.asarray(Image.open(path).convert("RGB"))
        for params in [dict(kernel_size=4, max_dist=200, ratio=0.2), dict(kernel_size=2, max_dist=10, ratio=0.5),
                       dict(kernel_size=3, max_dist=6, ratio=1.0)]:
            # lime's call: quickshift(image, kernel_size, max_dist, ratio, random_seed) on the RGB image; the
            # seed of the tie-breaking noise is named `rng` since scikit-image 0.2x (lime 0.2.0.1 still
            # passes `random_seed`, which scikit-image 0.26 rejects)
            labels = quickshift(img, rng=0, **params)
            cases.append({"image": name, **params, "n_segments": int(len(np.unique(labels))),
                          "labels": labels.astype(int).tolist()})
    return {"versions": versions(), "cases": cases}


def kernel(d, kernel_width):
    # lime_image.LimeImageExplainer's kernel
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


def lime_fixture():
    rs = np.random.RandomState(7)
    n, p, classes = 150, 12, 3
    data = rs.randint(0, 2, n * p).reshape((n, p))
    data[0, :] = 1  # lime_image: the first sample is the original image
    beta = rs.normal(size=(p, classes))
    logits = data @ beta * 0.4 + rs.normal(scale=0.3, size=(n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    distances = pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    base = LimeBase(lambda d: kernel(d, 0.25), verbose=False, random_state=None)
    cases = []
    for label in range(classes):
        for method, k in [("auto", 3), ("forward_selection", 5), ("highest_weights", 4), ("auto", 10), ("none", 100000), ("auto", 100000)]:
            intercept, exp, score, local_pred = base.explain_instance_with_data(
                data, probs, distances, label, k, feature_selection=method)
            cases.append({"label": label, "feature_selection": method, "num_features": k,
                          "intercept": float(intercept), "weights": [[int(f), float(w)] for f, w in exp],
                          "score": float(score), "local_pred": float(np.asarray(local_pred).ravel()[0])})
    return {"versions": versions(), "kernel_width": 0.25, "data": data.astype(int).tolist(),
            "predictions": probs.tolist(), "distances": distances.tolist(),
            "weights": kernel(distances, 0.25).tolist(), "cases": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fixture in [("quickshift.json", quickshift_fixture()), ("lime.json", lime_fixture())]:
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
            f.write("\n")
        print("wrote", os.path.join(OUT, name))


if __name__ == "__main__":
    main()
