#!/usr/bin/python3
"""Self-check of tests/golden/reference.py against hand-derivable facts.

Runs in float64 on a small random model (DeiT-Tiny width, 12 blocks) and checks:
  1. dense == an unpruned forward built separately from torch.nn.TransformerEncoderLayer
     (pre-norm, erf GELU, eps 1e-6) -- no code shared with reference.py;
  2. keep_rate 1.0 reduces to the dense logits where the official code makes that exact:
     EViT, TNT, ToMe (r=0), SViTE (k = all tokens): no reduction at all; DynamicViT keeps
     all 196 tokens but in score order (equal up to summation order); Tri-Level is NOT
     exact: its masked softmax adds eps/N and eps even with an all-ones mask, so it is
     checked to be close (1e-4), not equal;
  3. Tri-Level attention ratio 1.0 == attention level off (every key is >= the row min);
  4. token counts of the papers' examples: DynamicViT 0.7 -> 137/96/67 patches; EViT
     197->140->100->72 (0.7) and 197->100->52->28 (0.5); Tri-Level 196->138->97->68 (0.7);
     TNT counts from the current count; ToMe r per block with the 50% cap;
  5. SViTE: the zeroed tokens the official code keeps are identical, so one zero token
     with multiplicity M (log M added to its attention logit) gives the same logits --
     the load-time compaction a server can do;
  6. the hand-written safetensors writer round-trips;
  7. the cost model reproduces the papers' GMACs (DeiT-S dense 4.6, ToMe r=8/13/16
     3.4/2.7/2.3) and the ToMe keep-rate -> r rule is monotonic.
Exit status 0 when every check passes.
"""

import math
import os
import sys
import tempfile

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden  # noqa: E402
import reference as ref  # noqa: E402

CFG = make_golden.CFG
FAILURES = []


def check(cond: bool, what: str) -> None:
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def nn_forward(sd, cfg: ref.ViTConfig, images: torch.Tensor) -> torch.Tensor:
    """Unpruned ViT from torch.nn building blocks, loaded from the timm-keyed dict."""
    c = cfg.embed_dim
    conv = nn.Conv2d(cfg.in_chans, c, cfg.patch_size, cfg.patch_size).double()
    conv.weight.data.copy_(sd["patch_embed.proj.weight"])
    conv.bias.data.copy_(sd["patch_embed.proj.bias"])
    x = conv(images).flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd["pos_embed"]
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        layer = nn.TransformerEncoderLayer(
            c, cfg.num_heads, cfg.mlp_hidden, dropout=0.0, activation="gelu",
            layer_norm_eps=1e-6, batch_first=True, norm_first=True,
        ).double().eval()
        layer.self_attn.in_proj_weight.data.copy_(sd[p + "attn.qkv.weight"])
        layer.self_attn.in_proj_bias.data.copy_(sd[p + "attn.qkv.bias"])
        layer.self_attn.out_proj.weight.data.copy_(sd[p + "attn.proj.weight"])
        layer.self_attn.out_proj.bias.data.copy_(sd[p + "attn.proj.bias"])
        for ours, theirs in (("mlp.fc1", layer.linear1), ("mlp.fc2", layer.linear2),
                             ("norm1", layer.norm1), ("norm2", layer.norm2)):
            theirs.weight.data.copy_(sd[p + ours + ".weight"])
            theirs.bias.data.copy_(sd[p + ours + ".bias"])
        x = layer(x)
    norm = nn.LayerNorm(c, eps=1e-6).double()
    norm.weight.data.copy_(sd["norm.weight"])
    norm.bias.data.copy_(sd["norm.bias"])
    return norm(x)[:, 0] @ sd["head.weight"].T + sd["head.bias"]


