"""``photoscore train``: CDCML training on CPU or CUDA, resumable, one-file checkpoints."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import CheckpointMeta, save_checkpoint
from model.config import TrainConfig
from model.features import FeatureStats
from model.inference import resolve_device
from model.losses import total_loss
from model.networks import CDCML, IMAGENET_MEAN, IMAGENET_STD
from model.pairs import Pairs, build_pairs, estimate_sigma
from model.prepare import SPLITS, ImageSet, MusicSet, prepare

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def image_input(pixels: np.ndarray, size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """uint8 [n,3,S,S] -> normalised float [n,3,size,size]: random crop + flip when training
    (``rng`` given), centre crop otherwise. Colour is never jittered: it carries the signal."""
    n, _, s, _ = pixels.shape
    if rng is None:
        o = (s - size) // 2
        crops = pixels[:, :, o : o + size, o : o + size]
    else:
        ys, xs = rng.integers(0, s - size + 1, n), rng.integers(0, s - size + 1, n)
        crops = np.stack([p[:, y : y + size, x : x + size] for p, y, x in zip(pixels, ys, xs, strict=True)])
        flip = rng.random(n) < 0.5
        crops[flip] = crops[flip][..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(crops)).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class TrainData:
    """Prepared arrays plus everything derived from the training split alone."""

    images: ImageSet
    music: MusicSet
    summary: dict
    stats: FeatureStats
    sigma: float
    train_pairs: Pairs
    val_pairs: Pairs
    img_train: np.ndarray
    clip_train: np.ndarray
    img_val: np.ndarray
    clip_val: np.ndarray


def build_train_data(cfg: TrainConfig, progress: bool = True) -> TrainData:
    images, music, summary = prepare(cfg.data, cfg.seed, cfg.model.image_size, progress)
    it, iv = (np.nonzero(images.split == SPLITS[s])[0] for s in ("train", "val"))
    ct, cv = (np.nonzero(music.split == SPLITS[s])[0] for s in ("train", "val"))
    if not len(it) or not len(ct):
        raise ValueError("no training images or clips: check the data sources in the config")
    rng = np.random.default_rng(cfg.seed)
    fit_idx = np.sort(rng.choice(ct, min(len(ct), 4000), replace=False))
    stats = FeatureStats.fit(music.features[fit_idx].astype(np.float32))
    sigma = estimate_sigma(images.va[it], music.va[ct], seed=cfg.seed)
    d = cfg.data
    n_most = n_least = d.pairs_per_clip // 5
    kw = dict(per_clip=d.pairs_per_clip, n_random=d.pairs_per_clip - 2 * n_most, n_most=n_most, n_least=n_least)
    tp = build_pairs(images.va[it], music.va[ct], sigma, subsample=d.pair_subsample, seed=cfg.seed, **kw)
    tp = Pairs(it[tp.image_idx], ct[tp.clip_idx], tp.similarity, tp.kind, sigma)
    vp = build_pairs(images.va[iv], music.va[cv], sigma, seed=cfg.seed + 1, **kw) if len(iv) and len(cv) else None
    if vp is not None:
        vp = Pairs(iv[vp.image_idx], cv[vp.clip_idx], vp.similarity, vp.kind, sigma)
    return TrainData(images, music, summary, stats, sigma, tp, vp, it, ct, iv, cv)


def clip_input(stats: FeatureStats, features: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(stats.to_network_input(features.astype(np.float32)))


class Trainer:
    """Owns model, optimiser and schedule; one epoch at a time so it can resume."""

    def __init__(self, cfg: TrainConfig, data: TrainData, out: Path, progress: bool = True) -> None:
        self.cfg, self.data, self.out, self.progress = cfg, data, Path(out), progress
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.model = CDCML(cfg.model).to(self.device)
        o = cfg.optim
        for branch, frozen in (
            (self.model.image_branch, o.freeze_image_backbone),
            (self.model.music_branch, o.freeze_music_backbone),
        ):
            if frozen:
                branch.backbone.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        elif o.optimizer in ("adam", "adamw"):
            self.opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {o.optimizer!r} (sgd, adam, adamw)")
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=o.step_size, gamma=o.gamma)
        self.epoch = 0
        self.best = float("inf")
        self.history: list[dict] = []
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._resume()

    # ------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    def _resume(self) -> None:
        if not self.state_path.is_file():
            return
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.sched.load_state_dict(state["sched"])
        self.epoch, self.best = int(state["epoch"]), float(state["best"])
        self.history = json.loads(state["history"])
        log.info("resumed from %s at epoch %d", self.state_path, self.epoch)

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "optim": self.opt.state_dict(),
                "sched": self.sched.state_dict(),
                "epoch": self.epoch,
                "best": self.best,
                "history": json.dumps(self.history),
            },
            tmp,
        )
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------------ forward helpers
    def _frozen_parts(self, kind: str, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone outputs computed once when a backbone is frozen (practical CPU training)."""
        if kind not in self._cache:
            branch = self.model.image_branch if kind == "image" else self.model.music_branch
            n = len(self.data.images.va) if kind == "image" else len(self.data.music.va)
            hs, afs = [], []
            branch.eval()
            with torch.inference_mode():
                for s in tqdm(range(0, n, 256), desc=f"cache {kind} backbone", disable=not self.progress):
                    sl = np.arange(s, min(n, s + 256))
                    x = self._raw_input(kind, sl, train=False)
                    h, a = branch.parts(x.to(self.device))
                    hs.append(h.cpu())
                    afs.append(a.cpu() if a is not None else None)
            self._cache[kind] = (torch.cat(hs), torch.cat(afs) if afs[0] is not None else None)
        h, a = self._cache[kind]
        t = torch.from_numpy(idx)
        return h[t].to(self.device), (a[t].to(self.device) if a is not None else None)

    def _raw_input(
        self, kind: str, idx: np.ndarray, train: bool, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        if kind == "image":
            return image_input(self.data.images.pixels[idx], self.cfg.model.image_size, rng if train else None)
        return clip_input(self.data.stats, self.data.music.features[idx])

    def embed(self, kind: str, idx: np.ndarray, train: bool, rng: np.random.Generator | None = None) -> torch.Tensor:
        branch = self.model.image_branch if kind == "image" else self.model.music_branch
        frozen = self.cfg.optim.freeze_image_backbone if kind == "image" else self.cfg.optim.freeze_music_backbone
        if frozen:
            return branch.head(*self._frozen_parts(kind, idx))
        return branch(self._raw_input(kind, idx, train, rng).to(self.device))

    # ------------------------------------------------------------------ loops
    def train_epoch(self) -> dict:
        cfg, data = self.cfg, self.data
        rng = np.random.default_rng(cfg.seed * 1000 + self.epoch)
        self.model.train()
        bs = cfg.optim.batch_size
        order = rng.permutation(len(data.train_pairs))
        steps = len(order) // bs
        if cfg.optim.steps_per_epoch:
            steps = min(steps, cfg.optim.steps_per_epoch)
        totals: dict[str, float] = {}
        bar = tqdm(range(steps), desc=f"epoch {self.epoch + 1}/{cfg.optim.epochs}", disable=not self.progress)
        t0 = time.perf_counter()
        for step in bar:
            sel = order[step * bs : (step + 1) * bs]
            ii, ci = data.train_pairs.image_idx[sel], data.train_pairs.clip_idx[sel]
            s_true = torch.from_numpy(data.train_pairs.similarity[sel]).float().to(self.device)
            ei = self.embed("image", ii, True, rng)
            em = self.embed("music", ci, True, rng)
            vi = torch.from_numpy(data.images.va[ii]).to(self.device)
            vm = torch.from_numpy(data.music.va[ci]).to(self.device)
            wm = torch.from_numpy(np.where(data.music.weak[ci], cfg.data.weak_weight, 1.0)).float().to(self.device)
            loss, parts = total_loss(
                cfg.loss,
                ei=ei,
                em=em,
                vi=vi,
                vm=vm,
                sim_pred=self.model.similarity(ei, em),
                sim_true=s_true,
                va_i_pred=self.model.va(ei),
                va_m_pred=self.model.va(em),
                music_weight=wm,
            )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
            totals["total"] = totals.get("total", 0.0) + float(loss.detach())
            bar.set_postfix(loss=f"{totals['total'] / (step + 1):.4f}")
        self.sched.step()
        out = {k: v / max(1, steps) for k, v in totals.items()}
        out["steps"] = steps
        out["seconds"] = time.perf_counter() - t0
        return out

    def validate(self) -> dict:
        from model.evaluate import score_split

        return score_split(self.model, self.data, "val", self.device, self.cfg.model.image_size)

    def meta(self, metrics: dict) -> CheckpointMeta:
        return CheckpointMeta(
            config=self.cfg.model,
            feature_stats=self.data.stats,
            name=self.cfg.name,
            sigma=self.data.sigma,
            label_normalisation={
                "images": "scale min/range to [0,1] (OASIS 1-7, Emotion6 1-9)",
                "music": "VGMIDI [-1,1] -> [0,1]; quadrant sets -> weak targets 0.25/0.75",
            },
            data_summary=self.data.summary,
            metrics=metrics,
            train_config=self.cfg.to_dict(),
        )

    def fit(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        best_path = self.out / "model.safetensors"
        while self.epoch < self.cfg.optim.epochs:
            train_stats = self.train_epoch()
            self.epoch += 1
            val = self.validate() if self.data.val_pairs is not None else {}
            record = {"epoch": self.epoch, "train": train_stats, "val": val}
            self.history.append(record)
            log.info(
                "epoch %d: %s",
                self.epoch,
                json.dumps(
                    {
                        k: round(v, 4)
                        for k, v in {
                            **train_stats,
                            **{f"val_{k}": v for k, v in val.items() if isinstance(v, float)},
                        }.items()
                    }
                ),
            )
            # Lower is better: the negated ranking metric a recommender is judged by, else the loss.
            metric = self.cfg.optim.select_metric
            if metric == "last":
                key = -float(self.epoch)
            else:
                key = -val[metric] if metric in val else train_stats.get("total", 0.0)
            if key < self.best or not best_path.exists():
                self.best = key
                save_checkpoint(
                    best_path,
                    self.model,
                    self.meta({"val": val, "epoch": self.epoch}),
                    half=self.cfg.optim.half_checkpoint,
                )
            self._save_state()
        (self.out / "history.json").write_text(json.dumps(self.history, indent=2))
        return best_path


def train(cfg: TrainConfig, out: Path, progress: bool = True) -> Path:
    """Prepare data (cached), train for the configured epochs (resuming), return the best checkpoint."""
    seed_everything(cfg.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = build_train_data(cfg, progress)
    log.info(
        "data: %s; sigma %.4f; %d train pairs",
        json.dumps({k: data.summary[k] for k in ("images", "clips", "songs")}),
        data.sigma,
        len(data.train_pairs),
    )
    return Trainer(cfg, data, out, progress).fit()
