"""Independent golden reference for vitserve: eval-mode forward passes in plain PyTorch.

A timm-style ViT / DeiT (LayerNorm eps 1e-6, exact erf GELU, optional DeiT distillation
token) written from scratch on a plain ``dict`` of timm-named tensors, with the inference
behaviour of the token-reduction methods vitserve serves, as their official evaluation code
does it:

* ``dense``      -- the unpruned model.
* ``dynamicvit`` -- raoyongming/DynamicViT ``models/dyvit.py``: predictors before the
  pruning blocks, ``int(N0 * rho**(p+1))`` patch tokens kept by ``argsort`` of the
  log-softmax keep score (score order, CLS prepended).
* ``evit``       -- youweiliang/evit ``evit.py``: after attention + residual of a pruning
  block keep ``ceil(rho * (N - 1))`` non-CLS tokens by head-mean CLS attention and append
  the attention-weighted sum of the dropped ones as a fused token.
* ``tome``       -- facebookresearch/ToMe ``tome/merge.py`` + ``tome/patch/timm.py``:
  bipartite soft matching on head-mean keys in every block, size-weighted merge,
  proportional attention.
* ``tnt``        -- mx-ethan-rao/tnt ``models.py`` (deterministic path, no random
  similarity pre-prune): after a pruning block keep ``int(n_patches * rate)`` patch
  tokens by softmax of ``alpha_heads.{i}``.
* ``svite``      -- VITA-Group/SViTE ``vision_transformer_data.py``: the ``gumbel``
  selector scores all tokens after ``pos_embed``; top-k without Gumbel noise, CLS forced
  on, the other tokens are multiplied by zero and stay in the sequence.  Head / MLP
  masks are expected to be already applied to the weights (as in released checkpoints).
* ``trilevel``   -- ZLKong/Tri-Level-ViT ``models/models_attn_tok.py``: masked softmax
  with eps in every block, token pruning by CLS attention (no fusion), attention-level
  key pruning whose mask is reused until the next pruning block.

Every entry point returns the logits and, per image, the token counts at the input and
after each reduction point (tokens incl. CLS / dist / fused).  The functions also record
*decision margins* (gap between the last kept and the first dropped score) so that
fixture generation can prove its decisions are far from ties.

Only torch is used; the code runs in float32 or float64 (whatever dtype the weights have).
"""

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]

METHODS = ("dense", "dynamicvit", "evit", "tome", "tnt", "svite", "trilevel")

#: timm ViT / DeiT LayerNorm epsilon.
VIT_LN_EPS = 1e-6
#: DynamicViT's predictor uses a default nn.LayerNorm (eps 1e-5).
PREDICTOR_LN_EPS = 1e-5
#: Tri-Level E-ViT's masked softmax epsilon.
TRILEVEL_EPS = 1e-6


