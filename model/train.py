"""``photoscore train``: CDCML training on CPU or CUDA, resumable, one-file checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.checkpoint import CheckpointMeta, resolve_device, save_checkpoint
from model.config import TrainConfig
from model.datasets import EMOTION6_CATEGORIES, detect_format, emotion6_distributions
from model.evaluate import score_split
from model.export import export_onnx
from model.features import FeatureStats
from model.losses import total_loss
from model.networks import CDCML, IMAGE_AFFECT_VERSION, Branch, EfficientNetLite
from model.pairs import Pairs, build_pairs, estimate_sigma
from model.prepare import SPLITS, ImageSet, PreparedData, prepare, source_specs
from model.transforms import clip_input, image_input

log = logging.getLogger(__name__)
RANK_PHOTOS = 64  # photos per batch in the listwise term's similarity matrix (64 x batch clips)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainData(PreparedData):
    """Prepared data plus the pairs and split rows derived from the training split alone
    (``stats`` and ``sigma`` are fitted on it too)."""

    train_pairs: Pairs
    val_pairs: Pairs | None
    img_train: np.ndarray
    clip_train: np.ndarray
    img_val: np.ndarray
    clip_val: np.ndarray


def category_targets(cfg: TrainConfig, images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's Emotion6 category distribution [n, 7] and whether it has one [n]: photos of
    the configured Emotion6 sources do, the rest (OASIS) are left out of the category term."""
    dists: dict[str, np.ndarray] = {}
    for spec in source_specs(cfg.data.root, cfg.data.images):
        if Path(spec).is_dir() and detect_format(spec) == "emotion6":
            dists |= emotion6_distributions(spec)
    target = np.zeros((len(images.ids), len(EMOTION6_CATEGORIES)), np.float32)
    mask = np.zeros(len(images.ids), bool)
    for row, (source, item_id) in enumerate(zip(images.sources, images.ids, strict=True)):
        key = str(item_id).removeprefix(f"{source}:")  # prepared ids are "source:item id"
        if key in dists:
            target[row], mask[row] = dists[key], True
    if not mask.any():
        raise ValueError("loss.categories is on but no configured image source is Emotion6")
    return target, mask


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
        tuned = self._unfreeze_top() if o.image_tune_blocks else []
        # the category term's heads (one per member) are a training aid: they read the image
        # embedding, are never saved in the checkpoint and never exported
        self.category_heads: nn.ModuleList | None = None
        self.categories: tuple[np.ndarray, np.ndarray] | None = None
        if cfg.loss.categories:
            self.category_heads = nn.ModuleList(
                nn.Linear(cfg.model.embed_dim, len(EMOTION6_CATEGORIES)) for _ in range(cfg.model.members)
            ).to(self.device)
            self.categories = category_targets(cfg, data.images)
        tuned_ids = {id(p) for p in tuned}
        params = [p for p in self.model.parameters() if p.requires_grad and id(p) not in tuned_ids]
        params += list(self.category_heads.parameters()) if self.category_heads is not None else []
        groups: list[dict] = [{"params": params}]
        if tuned:  # the pretrained top learns slower than the heads trained from scratch
            groups.append({"params": tuned, "lr": o.lr * o.tune_lr_scale})
        self.opt: torch.optim.Optimizer
        if o.optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        elif o.optimizer in ("adam", "adamw"):
            self.opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {o.optimizer!r} (sgd, adam, adamw)")
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=o.step_size, gamma=o.gamma)
        self.epoch = 0
        self.best = float("inf")
        self.history: list[dict] = []
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._resume()

    def _top_blocks(self, kind: str) -> int:
        """How many of ``kind``'s backbone blocks train over its cached bottom (0: none)."""
        return self.cfg.optim.image_tune_blocks if kind == "image" else 0

    def _tuned_backbone(self) -> EfficientNetLite:
        backbone = self.model.image_branch.backbone
        assert isinstance(backbone, EfficientNetLite)  # model.config.TrainConfig checks it
        return backbone

    def _unfreeze_top(self) -> list[nn.Parameter]:
        """Make the image backbone's top (``optim.image_tune_blocks``) trainable; its parameters."""
        tuned = []
        for _, module in self._tuned_backbone().top_modules(self._top_blocks("image")):
            module.requires_grad_(True)
            tuned += list(module.parameters())
        return tuned

    # ------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    def _resume(self) -> None:
        if not self.state_path.is_file():
            return
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        if self.category_heads is not None:
            self.category_heads.load_state_dict(state["category_heads"])
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
                **({"category_heads": self.category_heads.state_dict()} if self.category_heads is not None else {}),
            },
            tmp,
        )
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------------ forward helpers
    def _frozen_parts(
        self, kind: str, idx: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone outputs computed once when a backbone is frozen (practical CPU training).

        Images are cached as seen and flipped; training (``rng`` given) draws one of the two
        views per image, which is the flip augmentation of the unfrozen path.
        """
        if kind not in self._cache:
            self._cache[kind] = self._load_or_compute_frozen(kind)
        h, a = self._cache[kind]
        t = torch.from_numpy(idx)
        view = torch.zeros(len(idx), dtype=torch.long)
        views = kind == "image"  # [n, view, ...]: as seen and flipped
        if rng is not None and views:
            view = torch.from_numpy(rng.integers(0, h.shape[1], len(idx)))
        if views:
            hs = h[t, view]
            as_ = a[t, view] if a is not None else None
        else:
            hs, as_ = h[t], (a[t] if a is not None else None)
        return hs.to(self.device), (as_.to(self.device) if as_ is not None else None)

    def _frozen_key(self, kind: str, branch: Branch) -> str:
        """Cache key: the backbone's weights and the exact inputs it is given."""
        digest = hashlib.sha256(kind.encode())
        tune = self._top_blocks(kind)
        # a tuned top is not part of what is cached: its weights (changed on resume) stay out of the key
        skip = tuple(f"{name}." for name, _ in self._tuned_backbone().top_modules(tune)) if tune else ()
        for name, tensor in sorted(branch.backbone.state_dict().items()):
            if skip and name.startswith(skip):
                continue
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        arrays = [self.data.images.pixels] if kind == "image" else self._music_inputs()
        for arr in arrays:
            digest.update(str(arr.shape).encode())
            digest.update(np.ascontiguousarray(arr).view(np.uint8).data)
        m = self.cfg.model
        backbone = m.image_backbone if kind == "image" else m.music_backbone
        # other image poolings extend the key; mean pooling's (and every music) key stays as it was
        pooling = [m.image_pooling] if kind == "image" and m.image_pooling != "mean" else []
        split = [f"bottom-{tune}"] if tune else []
        colour = [f"colour-v{IMAGE_AFFECT_VERSION}"] if kind == "image" and m.affect_features else []
        digest.update(
            json.dumps([backbone, m.affect_features, m.image_size, m.compact_width, *pooling, *split, *colour]).encode()
        )
        return digest.hexdigest()[:16]

    def _music_inputs(self) -> list[np.ndarray]:
        music = self.data.music
        return [music.features] + ([music.tagger] if music.tagger is not None else [])

    def _load_or_compute_frozen(self, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        branch = self.model.image_branch if kind == "image" else self.model.music_branch
        path = Path(self.cfg.data.cache_dir) / f"frozen-{kind}-{self._frozen_key(kind, branch)}.pt"
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            log.info("frozen %s backbone outputs from cache %s", kind, path)
            return saved["h"], saved.get("a")
        n = len(self.data.images.va) if kind == "image" else len(self.data.music.va)
        views = 2 if kind == "image" else 1
        hs, afs = [], []
        branch.eval()
        with torch.inference_mode():
            for s in tqdm(range(0, n, 64), desc=f"cache {kind} backbone", disable=not self.progress):
                sl = np.arange(s, min(n, s + 64))
                hv, av = [], []
                x, aux = self._raw_input(kind, sl)
                aux = None if aux is None else aux.to(self.device)
                for v in range(views):
                    h, a = self._frozen_encode(kind, branch, (torch.flip(x, dims=[3]) if v == 1 else x), aux)
                    hv.append(h.cpu())
                    av.append(a.cpu() if a is not None else None)
                hs.append(torch.stack(hv, 1) if views > 1 else hv[0])
                avs = [t for t in av if t is not None]  # every view or none has affect features
                if avs:
                    afs.append(torch.stack(avs, 1) if views > 1 else avs[0])
        h = torch.cat(hs)
        a = torch.cat(afs) if afs else None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"h": h, **({"a": a} if a is not None else {})}, tmp)
        os.replace(tmp, path)
        return h, a

    def _frozen_encode(
        self, kind: str, branch: Branch, x: torch.Tensor, aux: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the cache holds for one view: the backbone output and affect features, or with a
        tuned image top, the feature map entering it (``EfficientNetLite.bottom``)."""
        x = x.to(self.device)
        tune = self._top_blocks(kind)
        if not tune:
            return branch.parts(x, aux)
        return self._tuned_backbone().bottom(x, tune), (branch.affect(x) if branch.affect is not None else None)

    def _raw_input(
        self, kind: str, idx: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone input and, for a music branch whose backbone reads tagger input, the
        spectral features its affect statistics come from."""
        if kind == "image":
            return torch.from_numpy(image_input(self.data.images.pixels[idx], rng)), None
        spectral = torch.from_numpy(clip_input(self.data.stats, self.data.music.features[idx]))
        if self.data.music.tagger is not None and self.cfg.model.uses_tagger:
            return torch.from_numpy(self.data.music.tagger[idx].astype(np.float32)), spectral
        return spectral, None

    def parts(
        self, kind: str, idx: np.ndarray, train: bool, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone output and affect features of ``idx``: cached for a frozen backbone, else computed."""
        branch = self.model.image_branch if kind == "image" else self.model.music_branch
        frozen = self.cfg.optim.freeze_image_backbone if kind == "image" else self.cfg.optim.freeze_music_backbone
        if frozen:
            h, a = self._frozen_parts(kind, idx, rng if train else None)
            tune = self._top_blocks(kind)
            return (self._tuned_backbone().top(h, tune) if tune else h), a
        x, aux = self._raw_input(kind, idx, rng if train else None)
        return branch.parts(x.to(self.device), None if aux is None else aux.to(self.device))

    def embed(self, kind: str, idx: np.ndarray, train: bool, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Joined embeddings of ``idx`` (every member's space)."""
        branch = self.model.image_branch if kind == "image" else self.model.music_branch
        return branch.head(*self.parts(kind, idx, train, rng))

    # ------------------------------------------------------------------ loops
    def _member_loss(
        self,
        k: int,
        ei: torch.Tensor,
        em: torch.Tensor,
        ii: np.ndarray,
        vi: torch.Tensor,
        vm: torch.Tensor,
        wm: torch.Tensor,
        s_true: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 8 (plus the enabled extra terms) for member ``k`` on its own embeddings."""
        cfg = self.cfg
        sim_matrix = None
        if cfg.loss.rank:  # the first RANK_PHOTOS photos of the batch against all its clips
            m = min(len(ei), RANK_PHOTOS)
            pairs_i = ei[:m].repeat_interleave(len(em), dim=0)
            sim_matrix = self.model.similarity(pairs_i, em.repeat(m, 1), k).view(m, len(em))
        categories = None
        if self.category_heads is not None and self.categories is not None:
            target, mask = self.categories
            categories = (
                self.category_heads[k](ei),
                torch.from_numpy(target[ii]).to(self.device),
                torch.from_numpy(mask[ii]).to(self.device),
            )
        return total_loss(
            cfg.loss,
            ei=ei,
            em=em,
            vi=vi,
            vm=vm,
            sim_pred=self.model.similarity(ei, em, k),
            sim_true=s_true,
            va_i_pred=self.model.va(ei, k),
            va_m_pred=self.model.va(em, k),
            music_weight=wm,
            sim_matrix=sim_matrix,
            sigma=self.data.sigma,
            categories=categories,
        )

    def train_epoch(self) -> dict:
        cfg, data = self.cfg, self.data
        rng = np.random.default_rng(cfg.seed * 1000 + self.epoch)
        self.model.train()
        if self._top_blocks("image"):  # a tuned top keeps its BN statistics and drops no connections
            self.model.image_branch.backbone.eval()
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
            hi, ai = self.parts("image", ii, True, rng)
            hm, am = self.parts("music", ci, True, rng)
            vi = torch.from_numpy(data.images.va[ii]).to(self.device)
            vm = torch.from_numpy(data.music.va[ci]).to(self.device)
            wm = torch.from_numpy(np.where(data.music.weak[ci], cfg.data.weak_weight, 1.0)).float().to(self.device)
            loss = torch.zeros((), device=self.device)
            parts: dict[str, float] = {}
            for k in range(cfg.model.members):  # each member trained alone on the same batch
                member_loss, member_parts = self._member_loss(
                    k,
                    self.model.image_branch.head(hi, ai, k),
                    self.model.music_branch.head(hm, am, k),
                    ii,
                    vi,
                    vm,
                    wm,
                    s_true,
                )
                loss = loss + member_loss
                for name, value in member_parts.items():
                    parts[name] = parts.get(name, 0.0) + value / cfg.model.members
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value
            totals["total"] = totals.get("total", 0.0) + float(loss.detach()) / cfg.model.members
            bar.set_postfix(loss=f"{totals['total'] / (step + 1):.4f}")
        self.sched.step()
        out = {k: v / max(1, steps) for k, v in totals.items()}
        out["steps"] = steps
        out["seconds"] = time.perf_counter() - t0
        return out

    @torch.inference_mode()
    def embed_eval(self, kind: str, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and calibrated VA in eval mode, through the frozen-backbone cache."""
        self.model.eval()
        embs, vas = [], []
        for s in range(0, len(idx), 512):
            e = self.embed(kind, idx[s : s + 512], train=False)
            embs.append(e.cpu())
            va = self.model.image_va(e) if kind == "image" else self.model.music_va(e)
            vas.append(va.cpu())
        if not embs:
            return np.zeros((0, self.cfg.model.space_dim), np.float32), np.zeros((0, 2), np.float32)
        return torch.cat(embs).numpy(), torch.cat(vas).numpy()

    def validate(self) -> dict:
        return score_split(self.model, self.data, "val", self.device, self.cfg.model.image_size, embed=self.embed_eval)

    def fill_query_bank(self) -> None:
        """Store the embeddings of ``model.query_bank`` training photos (seeded sample) in the
        checkpoint, for the service's querybank normalisation of song scores."""
        n = self.cfg.model.query_bank
        if n <= 0:
            return
        train = np.nonzero(self.data.images.split == SPLITS["train"])[0]
        pick = np.sort(np.random.default_rng(self.cfg.seed).choice(train, min(n, len(train)), replace=False))
        emb, _ = self.embed_eval("image", pick)
        bank = torch.zeros_like(self.model.query_bank)
        bank[: len(emb)] = torch.from_numpy(emb)
        self.model.query_bank.copy_(bank)

    def calibrate(self) -> dict[str, list[float]]:
        """Fit the per-modality VA affine maps on the validation split (training data when
        there is none): predictions get the labels' mean and spread. Weak (quadrant) music
        targets are left out, their 0.25/0.75 values are not a spread to match."""
        out = {}
        code = SPLITS["val"] if self.data.val_pairs is not None else SPLITS["train"]
        for kind, buf in (("image", self.model.image_va_affine), ("music", self.model.music_va_affine)):
            buf.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
            if kind == "image":
                idx, truth = np.nonzero(self.data.images.split == code)[0], self.data.images.va
            else:
                keep = (self.data.music.split == code) & ~self.data.music.weak
                idx, truth = np.nonzero(keep)[0], self.data.music.va
            if len(idx) < 10:
                continue
            _, pred = self.embed_eval(kind, idx)
            y = truth[idx]
            scale = y.std(0) / np.maximum(pred.std(0), 1e-3)
            shift = y.mean(0) - scale * pred.mean(0)
            buf.copy_(torch.from_numpy(np.stack([scale, shift]).astype(np.float32)))
            out[kind] = [round(float(v), 4) for v in (*scale, *shift)]
        log.info("VA calibration (scale V, A, shift V, A): %s", out)
        return out

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
            calibration = self.calibrate()
            self.fill_query_bank()
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
                    self.meta({"val": val, "epoch": self.epoch, "va_calibration": calibration}),
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
    best = Trainer(cfg, data, out, progress).fit()
    export_onnx(best)  # serving and indexing run the ONNX graphs beside the checkpoint
    return best
