"""The Python side of bench/run.sh: each stage of the original notebook, as the notebook runs it,
with its libraries (torch, torchvision, Augmentor, split-folders, lime, scikit-learn).

Usage: python py_side.py STAGE ARGS...   (prints one JSON line: stage, items, seconds, ...)

  augment SRC_CLASS_DIR N            Augmentor: rotate 0.7/10/10, random_distortion 1/4/4/8, flip 1, sample(N)
  split SRC OUT                      splitfolders.ratio(SRC, OUT, seed=1337, ratio=(.8, .2))
  load DIR                           ImageFolder + the training transform + DataLoader(8, shuffle), one pass
  backbone eager|channels_last|bf16 BATCHES WEIGHTS   the backbone on random 8 x 3 x 299 x 299 batches
  epoch SPLIT_DIR WEIGHTS            one epoch of the notebook's uncached train_model loop (train + val)
  lime IMAGE WEIGHTS N               lime 0.2.0.1 explain_instance(top_labels=3, hide_color=0, num_samples=N)
  gradcam IMAGE WEIGHTS              Grad-CAM on Mixed_7c for the 3 classes (hooks)
  evaluate DIR WEIGHTS               predictions of a folder, classification_report, confusion matrix, ROC AUC

WEIGHTS is the crate's converted backbone (torchvision names, .safetensors) for the torchvision model, or
the TorchScript fid_default_1.pt for `backbone` (the very file the crate converts).
"""
import json
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

SIZE = 299
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def emit(stage, items, seconds, **kw):
    print("\n" + json.dumps({"stage": stage, "items": items, "seconds": seconds,
                      "items_per_s": items / seconds if seconds > 0 else None,
                      "threads": torch.get_num_threads(), "torch": torch.__version__, **kw}), flush=True)


def notebook_model(weights):
    """models.inception_v3 with the notebook's new fc (3 classes), backbone frozen, the crate's backbone weights."""
    from torchvision import models
    from safetensors.torch import load_file
    torch.manual_seed(0)
    m = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    state = load_file(weights)
    missing, unexpected = m.load_state_dict(state, strict=False)
    bad = [k for k in missing if not (k.startswith("fc.") or k.startswith("AuxLogits."))]
    if bad:
        raise SystemExit(f"{weights}: backbone tensors missing: {bad[:5]}")
    for p in m.parameters():
        p.requires_grad = False
    m.fc = nn.Sequential(nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(64, 3))
    m.AuxLogits.fc = nn.Linear(768, 3)
    return m


def transforms(train):
    from torchvision import transforms as T
    if train:
        return T.Compose([T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    return T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize(MEAN, STD)])


def stage_augment(src, n):
    import Augmentor
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
        p.sample(int(n), multi_threaded=True)
        dt = time.time() - t
        written = len(os.listdir(os.path.join(d, "output")))
    emit("augment", written, dt, tool="Augmentor " + Augmentor.__version__)


def stage_split(src, out):
    import splitfolders
    t = time.time()
    splitfolders.ratio(src, output=out, seed=1337, ratio=(0.8, 0.2))
    dt = time.time() - t
    n = sum(len(fs) for _, _, fs in os.walk(out))
    emit("split", n, dt)


def stage_load(d):
    from torchvision import datasets
    ds = datasets.ImageFolder(d, transforms(True))
    dl = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    t = time.time()
    n = 0
    for x, _ in dl:
        n += x.shape[0]
    emit("load", n, time.time() - t)


def stage_backbone(mode, batches, weights):
    net = torch.jit.load(weights, map_location="cpu").eval()
    x = torch.rand(8, 3, SIZE, SIZE) * 2 - 1
    if mode == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode():
            if mode == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    net(x)
            else:
                net(x)

    run()
    t = time.time()
    for _ in range(int(batches)):
        run()
    emit("backbone", 8 * int(batches), time.time() - t, mode=mode)


def stage_epoch(split, weights):
    """The notebook's train_model for one epoch: train (aux loss x 0.4) then val, metrics each phase."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    from torchvision import datasets
    torch.manual_seed(0)
    model = notebook_model(weights)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-3 / 15)
    crit = nn.CrossEntropyLoss()
    loaders = {ph: torch.utils.data.DataLoader(datasets.ImageFolder(os.path.join(split, ph), transforms(ph == "train")),
                                               batch_size=8, shuffle=True) for ph in ("train", "val")}
    t = time.time()
    n = 0
    for ph in ("train", "val"):
        model.train(ph == "train")
        ys, ps = [], []
        for x, y in loaders[ph]:
            opt.zero_grad()
            with torch.set_grad_enabled(ph == "train"):
                if ph == "train":
                    out, aux = model(x)
                    loss = crit(out, y) + 0.4 * crit(aux, y)
                    loss.backward()
                    opt.step()
                else:
                    out = model(x)
            ys += y.tolist()
            ps += out.argmax(1).tolist()
            n += x.shape[0]
        accuracy_score(ys, ps)
        precision_recall_fscore_support(ys, ps, average="macro", zero_division=0)
    emit("epoch", n, time.time() - t)


def _eval_model(weights):
    model = notebook_model(weights).eval()
    return model, transforms(False)


def stage_lime(image, weights, n):
    from lime import lime_image
    from PIL import Image
    model, _ = _eval_model(weights)
    img = np.array(Image.open(image).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))

    def batch_predict(images):
        x = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255.0 for i in images])
        x = (x - 0.5) / 0.5
        with torch.no_grad():
            return torch.softmax(model(x), dim=1).numpy()

    t = time.time()
    lime_image.LimeImageExplainer().explain_instance(img, batch_predict, top_labels=3, hide_color=0,
                                                    num_samples=int(n), random_seed=0)
    emit("lime", int(n), time.time() - t)


def stage_gradcam(image, weights):
    from PIL import Image
    model, tf = _eval_model(weights)
    t = time.time()
    x = tf(Image.open(image).convert("RGB")).unsqueeze(0)
    acts = {}
    h = model.Mixed_7c.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    for p in model.Mixed_7c.parameters():
        p.requires_grad = True  # the hook's output must carry a gradient
    logits = model(x)
    maps = []
    for c in range(3):
        a = acts["a"]
        g, = torch.autograd.grad(logits[0, c], a, retain_graph=True)
        cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
        cam = torch.nn.functional.interpolate(cam[None], size=(SIZE, SIZE), mode="bilinear")[0, 0]
        maps.append((cam / (cam.max() + 1e-12)).detach())
    h.remove()
    emit("gradcam", 3, time.time() - t)


def stage_evaluate(d, weights):
    from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score
    from torchvision import datasets
    model, tf = _eval_model(weights)
    t = time.time()
    ds = datasets.ImageFolder(d, tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=8)
    ys, probs = [], []
    with torch.no_grad():
        for x, y in dl:
            probs.append(torch.softmax(model(x), 1))
            ys += y.tolist()
    p = torch.cat(probs).numpy()
    classification_report(ys, p.argmax(1), zero_division=0)
    confusion_matrix(ys, p.argmax(1))
    try:
        roc_auc_score(ys, p, multi_class="ovr")
    except ValueError:
        pass
    emit("evaluate", len(ys), time.time() - t)


STAGES = {"augment": stage_augment, "split": stage_split, "load": stage_load, "backbone": stage_backbone,
          "epoch": stage_epoch, "lime": stage_lime, "gradcam": stage_gradcam, "evaluate": stage_evaluate}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        sys.exit(__doc__)
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    STAGES[sys.argv[1]](*sys.argv[2:])