@dataclass
class ViTConfig:
    """Shape of a timm ViT / DeiT."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    num_classes: int = 1000
    patch_size: int = 16
    image_size: int = 224
    in_chans: int = 3
    mlp_ratio: float = 4.0
    distilled: bool = False

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix(self) -> int:
        """CLS (+ distillation token)."""
        return 2 if self.distilled else 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


def default_locations(method: str, depth: int) -> List[int]:
    """Reduction blocks: depth/4, 2*depth/4, 3*depth/4 (3, 6, 9 for 12); ToMe: all."""
    if method == "dense":
        return []
    if method == "tome":
        return list(range(depth))
    if method == "svite":
        return [0]
    return [depth // 4, 2 * depth // 4, 3 * depth // 4]


@dataclass
class RunInfo:
    """What a forward pass did besides producing logits."""

    #: tokens_per_stage[b] = counts for image b (input, then after each reduction).
    tokens_per_stage: List[List[int]] = field(default_factory=list)
    #: Smallest gap between the last kept and the first dropped score, per decision kind.
    margins: Dict[str, float] = field(default_factory=dict)
    #: ToMe merge count actually requested.
    tome_r: int = 0
    #: Compute margins (extra work; off for benchmarking).
    track_margins: bool = True

    def note_margin(self, kind: str, compute: Callable[[], float]) -> None:
        """Records compute() (a decision margin) if smaller than the one seen so far."""
        if not self.track_margins:
            return
        value = compute()
        if value < self.margins.get(kind, math.inf):
            self.margins[kind] = value


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def _ln(x: Tensor, sd: StateDict, name: str, eps: float = VIT_LN_EPS) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], eps)


def _linear(x: Tensor, sd: StateDict, name: str) -> Tensor:
    return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))


def _gelu(x: Tensor) -> Tensor:
    return F.gelu(x)  # exact (erf) GELU, as nn.GELU()


def _topk_margin(scores: Tensor, k: int) -> float:
    """Smallest gap (over the batch) between the k-th and (k+1)-th largest score."""
    n = scores.shape[-1]
    if k <= 0 or k >= n:
        return math.inf
    top = torch.topk(scores, k + 1, dim=-1, largest=True, sorted=True).values
    return float((top[..., k - 1] - top[..., k]).min())


def _gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, C], idx [B, K] -> [B, K, C]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _qkv(xn: Tensor, sd: StateDict, p: str, cfg: ViTConfig) -> Tuple[Tensor, Tensor, Tensor]:
    b, n, c = xn.shape
    qkv = _linear(xn, sd, p + "attn.qkv").reshape(b, n, 3, cfg.num_heads, c // cfg.num_heads)
    qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, N, d]
    return qkv[0], qkv[1], qkv[2]


def _attn_out(attn: Tensor, v: Tensor, sd: StateDict, p: str) -> Tensor:
    b, _, n, _ = attn.shape
    out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
    return _linear(out, sd, p + "attn.proj")


def _mlp(x: Tensor, sd: StateDict, p: str) -> Tensor:
    return _linear(_gelu(_linear(_ln(x, sd, p + "norm2"), sd, p + "mlp.fc1")), sd, p + "mlp.fc2")


def embed(images: Tensor, sd: StateDict, cfg: ViTConfig) -> Tensor:
    """Patch embedding, CLS (+ dist) token, position embedding -> [B, P + N0, C]."""
    w = sd["patch_embed.proj.weight"]
    x = F.conv2d(images.to(w.dtype), w, sd["patch_embed.proj.bias"], stride=cfg.patch_size)
    x = x.flatten(2).transpose(1, 2)
    b = x.shape[0]
    prefix = [sd["cls_token"].expand(b, -1, -1)]
    if cfg.distilled:
        prefix.append(sd["dist_token"].expand(b, -1, -1))
    x = torch.cat(prefix + [x], dim=1)
    return x + sd["pos_embed"]


def head(x: Tensor, sd: StateDict, cfg: ViTConfig) -> Tensor:
    """Final norm and classifier(s) on the prefix tokens; eval mean of both DeiT heads."""
    x = _ln(x, sd, "norm")
    logits = _linear(x[:, 0], sd, "head")
    if cfg.distilled:
        logits = (logits + _linear(x[:, 1], sd, "head_dist")) / 2
    return logits


def plain_block(x: Tensor, sd: StateDict, i: int, cfg: ViTConfig) -> Tensor:
    """A timm block with a plain softmax."""
    p = f"blocks.{i}."
    q, k, v = _qkv(_ln(x, sd, p + "norm1"), sd, p, cfg)
    attn = ((q @ k.transpose(-2, -1)) * cfg.head_dim**-0.5).softmax(dim=-1)
    x = x + _attn_out(attn, v, sd, p)
    return x + _mlp(x, sd, p)


# ---------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------


def _dense(x: Tensor, sd: StateDict, cfg: ViTConfig, info: RunInfo) -> Tensor:
    for i in range(cfg.depth):
        x = plain_block(x, sd, i, cfg)
    return x


def dynamicvit_keep_counts(n0: int, keep_rate: float, stages: int) -> List[int]:
    """Patch tokens kept at each DynamicViT stage: int(N0 * rho**(p+1))."""
    return [int(n0 * keep_rate ** (p + 1)) for p in range(stages)]


def _dynamicvit_predictor(x: Tensor, sd: StateDict, p: int) -> Tensor:
    """Keep score (log-softmax column 0) for the patch tokens x [B, N, C]."""
    pre = f"score_predictor.{p}."
    h = _gelu(_linear(_ln(x, sd, pre + "in_conv.0", PREDICTOR_LN_EPS), sd, pre + "in_conv.1"))
    c = h.shape[-1]
    local = h[:, :, : c // 2]
    # Eval: the policy is all ones, so the global feature is the mean over current tokens.
    glob = h[:, :, c // 2 :].mean(dim=1, keepdim=True).expand(-1, h.shape[1], -1)
    h = torch.cat([local, glob], dim=-1)
    h = _gelu(_linear(h, sd, pre + "out_conv.0"))
    h = _gelu(_linear(h, sd, pre + "out_conv.2"))
    h = _linear(h, sd, pre + "out_conv.4")
    return F.log_softmax(h, dim=-1)[:, :, 0]


def _dynamicvit(
    x: Tensor, sd: StateDict, cfg: ViTConfig, keep_rate: float, locs: Sequence[int], info: RunInfo
) -> Tensor:
    pfx = cfg.num_prefix
    keeps = dynamicvit_keep_counts(cfg.num_patches, keep_rate, len(locs))
    for i in range(cfg.depth):
        if i in locs:
            p = list(locs).index(i)
            score = _dynamicvit_predictor(x[:, pfx:], sd, p)
            keep = keeps[p]
            info.note_margin("dynamicvit_score", lambda: _topk_margin(score, keep))
            idx = torch.argsort(score, dim=1, descending=True)[:, :keep]
            x = torch.cat([x[:, :pfx], _gather_tokens(x[:, pfx:], idx)], dim=1)
            for t in info.tokens_per_stage:
                t.append(x.shape[1])
        x = plain_block(x, sd, i, cfg)
    return x


def evit_keep_count(n_tokens: int, keep_rate: float) -> int:
    """Non-CLS tokens kept by EViT from a sequence of n_tokens (incl. CLS)."""
    return math.ceil(keep_rate * (n_tokens - 1))


def _evit(
    x: Tensor, sd: StateDict, cfg: ViTConfig, keep_rate: float, locs: Sequence[int], info: RunInfo
) -> Tensor:
    if cfg.distilled:
        raise ValueError("EViT's official code has no distillation-token handling")
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        q, k, v = _qkv(_ln(x, sd, p + "norm1"), sd, p, cfg)
        attn = ((q @ k.transpose(-2, -1)) * cfg.head_dim**-0.5).softmax(dim=-1)
        x = x + _attn_out(attn, v, sd, p)
        if i in locs:
            n = x.shape[1]
            left = evit_keep_count(n, keep_rate)
            if keep_rate < 1 and left < n - 1:
                cls_attn = attn[:, :, 0, 1:].mean(dim=1)  # [B, N-1]
                info.note_margin("evit_cls_attn", lambda: _topk_margin(cls_attn, left))
                idx = torch.topk(cls_attn, left, dim=1, largest=True, sorted=True).indices
                non_cls = x[:, 1:]
                kept = _gather_tokens(non_cls, idx)
                drop_mask = torch.ones_like(cls_attn, dtype=torch.bool)
                drop_mask.scatter_(1, idx, False)
                weights = cls_attn * drop_mask.to(cls_attn.dtype)
                fused = (non_cls * weights.unsqueeze(-1)).sum(dim=1, keepdim=True)
                x = torch.cat([x[:, :1], kept, fused], dim=1)
            for t in info.tokens_per_stage:
                t.append(x.shape[1])
        x = x + _mlp(x, sd, p)
    return x


def tome_merge_counts(n0: int, r: int, depth: int, protected: int = 1) -> List[int]:
    """Tokens merged in each block: min(r, (t - protected) // 2) as tokens shrink."""
    out, t = [], n0
    for _ in range(depth):
        ri = max(0, min(r, (t - protected) // 2))
        out.append(ri)
        t -= ri
    return out


def _tome_match(metric: Tensor, r: int, protected: int, info: RunInfo):
    """Bipartite soft matching (ToMe); returns index tensors (unm, src, dst)."""
    metric = metric / metric.norm(dim=-1, keepdim=True)  # no eps, as official
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(-1, -2)
    scores[:, 0, :] = -math.inf  # CLS (always in A at index 0)
    if protected == 2:
        scores[:, :, 0] = -math.inf  # dist token (B index 0)
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)
    # Decision margins: r-th vs (r+1)-th edge, and best vs second-best B match of merged A.
    info.note_margin("tome_edge", lambda: _topk_margin(node_max[:, 1:], r))
    src_idx = edge_idx[:, :r]
    if scores.shape[-1] >= 2:

        def best_vs_second() -> float:
            top2 = torch.topk(scores, 2, dim=-1).values
            return float(torch.gather(top2[..., 0] - top2[..., 1], 1, src_idx).min())

        info.note_margin("tome_match", best_vs_second)
    unm_idx = edge_idx[:, r:].sort(dim=1).values  # CLS first, then original order
    dst_idx = torch.gather(node_idx, 1, src_idx)
    return unm_idx, src_idx, dst_idx


def _tome_apply(x: Tensor, unm_idx: Tensor, src_idx: Tensor, dst_idx: Tensor, protected: int):
    """Sum-merge x's A tokens src -> B tokens dst; order [unm A..., B...]."""
    src, dst = x[:, ::2], x[:, 1::2]
    unm = _gather_tokens(src, unm_idx)
    moved = _gather_tokens(src, src_idx)
    dst = dst.scatter_add(1, dst_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]), moved)
    if protected == 2:
        return torch.cat([unm[:, :1], dst[:, :1], unm[:, 1:], dst[:, 1:]], dim=1)
    return torch.cat([unm, dst], dim=1)


