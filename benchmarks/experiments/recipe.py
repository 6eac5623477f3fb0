"""Training-recipe experiments on validation folds only: train on folds 0-7, validate on folds 8-9 each epoch.

Run: ``python benchmarks/experiments/recipe.py --data DIR --name NAME [--spec SPEC] [--loss asoftmax|softmax]
[--epochs 12] [--sched cosine|none] [--rot 1] [--balance 1] [--lam_frac 0.5] [--bf16 1] [--threads 1]
[--ema 0.99] [--tta 1] [--remap HU:U] [--pool avgmax] [--device cuda]``
on a prepared data set
(``naslung prepare embedded --out DIR --scans 0``). Folds 8-9 are never a test fold of the quick (0-1) or standard
(0-4) profiles, so choosing a recipe on them never looks at a test fold. A fast loop, not the pipeline: cubes are held
in memory and augmented in torch (pad to 36, random 32 crop, flips, quarter turns), with the pipeline's networks and
losses (``naslung.networks``). Beside each run it prints the diameter rule fitted on folds 0-7 and scored on folds 8-9.
Writes ``benchmarks/results/recipe/NAME.json`` (arguments, per-epoch validation accuracy/AUC, mean of the last 5, and
``calcification_weight``: the last epoch's validation logit regressed on log-diameter and "some reader saw
calcification", the second weight over the first; the readers' own logistic regression gives about -0.64, so a value
near 0 means the network ignores the calcium it is shown).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cues import calcification_weight, calcified, ground_glass  # this folder's script, on sys.path
from sklearn.metrics import roc_auc_score
from variants import WithDescriptors, WithMaxPool, WithRadius, WithShells  # this folder's script

from naslung.networks import build_loss, build_network
from naslung.networks.blocks import use_narrow_channel_kernels
from naslung.networks.blocks.residual import ResidualBlock
from naslung.networks.heads import AngularLinear
from naslung.pipeline.cpu_allocator import retain_freed_memory
from naslung.pipeline.data.cohort_table import CHARACTERISTICS, read_cohort_csv
from naslung.pipeline.ensemble.reference_models import CEILING_RATINGS, fit_ratings_ceiling, mean_ratings

retain_freed_memory()

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--spec", default="[4,4,[4,4],[4,8],[8,8]]")
p.add_argument("--loss", default="asoftmax")
p.add_argument("--epochs", type=int, default=20)
p.add_argument("--bs", type=int, default=16)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--sched", default="none")  # none|cosine|onecycle
p.add_argument("--opt", default="adam")
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--rot", type=int, default=0)
p.add_argument("--balance", type=int, default=0)  # 1: class-balanced draws with replacement (the pipeline's sampler);
# 2: class-balanced without replacement: half of each epoch from each class, each class dealt from its own shuffled deck
p.add_argument("--lam_frac", type=float, default=0.0)  # 0: default schedule; else reach floor at this fraction of iters
p.add_argument("--lam_min", type=float, default=5.0)  # A-Softmax lambda floor (SphereFace: 5); lower: more margin
p.add_argument("--bf16", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--val_folds", default="8,9")
p.add_argument("--ema", type=float, default=0.0)  # >0: also score an exponential moving average of the weights
p.add_argument("--tta", type=int, default=0)  # 1: also score the mean probability over the 8 flips
p.add_argument("--swa_from", type=int, default=0)  # >0: also score the equal average of the weights at the end of
# epochs swa_from..current, batch-norm statistics recomputed over the training cubes (torch.optim.swa_utils)
p.add_argument("--sel_fraction", type=float, default=0.0)  # >0: hold this fraction of the training folds out as a
# selection set (as the pipeline's val_fraction) and report the val AUC of the epoch it picks against the last epoch's
p.add_argument("--beta1", type=float, default=0.5)
p.add_argument("--snap_from", type=int, default=0)  # >0: also score the mean probability of epochs snap_from..current
p.add_argument("--aux", type=float, default=0.0)  # >0: also regress log-diameter and the readers' 8 mean ratings
# (standardised on the training split) from the pooled features with a linear head, MSE weighted by this (a training
# target only: the network's input stays the cube)
p.add_argument("--remap", default="")  # "HU:U[,HU:U...]": piecewise-linear input map sending the window's bottom to
# 0, each HU knee to its U and the window's top (600 HU) to 1, instead of the linear window (more contrast between two
# knees whose U differ by more than their linear values do)
p.add_argument("--focal", type=float, default=0.0)  # >0: weight each sample's loss by (1 - p_true)^focal (p_true =
# exp(-loss), the margin-adjusted probability of its class): hard examples count more, whatever made them hard
p.add_argument("--texture_balance", type=int, default=0)  # 1: draw batches so that each (label, texture class) cell
# is equally likely (ground glass <= 2.5 < part solid < 4 <= solid mean texture rating): a sampling weight from the
# readers' ratings, never an input
p.add_argument("--pad", default="constant")  # how the 32-voxel cube is padded to 36 before the random crop: constant
# (0, i.e. -1200 HU, the pipeline's and the paper's) or replicate (the edge voxels, so crops never show a dark slab
# that test cubes never have)
p.add_argument("--bn_recal", type=int, default=0)  # 1: after the last epoch, also score the network with its batch-norm
# statistics recomputed over the un-augmented training cubes (torch.optim.swa_utils.update_bn), as test cubes come
p.add_argument("--windows", default="")  # "LO:HI[,LO:HI...]" HU: one more input channel per window, the cube
# clipped to [LO, HI] HU and scaled to [0, 1], beside the [-1200, 600] HU channel (e.g. -1000:-400 for ground glass)
p.add_argument("--teacher", type=float, default=0.0)  # >0: train on soft targets t = w * q + (1 - w) * label with
# this weight w, q a teacher's probability of malignancy from the readers' annotations (a training target only: the
# input stays the cube); A-Softmax's loss is then t * loss(class 1) + (1 - t) * loss(class 0)
p.add_argument("--teacher_kind", default="ceiling", choices=("ceiling", "malignancy"))
# ceiling: the ratings ceiling (8 mean ratings + diameter, logistic regression) cross-fitted over folds 0-7, each fold's
# q from a fit on the other training folds; malignancy: the readers' mean malignancy rating mapped to (mean - 1) / 4
p.add_argument("--coord", type=int, default=0)  # 1: one more input channel, each voxel's distance from the cube's
# centre in units of the half-width (the same map for every cube, CoordConv-like; not derived from annotations), so the
# first convolutions can weigh intensity by position (shell profiles, a solid core in a ground-glass halo)
p.add_argument("--shells", type=int, default=0)  # >0: also pool stage 2's output (B, C2, 32^3) over this many
# concentric shells around the cube's centre (2 voxels thick, the last one everything beyond), each channel's mean per
# shell, and give the head those C2 x shells features beside the global average of stage 5 (a learned radial profile)
p.add_argument("--descriptors", type=int, default=0)  # 1: the head also reads fixed radiomic descriptors of the
# input cube (descriptors.CubeDescriptors: per 1 mm shell the mean, spread and gradient of the intensity, and the share
# of voxels above -650/-300/250 HU in balls of 3/6/10 mm), batch-normalised, beside the global average of stage 5
p.add_argument("--rank", type=float, default=0.0)  # >0: add this weight times a pairwise ranking loss (softplus of
# the benign-minus-malignant score over every malignant/benign pair of the batch; score = the inference logit
# difference), a smooth surrogate of 1 - AUC
p.add_argument("--noise", type=float, default=0.0)  # >0: add Gaussian noise of this standard deviation (HU) to every
# training cube after the crop, flips and turns (regularises against the rendered noise pattern)
p.add_argument("--smooth", type=float, default=0.0)  # >0: label smoothing of the (A-Softmax) cross-entropy
p.add_argument("--zero_res", type=int, default=0)  # 1: start each residual block's last batch-norm scale at zero, so
# every block begins as its shortcut (Goyal et al. 2017)
# "": global average (the network's own); avgmax: the head reads stage 5's global average and global maximum side by
# side (2 C^5_N features), e.g. to see a small bright calcification as well as the volume
p.add_argument("--pool", default="", choices=("", "avgmax"))
p.add_argument("--angle", type=int, default=0)  # 1: also score the last epoch's network by A-Softmax's angle alone,
# cos(theta_mal) - cos(theta_ben), leaving out the feature norm ||x|| that the probability multiplies it by
p.add_argument("--mixup", type=float, default=0.0)  # >0: mixup (Zhang et al. 2018) with Beta(mixup, mixup): each
# batch is mixed with a shuffled copy of itself after augmentation, x = w x_i + (1 - w) x_j, trained on the soft target
# t = w y_i + (1 - w) y_j (A-Softmax's margin on each class's own term, as --teacher); drawn from an RNG of its own so
# that the batches and their augmentation are the same as without it
p.add_argument("--device", default="cpu")  # "cuda": train and score on the GPU (cubes augmented on the CPU)
p.add_argument("--name", required=True)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
dev = torch.device(a.device)
rng = np.random.default_rng(a.seed)
rows = list(csv.DictReader(open(Path(a.data) / "manifest.csv")))
mix_rng = np.random.default_rng(a.seed + 10_000)
if a.mixup > 0 and (a.teacher > 0 or a.smooth > 0 or a.rank > 0):
    p.error("--mixup does not combine with --teacher, --smooth or --rank")


@functools.cache
def readers_by_id() -> dict[str, dict]:
    """The readers' rows of the data set (``DIR/cohort.csv``, read and checked once), by nodule id."""
    return {r["nodule_id"]: r for r in read_cohort_csv(Path(a.data) / "cohort.csv")}


