"""The peer benchmark's model: a timm ViT / DeiT eval forward as a plain nn.Module that
torch.onnx.export (python3-torch 1.13) can trace, for dense, DynamicViT, EViT and ToMe at a
fixed keep-rate, the graphs their official evaluation code runs.

Every shape except the batch is a Python int fixed at construction (token counts per stage
are fixed at a fixed keep-rate: DynamicViT and EViT keep a fixed top-k per stage, ToMe
merges a fixed r per block), so the exported graph has one dynamic axis, the batch. A
layer_norm whose normalized_shape comes from a traced tensor's shape does not export; this
module uses ints throughout. The math follows tests/golden/reference.py (checked by
export.py --check against it):

* dynamicvit: predictor before each location, top-k of the log-softmax keep score
  (= argsort[:, :k], score order), CLS prepended.
* evit: after attention + residual of a location, top-k non-CLS tokens by head-mean CLS
  attention plus one fused token (attention-weighted sum of the dropped ones).
* tome: bipartite soft matching on head-mean keys in every location block, size-weighted
  merge (scatter_add -> ONNX ScatterElements with reduction=add, opset 16), proportional
  attention.
"""

import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "..", "tests", "golden"))
import reference  # noqa: E402

Tensor = torch.Tensor


class PeerViT(nn.Module):
    """Eval forward of `method` at `keep_rate` on timm-named weights `sd` (float32)."""

    def __init__(
        self,
        sd: Dict[str, Tensor],
        cfg: reference.ViTConfig,
        method: str,
        keep_rate: float = 1.0,
        locations: Optional[Sequence[int]] = None,
        tome_r: Optional[int] = None,
    ):
        super().__init__()
        if method not in ("dense", "dynamicvit", "evit", "tome"):
            raise ValueError(f"peer model has no {method!r}")
        self.cfg, self.method, self.keep_rate = cfg, method, keep_rate
        self.locs: List[int] = list(
            reference.default_locations(method, cfg.depth) if locations is None else locations
        )
        if method == "tome":
            self.r = reference.tome_r_for_keep_rate(cfg, keep_rate) if tome_r is None else tome_r
        # Plain tensors (not parameters): traced as initializers of the ONNX graph.
        self.w = {k: v.detach().float().contiguous() for k, v in sd.items()}
        self.c, self.h, self.d = cfg.embed_dim, cfg.num_heads, cfg.head_dim
        self.scale = cfg.head_dim**-0.5

    # --- building blocks ---------------------------------------------------------------

    def ln(self, x: Tensor, name: str, eps: float = reference.VIT_LN_EPS) -> Tensor:
        w = self.w[name + ".weight"]
        return F.layer_norm(x, (int(w.numel()),), w, self.w[name + ".bias"], eps)

    def lin(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))

    def attention(self, x: Tensor, p: str, n: int, key_bias: Optional[Tensor] = None):
        """Returns (proj(attn · v), attn probs [B, H, n, n], keys [B, H, n, d])."""
        qkv = self.lin(self.ln(x, p + "norm1"), p + "attn.qkv")
        qkv = qkv.reshape(-1, n, 3, self.h, self.d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = (q @ k.transpose(-2, -1)) * self.scale
        if key_bias is not None:
            logits = logits + key_bias
        attn = logits.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, n, self.c)
        return self.lin(out, p + "attn.proj"), attn, k

    def mlp(self, x: Tensor, p: str) -> Tensor:
        h = F.gelu(self.lin(self.ln(x, p + "norm2"), p + "mlp.fc1"))
        return self.lin(h, p + "mlp.fc2")

    def embed(self, images: Tensor) -> Tensor:
        cfg = self.cfg
        x = F.conv2d(images, self.w["patch_embed.proj.weight"], self.w["patch_embed.proj.bias"],
                     stride=cfg.patch_size)
        x = x.flatten(2).transpose(1, 2)
        prefix = [self.w["cls_token"].expand(x.shape[0], -1, -1)]
        if cfg.distilled:
            prefix.append(self.w["dist_token"].expand(x.shape[0], -1, -1))
        return torch.cat(prefix + [x], dim=1) + self.w["pos_embed"]

    def head(self, x: Tensor) -> Tensor:
        x = self.ln(x, "norm")
        logits = self.lin(x[:, 0], "head")
        if self.cfg.distilled:
            logits = (logits + self.lin(x[:, 1], "head_dist")) / 2
        return logits

    @staticmethod
    def gather(x: Tensor, idx: Tensor, width: int) -> Tensor:
        return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, width))

    # --- methods -----------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        x = self.embed(images)
        n = self.cfg.num_prefix + self.cfg.num_patches
        x = getattr(self, "_" + self.method)(x, n)
        return self.head(x)

    def _dense(self, x: Tensor, n: int) -> Tensor:
        for i in range(self.cfg.depth):
            p = f"blocks.{i}."
            x = x + self.attention(x, p, n)[0]
            x = x + self.mlp(x, p)
        return x

    def _predictor(self, x: Tensor, stage: int, n: int) -> Tensor:
        pre = f"score_predictor.{stage}."
        h = F.gelu(self.lin(self.ln(x, pre + "in_conv.0", reference.PREDICTOR_LN_EPS),
                            pre + "in_conv.1"))
        half = self.c // 2
        glob = h[:, :, half:].mean(dim=1, keepdim=True).expand(-1, n, -1)
        h = torch.cat([h[:, :, :half], glob], dim=-1)
        h = F.gelu(self.lin(h, pre + "out_conv.0"))
        h = F.gelu(self.lin(h, pre + "out_conv.2"))
        return F.log_softmax(self.lin(h, pre + "out_conv.4"), dim=-1)[:, :, 0]

    def _dynamicvit(self, x: Tensor, n: int) -> Tensor:
        pfx = self.cfg.num_prefix
        keeps = reference.dynamicvit_keep_counts(self.cfg.num_patches, self.keep_rate,
                                                 len(self.locs))
        for i in range(self.cfg.depth):
            p = f"blocks.{i}."
            if i in self.locs:
                keep = keeps[self.locs.index(i)]
                score = self._predictor(x[:, pfx:], self.locs.index(i), n - pfx)
                idx = torch.topk(score, keep, dim=1, largest=True, sorted=True).indices
                x = torch.cat([x[:, :pfx], self.gather(x[:, pfx:], idx, self.c)], dim=1)
                n = pfx + keep
            x = x + self.attention(x, p, n)[0]
            x = x + self.mlp(x, p)
        return x

    def _evit(self, x: Tensor, n: int) -> Tensor:
        for i in range(self.cfg.depth):
            p = f"blocks.{i}."
            out, attn, _ = self.attention(x, p, n)
            x = x + out
            left = reference.evit_keep_count(n, self.keep_rate)
            if i in self.locs and self.keep_rate < 1 and left < n - 1:
                cls_attn = attn[:, :, 0, 1:].mean(dim=1)  # [B, n-1]
                idx = torch.topk(cls_attn, left, dim=1, largest=True, sorted=True).indices
                non_cls = x[:, 1:]
                kept = self.gather(non_cls, idx, self.c)
                drop = torch.ones_like(cls_attn).scatter(1, idx, torch.zeros_like(idx).to(x.dtype))
                fused = (non_cls * (cls_attn * drop).unsqueeze(-1)).sum(dim=1, keepdim=True)
                x = torch.cat([x[:, :1], kept, fused], dim=1)
                n = left + 2
            x = x + self.mlp(x, p)
        return x

    def _tome_merge(self, x, unm_idx, src_idx, dst_idx, width: int) -> Tensor:
        src, dst = x[:, ::2], x[:, 1::2]
        unm = self.gather(src, unm_idx, width)
        moved = self.gather(src, src_idx, width)
        dst = dst.scatter_add(1, dst_idx.unsqueeze(-1).expand(-1, -1, width), moved)
        if self.cfg.num_prefix == 2:
            return torch.cat([unm[:, :1], dst[:, :1], unm[:, 1:], dst[:, 1:]], dim=1)
        return torch.cat([unm, dst], dim=1)

    def _tome(self, x: Tensor, n: int) -> Tensor:
        protected = self.cfg.num_prefix
        size: Optional[Tensor] = None
        for i in range(self.cfg.depth):
            p = f"blocks.{i}."
            bias = None if size is None else size.log()[:, None, None, :, 0]
            out, _, k = self.attention(x, p, n, bias)
            x = x + out
            ri = min(self.r, (n - protected) // 2)
            if i in self.locs and ri > 0:
                metric = k.mean(dim=1)
                metric = metric / metric.norm(dim=-1, keepdim=True)
                a, b = metric[:, ::2], metric[:, 1::2]
                na, nb = (n + 1) // 2, n // 2
                mask = torch.zeros(1, na, nb)
                mask[:, 0, :] = -math.inf
                if protected == 2:
                    mask[:, :, 0] = -math.inf
                scores = a @ b.transpose(-1, -2) + mask
                node_max, node_idx = scores.max(dim=-1)
                edge_idx = torch.topk(node_max, na, dim=-1, largest=True, sorted=True).indices
                unm_idx = edge_idx[:, ri:].sort(dim=1).values
                src_idx = edge_idx[:, :ri]
                dst_idx = torch.gather(node_idx, 1, src_idx)
                if size is None:
                    size = torch.ones_like(x[..., :1])
                x = self._tome_merge(x * size, unm_idx, src_idx, dst_idx, self.c)
                size = self._tome_merge(size, unm_idx, src_idx, dst_idx, 1)
                x = x / size
                n -= ri
            x = x + self.mlp(x, p)
        return x