def _tome(
    x: Tensor, sd: StateDict, cfg: ViTConfig, r: int, locs: Sequence[int], info: RunInfo
) -> Tensor:
    protected = cfg.num_prefix
    size: Optional[Tensor] = None  # [B, N, 1]
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        q, k, v = _qkv(_ln(x, sd, p + "norm1"), sd, p, cfg)
        logits = (q @ k.transpose(-2, -1)) * cfg.head_dim**-0.5
        if size is not None:  # proportional attention
            logits = logits + size.log()[:, None, None, :, 0]
        x = x + _attn_out(logits.softmax(dim=-1), v, sd, p)
        if i in locs:
            t = x.shape[1]
            ri = min(r, (t - protected) // 2)
            if ri > 0:
                unm, src, dst = _tome_match(k.mean(dim=1), ri, protected, info)
                if size is None:
                    size = torch.ones_like(x[..., :1])
                x = _tome_apply(x * size, unm, src, dst, protected)
                size = _tome_apply(size, unm, src, dst, protected)
                x = x / size
            for tps in info.tokens_per_stage:
                tps.append(x.shape[1])
        x = x + _mlp(x, sd, p)
    return x


def _tnt(
    x: Tensor, sd: StateDict, cfg: ViTConfig, keep_rate: float, locs: Sequence[int], info: RunInfo
) -> Tensor:
    pfx = cfg.num_prefix
    for i in range(cfg.depth):
        x = plain_block(x, sd, i, cfg)
        if i in locs:
            if keep_rate != 1.0:
                num = int((x.shape[1] - pfx) * keep_rate)
                logit = _linear(x[:, pfx:], sd, f"alpha_heads.{i}").squeeze(-1)
                info.note_margin("tnt_alpha_logit", lambda: _topk_margin(logit, num))
                alpha = logit.softmax(dim=-1)
                idx = torch.topk(alpha, num, dim=1, largest=True, sorted=True).indices
                x = torch.cat([x[:, :pfx], _gather_tokens(x[:, pfx:], idx)], dim=1)
            for t in info.tokens_per_stage:
                t.append(x.shape[1])
    return x


def svite_select_count(n_tokens: int, keep_rate: float) -> int:
    """k of SViTE's top-k selector for a keep-rate (all tokens incl. CLS are ranked)."""
    return int(n_tokens * keep_rate)


def _svite_mask(scores: Tensor, k: int, info: RunInfo, kind: str) -> Tensor:
    """0/1 [B, N] mask: top-k by score, CLS forced on."""
    info.note_margin(kind, lambda: _topk_margin(scores, k))
    idx = torch.topk(scores, k, dim=1).indices
    mask = torch.zeros_like(scores)
    mask.scatter_(1, idx, 1.0)
    mask[:, 0] = 1.0
    return mask


def _svite(x: Tensor, sd: StateDict, cfg: ViTConfig, keep_rate: float, info: RunInfo) -> Tensor:
    if cfg.distilled:
        raise ValueError("SViTE's token-selection model has no distillation token")
    n = x.shape[1]
    k = svite_select_count(n, keep_rate)
    if k < n:
        scores = _linear(x, sd, "gumbel").squeeze(-1)  # log_softmax is monotonic: skipped
        mask = _svite_mask(scores, k, info, "svite_selector")
        x = x * mask.unsqueeze(-1)
        kept = mask.sum(dim=1).to(torch.int64).tolist()
    else:
        kept = [n] * x.shape[0]
    for t, c in zip(info.tokens_per_stage, kept):
        t.append(int(c))
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        xn = _ln(x, sd, p + "norm1")
        # vision_transformer_data.py also re-selects inside every attention when the
        # checkpoint has per-block selectors; applied only if they are present.
        if k < n and p + "attn.gumbel.weight" in sd:
            s = _linear(xn, sd, p + "attn.gumbel").squeeze(-1)
            xn = xn * _svite_mask(s, k, info, "svite_block_selector").unsqueeze(-1)
        q, kk, v = _qkv(xn, sd, p, cfg)
        attn = ((q @ kk.transpose(-2, -1)) * cfg.head_dim**-0.5).softmax(dim=-1)
        x = x + _attn_out(attn, v, sd, p)
        x = x + _mlp(x, sd, p)
    return x


def trilevel_keep_count(n_patches: int, ratio: float) -> int:
    return math.ceil(n_patches * ratio)


def _trilevel(
    x: Tensor,
    sd: StateDict,
    cfg: ViTConfig,
    keep_rate: float,
    attn_ratio: float,
    locs: Sequence[int],
    info: RunInfo,
) -> Tensor:
    if cfg.distilled:
        raise ValueError("Tri-Level E-ViT's official code has no distillation token")
    b = x.shape[0]
    n1 = x.shape[1]
    mask = torch.ones(b, n1, n1, dtype=x.dtype, device=x.device)
    ratio_attn = attn_ratio if attn_ratio > 0 else 1.0  # 0 = attention level off
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        q, k, v = _qkv(_ln(x, sd, p + "norm1"), sd, p, cfg)
        n = x.shape[1]
        logits = (q @ k.transpose(-2, -1)) * cfg.head_dim**-0.5
        a = (logits - logits.max(dim=-1, keepdim=True).values).exp() * mask.unsqueeze(1)
        attn = (a + TRILEVEL_EPS / n) / (a.sum(dim=-1, keepdim=True) + TRILEVEL_EPS)
        x = x + _attn_out(attn, v, sd, p)
        if i in locs:
            cls_attn = attn[:, :, 0, 1:].sum(dim=1) / cfg.num_heads
            patch_attn = attn[:, :, 1:, 1:].sum(dim=1) / cfg.num_heads
            keep = trilevel_keep_count(cls_attn.shape[1], keep_rate)
            info.note_margin("trilevel_cls_attn", lambda: _topk_margin(cls_attn, keep))
            idx = torch.topk(cls_attn, keep, dim=1).indices
            x = torch.cat([x[:, :1], _gather_tokens(x[:, 1:], idx)], dim=1)
            pa = torch.gather(patch_attn, 1, idx.unsqueeze(-1).expand(-1, -1, patch_attn.shape[2]))
            pa = torch.gather(pa, 2, idx.unsqueeze(1).expand(-1, keep, -1))
            k_attn = math.ceil(keep * ratio_attn)
            kth = torch.topk(pa, k_attn, dim=2).values[:, :, -1:]
            if k_attn < keep:

                def rel_gap() -> float:
                    # Values equal to the k-th are kept (ties keep more): the decision is
                    # only fragile for values *near* but not equal to it; relative gap.
                    gap = (pa - kth).abs()
                    gap = torch.where(gap == 0, torch.full_like(gap, math.inf), gap) / kth
                    return float(gap.min())

                info.note_margin("trilevel_attn_rel", rel_gap)
            mask = torch.ones(b, keep + 1, keep + 1, dtype=x.dtype, device=x.device)
            mask[:, 1:, 1:] = (pa >= kth).to(x.dtype)
            for t in info.tokens_per_stage:
                t.append(x.shape[1])
        x = x + _mlp(x, sd, p)
    return x


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def forward(
    sd: StateDict,
    cfg: ViTConfig,
    images: Tensor,
    method: str = "dense",
    keep_rate: float = 1.0,
    locations: Optional[Sequence[int]] = None,
    attn_ratio: float = 0.0,
    tome_r: Optional[int] = None,
    track_margins: bool = True,
) -> Tuple[Tensor, RunInfo]:
    """Eval-mode forward of `method` at `keep_rate`.

    Args:
      sd: timm-named state dict (plus the method's own keys); its dtype is used.
      cfg: the architecture.
      images: [B, 3, H, W] preprocessed images.
      method: one of METHODS.
      keep_rate: in (0, 1]; 1 = the method's dense schedule.
      locations: reduction blocks (method default if None).  DynamicViT: predictor runs
        *before* these blocks; EViT / Tri-Level: inside them (after attention); TNT: after
        them; ToMe: blocks that merge.  Ignored by dense and SViTE.
      attn_ratio: Tri-Level attention-level keep ratio (0 = off).
      tome_r: ToMe merge count; default tome_r_for_keep_rate(cfg, keep_rate).
      track_margins: record decision margins in RunInfo (costs extra top-k calls).

    Returns:
      (logits [B, classes], RunInfo with tokens_per_stage per image and margins).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate {keep_rate} not in (0, 1]")
    locs = list(default_locations(method, cfg.depth) if locations is None else locations)
    x = embed(images, sd, cfg)
    info = RunInfo(
        tokens_per_stage=[[x.shape[1]] for _ in range(x.shape[0])], track_margins=track_margins
    )
    if method == "dense":
        x = _dense(x, sd, cfg, info)
    elif method == "dynamicvit":
        x = _dynamicvit(x, sd, cfg, keep_rate, locs, info)
    elif method == "evit":
        x = _evit(x, sd, cfg, keep_rate, locs, info)
    elif method == "tome":
        r = tome_r_for_keep_rate(cfg, keep_rate) if tome_r is None else tome_r
        info.tome_r = r
        x = _tome(x, sd, cfg, r, locs, info)
    elif method == "tnt":
        x = _tnt(x, sd, cfg, keep_rate, locs, info)
    elif method == "svite":
        x = _svite(x, sd, cfg, keep_rate, info)
    elif method == "trilevel":
        x = _trilevel(x, sd, cfg, keep_rate, attn_ratio, locs, info)
    return head(x, sd, cfg), info


# ---------------------------------------------------------------------------------------
# Cost model (the papers' MAC counting) and the ToMe keep-rate -> r rule
# ---------------------------------------------------------------------------------------


def block_macs(n_attn: int, n_mlp: int, cfg: ViTConfig) -> int:
    """4*Na*C^2 + 2*Na^2*C (qkv, proj, QK^T, AV) + 2*Nm*C*H_mlp (fc1, fc2)."""
    c = cfg.embed_dim
    return 4 * n_attn * c * c + 2 * n_attn * n_attn * c + 2 * n_mlp * c * cfg.mlp_hidden


def _embed_head_macs(cfg: ViTConfig) -> int:
    heads = 2 if cfg.distilled else 1
    patch = cfg.num_patches * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2
    return patch + heads * cfg.embed_dim * cfg.num_classes


def dynamicvit_schedule_macs(cfg: ViTConfig, keep_rate: float, overheads: bool = False) -> int:
    """MACs of the 3-stage DynamicViT schedule (predictor MLPs only if `overheads`)."""
    locs = default_locations("dynamicvit", cfg.depth)
    keeps = dynamicvit_keep_counts(cfg.num_patches, keep_rate, len(locs))
    n, total, c = cfg.num_prefix + cfg.num_patches, _embed_head_macs(cfg), cfg.embed_dim
    for i in range(cfg.depth):
        if i in locs:
            p = locs.index(i)
            if overheads:  # in_conv C^2, out_conv C^2/2 + C^2/8 + C/2 per patch token
                total += (n - cfg.num_prefix) * (c * c + c * c // 2 + c * c // 8 + c // 2)
            n = cfg.num_prefix + keeps[p]
        total += block_macs(n, n, cfg)
    return total


def tome_macs(cfg: ViTConfig, r: int, overheads: bool = False) -> int:
    """MACs with ToMe merging r tokens per block (similarity matmul only if `overheads`)."""
    n, total = cfg.num_prefix + cfg.num_patches, _embed_head_macs(cfg)
    for ri in tome_merge_counts(n, r, cfg.depth, cfg.num_prefix):
        total += block_macs(n, n - ri, cfg)
        if overheads and ri > 0:
            total += ((n + 1) // 2) * (n // 2) * cfg.head_dim
        n -= ri
    return total


def tome_r_for_keep_rate(cfg: ViTConfig, keep_rate: float, overheads: bool = False) -> int:
    """The r whose MACs come closest to the DynamicViT-style schedule (ties: smaller r)."""
    if keep_rate >= 1.0:
        return 0
    target = dynamicvit_schedule_macs(cfg, keep_rate, overheads)
    best_r, best_d = 0, math.inf
    for r in range((cfg.num_patches + cfg.num_prefix) // 2 + 1):
        d = abs(tome_macs(cfg, r, overheads) - target)
        if d < best_d:
            best_r, best_d = r, d
    return best_r