vf = {int(f) for f in a.val_folds.split(",")}
cubes = np.stack([np.load(Path(a.data) / r["image"]) for r in rows]).astype(np.float32)
labels = np.array([int(r["label"]) for r in rows])
folds = np.array([int(r["fold"]) for r in rows])
diam = np.array([float(r["diameter_mm"]) for r in rows])
tr = np.where(~np.isin(folds, list(vf)))[0]
va = np.where(np.isin(folds, list(vf)))[0]
sel = np.array([], dtype=int)
if a.sel_fraction > 0:
    shuffled = np.random.default_rng(1000 + a.seed).permutation(tr)
    sel = np.sort(shuffled[: int(round(a.sel_fraction * len(tr)))])
    tr = np.sort(shuffled[len(sel) :])
if a.remap:
    knees = [tuple(float(v) for v in knee.split(":")) for knee in a.remap.split(",")]
    knee_lin = [(hu + 1200.0) / 1800.0 for hu, _ in knees]  # the cube's [-1200, 600] HU window in [0, 1]
    cubes = np.interp(cubes, [0.0, *knee_lin, 1.0], [0.0, *(u for _, u in knees), 1.0]).astype(np.float32)
X = torch.from_numpy(cubes)[:, None]
if a.windows:
    hu = X * 1800.0 - 1200.0
    bounds = [tuple(float(v) for v in window.split(":")) for window in a.windows.split(",")]
    X = torch.cat([X, *(((hu - lo) / (hi - lo)).clamp(0.0, 1.0) for lo, hi in bounds)], dim=1)
    del hu