def svite_compacted(sd, cfg: ref.ViTConfig, images: torch.Tensor, keep_rate: float):
    """SViTE computed on kept tokens + ONE zero token of multiplicity M (log M bias)."""
    x = ref.embed(images, sd, cfg)
    n = x.shape[1]
    k = ref.svite_select_count(n, keep_rate)
    scores = (x @ sd["gumbel.weight"].T + sd["gumbel.bias"]).squeeze(-1)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep.scatter_(1, torch.topk(scores, k, dim=1).indices, True)
    keep[:, 0] = True
    outs = []
    for b in range(x.shape[0]):  # per image: kept counts can differ by one (CLS forced)
        kept = x[b : b + 1, keep[b]]
        m = n - kept.shape[1]
        xb = torch.cat([kept, torch.zeros_like(kept[:, :1])], 1)
        bias = torch.zeros(xb.shape[1], dtype=x.dtype)
        bias[-1] = math.log(m) if m > 0 else -math.inf
        for i in range(cfg.depth):
            p = f"blocks.{i}."
            q, kk, v = ref._qkv(ref._ln(xb, sd, p + "norm1"), sd, p, cfg)
            logits = (q @ kk.transpose(-2, -1)) * cfg.head_dim**-0.5 + bias
            xb = xb + ref._attn_out(logits.softmax(-1), v, sd, p)
            xb = xb + ref._mlp(xb, sd, p)
        outs.append(ref.head(xb, sd, cfg))
    return torch.cat(outs)


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    f64 = torch.float64
    base = {k: v.to(f64) for k, v in make_golden.make_backbone(CFG, 11).items()}
    dyn = dict(base)
    make_golden.add_dynamicvit_predictors(dyn, CFG, 12)
    dyn = {k: v.to(f64) for k, v in dyn.items()}
    cfg_d = make_golden.CFG_DISTILLED
    tnt = make_golden.make_backbone(cfg_d, 13)
    make_golden.add_tnt_alpha_heads(tnt, cfg_d, 14)
    tnt = {k: v.to(f64) for k, v in tnt.items()}
    svite = {k: v.to(f64) for k, v in make_golden.make_svite(CFG, 15)[0].items()}
    images = make_golden.make_images(16, batch=2).to(f64)

    # 1. dense against torch.nn.
    dense, info = ref.forward(base, CFG, images, "dense")
    with torch.no_grad():
        d = max_diff(dense, nn_forward(base, CFG, images))
    check(d < 1e-9, f"dense == torch.nn.TransformerEncoderLayer model (max diff {d:.2e})")
    check(info.tokens_per_stage == [[197], [197]], "dense tokens_per_stage == [197]")

    # 2. keep_rate 1.0.
    for method, sd, cfg, tol in (("evit", base, CFG, 0.0), ("tome", base, CFG, 0.0),
                                 ("dynamicvit", dyn, CFG, 1e-9)):
        out, info = ref.forward(sd, cfg, images, method, 1.0)
        d = max_diff(out, dense)
        check(d <= tol, f"{method} keep 1.0 == dense (max diff {d:.2e})")
    dense_d, _ = ref.forward(tnt, cfg_d, images, "dense")
    out, info = ref.forward(tnt, cfg_d, images, "tnt", 1.0)
    check(max_diff(out, dense_d) == 0.0, "tnt keep 1.0 == dense (distilled)")
    check(info.tokens_per_stage[0] == [198] * 4, "tnt keep 1.0 keeps 198 tokens")
    dense_s, _ = ref.forward(svite, CFG, images, "dense")
    out, info = ref.forward(svite, CFG, images, "svite", 1.0)
    check(max_diff(out, dense_s) == 0.0, "svite keep 1.0 == dense on the masked weights")
    out, info = ref.forward(base, CFG, images, "trilevel", 1.0)
    d = max_diff(out, dense)
    check(0 < d < 1e-4, f"trilevel keep 1.0 ~ dense, not exact (eps softmax; diff {d:.2e})")

    # 3. Tri-Level attention ratio 1.0 == off.
    a, _ = ref.forward(base, CFG, images, "trilevel", 0.7, attn_ratio=1.0)
    b, _ = ref.forward(base, CFG, images, "trilevel", 0.7, attn_ratio=0.0)
    check(max_diff(a, b) == 0.0, "trilevel attn_ratio 1.0 == attention level off")
    c, _ = ref.forward(base, CFG, images, "trilevel", 0.7, attn_ratio=0.5)
    check(max_diff(a, c) > 1e-4, "trilevel attn_ratio 0.5 changes the logits")

    # 4. Token counts.
    _, info = ref.forward(dyn, CFG, images, "dynamicvit", 0.7)
    check(info.tokens_per_stage[0] == [197, 138, 97, 68], "DynamicViT 0.7: 137/96/67 patches")
    _, info = ref.forward(base, CFG, images, "evit", 0.7)
    check(info.tokens_per_stage[0] == [197, 140, 100, 72], "EViT 0.7: 197->140->100->72")
    _, info = ref.forward(base, CFG, images, "evit", 0.5)
    check(info.tokens_per_stage[0] == [197, 100, 52, 28], "EViT 0.5: 197->100->52->28")
    _, info = ref.forward(base, CFG, images, "trilevel", 0.7)
    check(info.tokens_per_stage[0] == [197, 139, 98, 69], "Tri-Level 0.7: 196->138->97->68")
    _, info = ref.forward(tnt, cfg_d, images, "tnt", 0.7)
    # int(196*.7)=137, int(137*.7)=95, int(95*.7)=66 patches, + CLS + dist.
    check(info.tokens_per_stage[0] == [198, 139, 97, 68], "TNT 0.7: 137/95/66 patches")
    _, info = ref.forward(base, CFG, images, "tome", 0.7, tome_r=13)
    want, t = [197], 197
    for _ in range(12):
        t -= min(13, (t - 1) // 2)
        want.append(t)
    check(info.tokens_per_stage[0] == want, f"ToMe r=13: {want}")
    _, info = ref.forward(base, CFG, images, "tome", 0.7, tome_r=200)
    check(info.tokens_per_stage[0][1] == 99, "ToMe caps r at (t-1)//2: 197 -> 99")

    # 5. SViTE compaction with log M.
    for kr in (0.7, 0.5):
        out, info = ref.forward(svite, CFG, images, "svite", kr)
        d = max_diff(out, svite_compacted(svite, CFG, images, kr))
        check(d < 1e-9, f"svite {kr}: zero tokens == one token with log M (diff {d:.2e})")
        counts = [t[1] for t in info.tokens_per_stage]
        k = ref.svite_select_count(197, kr)
        check(all(c in (k, k + 1) for c in counts), f"svite {kr}: k or k+1 kept {counts}")

    # 6. safetensors round trip.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64)}
        make_golden.write_safetensors(path, tensors, {"k": "v"})
        back = make_golden.read_safetensors(path)
        check(all(torch.equal(back[k], v) for k, v in tensors.items()), "safetensors round trip")
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        check((8 + n) % 8 == 0, "safetensors data is 8-byte aligned")

    # 7. Cost model against the papers' published numbers, and the ToMe r rule.
    s_cfg = ref.ViTConfig()  # DeiT-S
    check(round(ref.tome_macs(s_cfg, 0) / 1e9, 1) == 4.6, "DeiT-S dense = 4.6 GMACs")
    for r, g in ((8, 3.4), (13, 2.7), (16, 2.3)):
        got = ref.tome_macs(s_cfg, r) / 1e9
        check(round(got, 1) == g, f"DeiT-S ToMe r={r}: {got:.3f} GMACs (published {g})")
    rs = [ref.tome_r_for_keep_rate(s_cfg, kr) for kr in (1.0, 0.9, 0.7, 0.5)]
    check(rs[0] == 0 and rs[1] < rs[2] < rs[3], f"ToMe r for keep 1/.9/.7/.5: {rs}")
    # Informational: whether method overheads enter the rule changes r at some keep-rates.
    for kr in (0.9, 0.7, 0.5):
        print(f"info DeiT-S keep {kr}: ToMe r={ref.tome_r_for_keep_rate(s_cfg, kr)} without "
              f"overheads, {ref.tome_r_for_keep_rate(s_cfg, kr, overheads=True)} with")

    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