Y = torch.from_numpy(labels)
# diameter rule on val
ts = np.unique(diam[tr])
accs = [((diam[tr] > t) == labels[tr]).mean() for t in ts]
t = ts[int(np.argmax(accs))]
ref = {"diam_acc": float(((diam[va] > t) == labels[va]).mean()), "diam_auc": float(roc_auc_score(labels[va], diam[va]))}
print(a.name, "n_train", len(tr), "n_val", len(va), ref, flush=True)
net = build_network(
    a.spec, head="angular" if a.loss == "asoftmax" else "linear", in_channels=X.shape[1] + (1 if a.coord else 0)
)
net = use_narrow_channel_kernels(net.to(memory_format=torch.channels_last_3d))
if a.zero_res:
    for block in [m for m in net.modules() if isinstance(m, ResidualBlock)]:
        norms = [m for m in block.conv2.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        torch.nn.init.zeros_(norms[-1].weight)


if a.shells:
    net = WithShells(net, a.shells)
if a.descriptors:
    net = WithDescriptors(net)
if a.pool == "avgmax":
    net = WithMaxPool(net)
if a.coord:
    net = WithRadius(net)
RATINGS = tuple(c for c in CHARACTERISTICS if c != "malignancy")  # the renderer's inputs, not the label's
aux_head, pooled = None, {}
if a.aux > 0:
    cohort = readers_by_id()
    targets = np.array(
        [[math.log(float(r["diameter_mm"]))] + list(mean_ratings(cohort[r["nodule_id"]], RATINGS)) for r in rows]
    )
    targets = (targets - targets[tr].mean(0)) / targets[tr].std(0)
    T = torch.from_numpy(targets).float()
    aux_head = torch.nn.Linear(net.head.in_features, T.shape[1])
    net.head.register_forward_pre_hook(lambda module, args: pooled.__setitem__("features", args[0]))
    aux_head, T = aux_head.to(dev), T.to(dev)
net = net.to(dev)
Q = None
if a.teacher > 0:
    cohort = readers_by_id()
    if a.teacher_kind == "malignancy":
        q = np.array([(mean_ratings(cohort[r["nodule_id"]], ("malignancy",))[0] - 1.0) / 4.0 for r in rows])
    else:
        feats = np.array(
            [list(mean_ratings(cohort[r["nodule_id"]], CEILING_RATINGS)) + [float(r["diameter_mm"])] for r in rows]
        )
        q = np.full(len(rows), np.nan)
        for f in np.unique(folds[tr]):
            fit_rows = tr[folds[tr] != f]
            own = tr[folds[tr] == f]
            q[own] = fit_ratings_ceiling(feats[fit_rows], labels[fit_rows]).predict_proba(feats[own])[:, 1]
    q = np.clip(q, 0.0, 1.0)
    Q = torch.from_numpy(a.teacher * q + (1.0 - a.teacher) * labels).float().to(dev)
    print(
        "teacher",
        a.teacher_kind,
        "mean |t - label| on training",
        float(np.abs(Q.cpu().numpy()[tr] - labels[tr]).mean()),
    )
steps_per_epoch = math.ceil(len(tr) / a.bs)
total = steps_per_epoch * a.epochs
kw = {}
if a.loss == "asoftmax" and a.lam_frac > 0:
    kw = dict(gamma=(1500 / a.lam_min - 1) / (a.lam_frac * total), lambda_min=a.lam_min)
if a.focal > 0:
    kw["reduction"] = "none"
loss_fn = build_loss(a.loss, **kw).to(dev)
sample_weights = None
if a.texture_balance:
    cohort = readers_by_id()
    tex = np.array([mean_ratings(cohort[r["nodule_id"]], ("texture",))[0] for r in rows])
    cell = labels * 3 + np.digitize(tex, [2.5 + 1e-9, 4.0])
    counts = np.bincount(cell[tr], minlength=6)
    sample_weights = 1.0 / np.maximum(counts[cell[tr]], 1)
    sample_weights /= sample_weights.sum()
params = list(net.parameters()) + (list(aux_head.parameters()) if aux_head is not None else [])
if a.opt == "adam":
    opt = (
        torch.optim.AdamW(params, a.lr, betas=(a.beta1, 0.999), weight_decay=a.wd)
        if a.wd
        else torch.optim.Adam(params, a.lr, betas=(a.beta1, 0.999))
    )
else:
    opt = torch.optim.SGD(params, a.lr, momentum=0.9, weight_decay=a.wd, nesterov=True)
if a.sched == "cosine":
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, a.lr, total_steps=total, pct_start=0.05, anneal_strategy="cos", cycle_momentum=False
    )
elif a.sched == "onecycle":
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=total, pct_start=0.3, cycle_momentum=False)
else:
    sched = None


def augment(x):
    B = x.shape[0]
    x = F.pad(x, (2, 2, 2, 2, 2, 2), mode=a.pad)
    out = torch.empty(B, x.shape[1], 32, 32, 32)
    for i in range(B):
        o = rng.integers(0, 5, 3)
        c = x[i, :, o[0] : o[0] + 32, o[1] : o[1] + 32, o[2] : o[2] + 32]
        for ax in range(3):
            if rng.random() < 0.5:
                c = c.flip(ax + 1)
        if a.rot:
            k = rng.integers(0, 4)
            axes = [(1, 2), (1, 3), (2, 3)][rng.integers(0, 3)]
            c = torch.rot90(c, int(k), axes)
        out[i] = c
    if a.noise > 0:
        out = out + torch.randn(out.shape) * (a.noise / 1800.0)
    return out.contiguous(memory_format=torch.channels_last_3d)


def soft_target_loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample ``t * loss(class 1) + (1 - t) * loss(class 0)``; for A-Softmax each term puts the margin on its own
    class (``networks.losses.AngularSoftmaxLoss``'s target logit) and the lambda schedule steps once per call."""
    if a.loss != "asoftmax":
        lp = F.log_softmax(out, 1)
        return -(t * lp[:, 1] + (1 - t) * lp[:, 0])
    cos_l, psi_l = out[:, 0], out[:, 1]
    lam = loss_fn.current_lambda
    loss_fn.iteration += 1
    margin = (psi_l - cos_l) / (1 + lam)  # (B, 2): each class's target-logit change
    lp1 = F.log_softmax(torch.stack([cos_l[:, 0], cos_l[:, 1] + margin[:, 1]], 1), 1)
    lp0 = F.log_softmax(torch.stack([cos_l[:, 0] + margin[:, 0], cos_l[:, 1]], 1), 1)
    return -(t * lp1[:, 1] + (1 - t) * lp0[:, 0])


ema = None
if a.ema > 0:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(a.ema), use_buffers=True)
FLIPS = [()] if not a.tta else [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


swa = None
if a.swa_from > 0:
    from torch.optim.swa_utils import AveragedModel, update_bn

    swa = AveragedModel(net)
snapshots: list[np.ndarray] = []


def plain_training_batches() -> list[tuple[torch.Tensor]]:
    """The training cubes un-augmented, in batches of 64 on the device, as ``update_bn`` takes them."""
    return [
        (X[tr[s : s + 64]].to(dev).contiguous(memory_format=torch.channels_last_3d),) for s in range(0, len(tr), 64)
    ]


def evaluate(model=None, prefix="val", flips=((),), index=None):
    model = model or net
    index = va if index is None else index
    model.eval()
    probs = []
    with torch.no_grad():
        for s in range(0, len(index), 64):
            xb = X[index[s : s + 64]].to(dev)
            pb = 0
            for f in flips:
                xf = (xb.flip(f) if f else xb).contiguous(memory_format=torch.channels_last_3d)
                pb = pb + torch.softmax(model(xf).float(), 1)[:, 1]
            probs.append((pb / len(flips)).cpu())
    model.train()
    pr = torch.cat(probs).numpy()
    if prefix == "val":
        snapshots.append(pr)
    return {
        f"{prefix}_acc": float(((pr > 0.5) == labels[index]).mean()),
        f"{prefix}_auc": float(roc_auc_score(labels[index], pr)),
        f"{prefix}_pos_rate": float((pr > 0.5).mean()),
    }


decks: dict[int, list[int]] = {0: [], 1: []}


def deal(label: int, n: int) -> list[int]:
    """``n`` training rows of class ``label``, dealt from a shuffled deck of that class, reshuffled when empty."""
    out: list[int] = []
    while len(out) < n:
        if not decks[label]:
            decks[label] = [int(i) for i in rng.permutation(tr[labels[tr] == label])]
        out.append(decks[label].pop())
    return out


hist = []
t0 = time.time()
for ep in range(a.epochs):
    if sample_weights is not None:
        order = rng.choice(tr, len(tr), p=sample_weights)
    elif a.balance == 2:
        order = np.array(deal(1, len(tr) // 2) + deal(0, len(tr) - len(tr) // 2))
        rng.shuffle(order)
    elif a.balance:
        w = np.where(labels[tr] == 1, 1 / labels[tr].mean(), 1 / (1 - labels[tr].mean()))
        w /= w.sum()
        order = rng.choice(tr, len(tr), p=w)
    else:
        order = rng.permutation(tr)
    losses = []
    for s in range(0, len(order), a.bs):
        idx = order[s : s + a.bs]
        if len(idx) < 2:
            continue
        xb = augment(X[idx]).to(dev)
        yb = Y[idx].to(dev)
        if a.mixup > 0:
            w = float(mix_rng.beta(a.mixup, a.mixup))
            perm = torch.from_numpy(mix_rng.permutation(len(idx))).to(dev)
            xb = (w * xb + (1.0 - w) * xb[perm]).contiguous(memory_format=torch.channels_last_3d)
            mixed_t = w * yb.float() + (1.0 - w) * yb.float()[perm]
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(a.bf16)):
            out = net(xb)
        soft_targets = mixed_t if a.mixup > 0 else (Q[idx] if Q is not None else None)
        if soft_targets is not None:
            loss = soft_target_loss(out.float(), soft_targets)
            loss = loss if a.focal > 0 else loss.mean()
        elif a.smooth > 0:
            o = out.float()
            if o.ndim == 3:  # A-Softmax's (B, 2, K): cos and psi logits, the margin on the target class
                lam = loss_fn.current_lambda
                loss_fn.iteration += 1
                hot = F.one_hot(yb.long(), o.shape[2]).float()
                o = o[:, 0] + hot * (o[:, 1] - o[:, 0]) / (1.0 + lam)
            loss = F.cross_entropy(o, yb.long(), label_smoothing=a.smooth)
        else:
            loss = loss_fn(out.float(), yb)
        if a.focal > 0:
            loss = ((1 - torch.exp(-loss.detach())).clamp_min(0) ** a.focal * loss).mean()
        if a.rank > 0:
            logits = out.float()[:, 0] if out.ndim == 3 else out.float()  # inference logits (B, 2)
            score = logits[:, 1] - logits[:, 0]
            pos, neg = score[yb == 1], score[yb == 0]
            if len(pos) and len(neg):
                loss = loss + a.rank * F.softplus(neg[None, :] - pos[:, None]).mean()
        if aux_head is not None:
            loss = loss + a.aux * F.mse_loss(aux_head(pooled["features"].float()), T[idx])
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        if ema is not None:
            ema.update_parameters(net)
        losses.append(float(loss.detach()))
    m = evaluate()
    if len(sel):
        m.update(evaluate(prefix="sel", index=sel))
    if a.tta:
        m.update(evaluate(prefix="tta", flips=FLIPS))
    if ema is not None:
        m.update(evaluate(ema.module, prefix="ema"))
        if a.tta:
            m.update(evaluate(ema.module, prefix="ematta", flips=FLIPS))
    if a.snap_from and ep + 1 >= a.snap_from:
        pr = np.mean(snapshots[a.snap_from - 1 :], axis=0)
        m.update(snap_acc=float(((pr > 0.5) == labels[va]).mean()), snap_auc=float(roc_auc_score(labels[va], pr)))
    if swa is not None and ep + 1 >= a.swa_from:
        swa.update_parameters(net)
        update_bn(plain_training_batches(), swa)
        m.update(evaluate(swa.module, prefix="swa"))
    m.update(
        epoch=ep + 1,
        loss=float(np.mean(losses)),
        s=time.time() - t0,
        lam=getattr(loss_fn, "current_lambda", None),
        lr=opt.param_groups[0]["lr"],
    )
    hist.append(m)
    print(json.dumps(m), flush=True)

recalibrated = {}
if a.bn_recal:
    import copy

    from torch.optim.swa_utils import update_bn

    recal_net = copy.deepcopy(net)
    update_bn(plain_training_batches(), recal_net)
    recalibrated = evaluate(recal_net, prefix="bn_recal")
    print(json.dumps(recalibrated), flush=True)


def angle_scores(model) -> tuple[np.ndarray, np.ndarray]:
    """The validation nodules' ``cos(theta_mal) - cos(theta_ben)`` and feature norms ``||x||`` (each ``(n_val,)``),
    read at the input of the network's :class:`AngularLinear` head."""
    head = next(m for m in model.modules() if isinstance(m, AngularLinear))
    features: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, inputs, output: features.append(inputs[0].detach().float()))
    model.eval()
    logits = []
    try:
        with torch.no_grad():
            for s in range(0, len(va), 64):
                logits.append(
                    model(X[va[s : s + 64]].to(dev).contiguous(memory_format=torch.channels_last_3d)).float().cpu()
                )
    finally:
        hook.remove()
        model.train()
    norms = torch.linalg.vector_norm(torch.cat(features).cpu(), dim=1)
    cosines = torch.cat(logits) / norms.clamp_min(1e-12)[:, None]
    return (cosines[:, 1] - cosines[:, 0]).numpy(), norms.numpy()


angular = {}
if a.angle:
    if a.loss != "asoftmax":
        raise SystemExit("--angle 1 needs --loss asoftmax (the angle is A-Softmax's)")
    delta_cos, feature_norms = angle_scores(net)
    # the same network's last-epoch probability ranks by feature_norm * delta_cos; this ranks by delta_cos alone
    angular = {
        "angle_val_auc": float(roc_auc_score(labels[va], delta_cos)),
        "val_angle_scores": [round(float(v), 6) for v in delta_cos],
        "val_feature_norms": [round(float(v), 6) for v in feature_norms],
    }
    print(json.dumps({"angle_val_auc": angular["angle_val_auc"]}), flush=True)


def validation_cohort_rows() -> list[dict] | None:
    """The readers' rows (``DIR/cohort.csv``) of the validation nodules, in ``va`` order; None without the file."""
    if not (Path(a.data) / "cohort.csv").exists():
        return None
    cohort = readers_by_id()
    return [cohort[rows[i]["nodule_id"]] for i in va]


def last_epoch_calcification_weight() -> float | None:
    """The last epoch's validation logits' weight on calcification over log-diameter (:func:`cues.calcification_weight`;
    the readers' logistic regression gives about -0.64)."""
    readers = validation_cohort_rows()
    if readers is None:
        return None
    calc = np.array([calcified(r) for r in readers])
    return calcification_weight(snapshots[-1], np.log(diam[va]), calc)


def ground_glass_auc(scores: np.ndarray | None = None) -> float | None:
    """Last epoch's validation AUC of the malignant ground-glass nodules (:func:`cues.ground_glass`) against every
    benign nodule: how well the network finds the faint malignant nodules that a size cue ranks low. ``scores``:
    the validation nodules' scores (default: the last epoch's probabilities)."""
    readers = validation_cohort_rows()
    if readers is None:
        return None
    scores = snapshots[-1] if scores is None else scores
    keep = (labels[va] == 0) | np.array([ground_glass(r) for r in readers])
    return float(roc_auc_score(labels[va][keep], scores[keep]))


best = max(hist, key=lambda h: h["val_auc"])
res = {
    "args": vars(a),
    "ref": ref,
    "final": hist[-1],
    "best_auc_epoch": best,
    "history": hist,
    "last5_auc": float(np.mean([h["val_auc"] for h in hist[-5:]])),
    "last5_acc": float(np.mean([h["val_acc"] for h in hist[-5:]])),
    **recalibrated,
    "calcification_weight": last_epoch_calcification_weight(),
    "ground_glass_auc": ground_glass_auc(),
    **angular,
    **({"angle_ground_glass_auc": ground_glass_auc(np.array(angular["val_angle_scores"]))} if angular else {}),
    "val_probabilities": [round(float(v), 6) for v in snapshots[-1]],
    # every epoch's validation probabilities, so averages over any window of epochs can be scored afterwards
    "val_probabilities_by_epoch": [[round(float(v), 6) for v in epoch] for epoch in snapshots],
    **{
        f"last5_{k}": float(np.mean([h[k] for h in hist[-5:]]))
        for k in hist[-1]
        if k.endswith(("_auc", "_acc")) and not k.startswith("val_")
    },
}
if len(sel):
    first = math.ceil(0.5 * a.epochs)  # the pipeline's checkpoint_from_fraction 0.5
    picked = max(hist[first - 1 :], key=lambda h: h["sel_auc"])
    res.update(
        n_sel=len(sel),
        selected_epoch=picked["epoch"],
        selected_val_auc=picked["val_auc"],
        selected_val_acc=picked["val_acc"],
        last_val_auc=hist[-1]["val_auc"],
        last_val_acc=hist[-1]["val_acc"],
    )
out = Path(__file__).resolve().parents[1] / "results" / "recipe" / f"{a.name}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(res, indent=1), encoding="utf-8")
print(
    "DONE",
    a.name,
    "last5 acc {:.3f} auc {:.3f}; last auc {:.4f}; calcification weight {}; ground-glass auc {}".format(
        res["last5_acc"], res["last5_auc"], hist[-1]["val_auc"], res["calcification_weight"], res["ground_glass_auc"]
    ),
    flush=True,
)
