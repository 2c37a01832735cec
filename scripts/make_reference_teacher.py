#!/usr/bin/env python3
"""Writes a small SAM3-shaped reference teacher as an instinct teacher bundle.

SAM3's weights are not available to the project, so every teacher code path (bundle loader, Stage A,
concept distillation, CLoCK memory loss, point/box prompts) runs on this stand-in: seeded random
weights, SAM3's structure and tensor contract at a smaller size. The bundle layout is specified in
docs/teacher-bundle.md.

  /usr/bin/python3 scripts/make_reference_teacher.py --out DIR [--seed 0] [--preset tiny|tiny_q200|sam3]
        [--trunk-only] [--device cpu|cuda] [--baseline-images 64] [--no-verify]

Each boundary (trunk, detector_neck, interactive_neck, grounding, sam_head, concept_bank) is traced
separately in eval mode (fp32), saved, reloaded and checked against the eager model at B=1 and B=3.
No forward creates tensors on a fixed device or with a fixed batch size, so the files run on CPU or
CUDA after .to(device) and for any batch size.
"""
import argparse
import collections
import hashlib
import json
import math
import pathlib
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # S=224, P=14 -> G=16. Windowed blocks use 8x8 windows (2x2 windows); blocks 1 and 3 are global.
    "tiny": dict(image_size=224, patch=14, channels=128, depth=4, heads=4, mlp_ratio=4.625, window=8,
                 global_blocks=(1, 3), pretrain_grid=8, neck_channels=64, enc_layers=2, dec_layers=2,
                 num_queries=16, prompt_length=8, heads_d=4),
}
# SAM3's query count on the tiny trunk: for benchmarks of the concept matcher (docs/performance.md).
PRESETS["tiny_q200"] = dict(PRESETS["tiny"], num_queries=200)
# SAM3's real dimensions (random weights), for GPU throughput benchmarks: 1008 px, patch 14 -> 72x72,
# width 1024, depth 32, 16 heads, 24x24 windows (3x3 per image) with global blocks 7, 15, 23, 31.
# Use with --trunk-only (a Stage-A bundle): calibrating and tracing the heads at this size on a CPU
# would take many minutes.
PRESETS["sam3"] = dict(image_size=1008, patch=14, channels=1024, depth=32, heads=16, mlp_ratio=4.625, window=24,
                       global_blocks=(7, 15, 23, 31), pretrain_grid=24, neck_channels=256, enc_layers=6,
                       dec_layers=6, num_queries=200, prompt_length=32, heads_d=8)

CONCEPTS = ["circle", "square", "triangle", "star", "ring", "cross", "ellipse", "hexagon", "dog", "cat",
            "car", "tree"]
# Token count per concept (SOT + word pieces + EOT), always < prompt_length so padding is exercised.
CONCEPT_TOKENS = [3, 3, 4, 3, 3, 3, 4, 5, 3, 3, 3, 3]


# ------------------------------------------------------------------------------------------------
# Trunk (sam3/model/vitdet.py::ViT at small size; real-valued axial RoPE instead of complex64)
# ------------------------------------------------------------------------------------------------
def rope_tables(head_dim, end_x, end_y, scale, theta=10000.0):
    """cos/sin of SAM3's compute_axis_cis angles: (N, head_dim/2), first half x, second half y."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = (t % end_x) * scale
    t_y = torch.div(t, end_x, rounding_mode="floor") * scale
    ang = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    """Rotates adjacent channel pairs (2i, 2i+1) by angle i, like view_as_complex * freqs_cis."""
    x2 = x.unflatten(-1, (-1, 2))
    a, b = x2[..., 0], x2[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


class TrunkAttention(nn.Module):
    def __init__(self, dim, heads, rope_n, rope_scale):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        side = int(round(math.sqrt(rope_n)))
        cos, sin = rope_tables(dim // heads, side, side, rope_scale)
        self.register_buffer("rope_cos", cos)
        self.register_buffer("rope_sin", sin)

    def forward(self, x):  # (B', N, C)
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = apply_rope(q, self.rope_cos, self.rope_sin)
        k = apply_rope(k, self.rope_cos, self.rope_sin)
        if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0: the fused kernels SAM3 itself uses
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            a = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
            o = a.softmax(-1) @ v
        return self.proj(o.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_hidden, window, grid):
        super().__init__()
        self.window = window  # 0 = global
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        if window:
            self.attn = TrunkAttention(dim, heads, window * window, 1.0)
        else:  # SAM3 scales global positions by window/grid (24/72 = 1/3) to match pretraining.
            self.attn = TrunkAttention(dim, heads, grid * grid, 1.0 * PRESET_WINDOW[0] / grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x):  # (B, G, G, C)
        shortcut = x
        x = self.norm1(x)
        if self.window:
            w = self.window
            n = x.shape[1] // w
            x = x.unflatten(1, (n, w)).unflatten(3, (n, w)).permute(0, 1, 3, 2, 4, 5)
            x = x.flatten(0, 2).flatten(1, 2)  # (B*n*n, w*w, C)
            x = self.attn(x)
            x = x.unflatten(1, (w, w)).unflatten(0, (-1, n, n)).permute(0, 1, 3, 2, 4, 5)
            x = x.flatten(1, 2).flatten(2, 3)
        else:
            g = x.shape[1]
            x = self.attn(x.flatten(1, 2)).unflatten(1, (g, g))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


PRESET_WINDOW = [8]


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch, bias=False)


class Trunk(nn.Module):
    def __init__(self, p):
        super().__init__()
        C, G = p["channels"], p["image_size"] // p["patch"]
        self.grid, self.pretrain_grid = G, p["pretrain_grid"]
        self.patch_embed = PatchEmbed(p["patch"], C)
        # Pretraining-resolution table with a CLS slot; the grid part is tiled to G x G like SAM3's.
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pretrain_grid ** 2, C))
        self.ln_pre = nn.LayerNorm(C, eps=1e-5)
        hidden = int(C * p["mlp_ratio"])
        self.blocks = nn.ModuleList(
            Block(C, p["heads"], hidden, 0 if i in p["global_blocks"] else p["window"], G)
            for i in range(p["depth"]))

    def forward(self, pixels):
        x = self.patch_embed.proj(pixels).permute(0, 2, 3, 1)
        pg, reps = self.pretrain_grid, self.grid // self.pretrain_grid
        pe = self.pos_embed[:, 1:].unflatten(1, (pg, pg)).tile(1, reps, reps, 1)
        x = self.ln_pre(x + pe)
        for blk in self.blocks:
            x = blk(x)
        return x.permute(0, 3, 1, 2).contiguous()  # raw residual stream, no ln_post


def init_trunk(trunk, gen, p):
    """Initialisation that keeps the output a smooth, learnable function of the image: low-frequency
    patch filters, small positional table, attention with O(1) logits but small output projections,
    so the residual stream is patch content plus modest content-dependent mixing."""
    C, P = p["channels"], p["patch"]
    coarse = torch.randn(C, 3, 3, 3, generator=gen)
    w = F.interpolate(coarse, size=(P, P), mode="bilinear", align_corners=True)
    w = w + 0.1 * torch.randn(C, 3, P, P, generator=gen)
    with torch.no_grad():
        trunk.patch_embed.proj.weight.copy_(w / math.sqrt(3 * P * P) * 3.0)
        trunk.pos_embed.copy_(0.05 * torch.randn(trunk.pos_embed.shape, generator=gen))
        for blk in trunk.blocks:
            blk.attn.qkv.weight.copy_(torch.randn(blk.attn.qkv.weight.shape, generator=gen) / math.sqrt(C))
            blk.attn.qkv.bias.copy_(0.02 * torch.randn(3 * C, generator=gen))
            blk.attn.proj.weight.copy_(0.25 * torch.randn(C, C, generator=gen) / math.sqrt(C))
            blk.attn.proj.bias.zero_()
            h = blk.mlp.fc1.weight.shape[0]
            blk.mlp.fc1.weight.copy_(torch.randn(h, C, generator=gen) / math.sqrt(C))
            blk.mlp.fc1.bias.copy_(0.1 * torch.randn(h, generator=gen))
            blk.mlp.fc2.weight.copy_(0.25 * torch.randn(C, h, generator=gen) / math.sqrt(h))
            blk.mlp.fc2.bias.zero_()


# ------------------------------------------------------------------------------------------------
# Necks (sam3/model/necks.py::Sam3DualViTDetNeck, scalp=1: scales 4, 2, 1)
# ------------------------------------------------------------------------------------------------
def neck_stack(C, D, scale):
    layers = collections.OrderedDict()
    if scale == 4:
        layers["dconv_2x2_0"] = nn.ConvTranspose2d(C, C // 2, 2, 2)
        layers["gelu"] = nn.GELU()
        layers["dconv_2x2_1"] = nn.ConvTranspose2d(C // 2, C // 4, 2, 2)
        cin = C // 4
    elif scale == 2:
        layers["dconv_2x2"] = nn.ConvTranspose2d(C, C // 2, 2, 2)
        cin = C // 2
    else:
        cin = C
    layers["conv_1x1"] = nn.Conv2d(cin, D, 1)
    layers["conv_3x3"] = nn.Conv2d(D, D, 3, padding=1)
    return nn.Sequential(layers)


class DetectorNeck(nn.Module):
    def __init__(self, C, D):
        super().__init__()
        self.convs = nn.ModuleList(neck_stack(C, D, s) for s in (4, 2, 1))

    def forward(self, feats):
        return self.convs[0](feats), self.convs[1](feats), self.convs[2](feats)


class InteractiveNeck(nn.Module):
    def __init__(self, C, D):
        super().__init__()
        self.sam2_convs = nn.ModuleList(neck_stack(C, D, s) for s in (4, 2, 1))
        self.conv_s0 = nn.Conv2d(D, D // 8, 1)
        self.conv_s1 = nn.Conv2d(D, D // 4, 1)
        self.no_mem_embed = nn.Parameter(0.02 * torch.randn(1, D, 1, 1))

    def forward(self, feats):
        l0, l1, l2 = (c(feats) for c in self.sam2_convs)
        return l2 + self.no_mem_embed, self.conv_s0(l0), self.conv_s1(l1)


# ------------------------------------------------------------------------------------------------
# Shared attention pieces (batch-first, no batch sizes baked into reshapes)
# ------------------------------------------------------------------------------------------------
class MHA(nn.Module):
    def __init__(self, dim, heads, inner=None):
        super().__init__()
        inner = inner or dim
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q, k, v, key_pad=None):
        q = self.q_proj(q).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k = self.k_proj(k).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        v = self.v_proj(v).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if key_pad is not None:
            s = s.masked_fill(key_pad[:, None, None, :], -1e9)
        o = s.softmax(-1) @ v
        return self.out_proj(o.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, din, dh, dout, n):
        super().__init__()
        dims = [din] + [dh] * (n - 1) + [dout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def sine_pos_2d(D, G, temperature=10000.0):
    """DETR-style parameter-free sine encoding (D, G, G), normalised coordinates."""
    npf = D // 2
    y, x = torch.meshgrid(torch.arange(1, G + 1, dtype=torch.float32),
                          torch.arange(1, G + 1, dtype=torch.float32), indexing="ij")
    y, x = y / G * 2 * math.pi, x / G * 2 * math.pi
    dim_t = temperature ** (2 * torch.div(torch.arange(npf), 2, rounding_mode="floor") / npf)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack([px[..., 0::2].sin(), px[..., 1::2].cos()], dim=3).flatten(2)
    py = torch.stack([py[..., 0::2].sin(), py[..., 1::2].cos()], dim=3).flatten(2)
    return torch.cat([py, px], dim=2).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------------------------------------
# Grounding (Sam3Image.forward_grounding at small size)
# ------------------------------------------------------------------------------------------------
class FusionLayer(nn.Module):
    def __init__(self, D, heads, ffn):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(D), MHA(D, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(D), MHA(D, heads)
        self.norm3, self.ffn = nn.LayerNorm(D), Mlp(D, ffn)

    def forward(self, x, pos, prompt, prompt_pad):
        h = self.norm1(x)
        x = x + self.self_attn(h + pos, h + pos, h)
        x = x + self.cross_attn(self.norm2(x) + pos, prompt, prompt, prompt_pad)
        return x + self.ffn(self.norm3(x))


class DecoderLayer(nn.Module):
    def __init__(self, D, heads, ffn):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(D), MHA(D, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(D), MHA(D, heads)
        self.norm3, self.ffn = nn.LayerNorm(D), Mlp(D, ffn)

    def forward(self, x, qpos, memory, mpos):
        h = self.norm1(x)
        x = x + self.self_attn(h + qpos, h + qpos, h)
        x = x + self.cross_attn(self.norm2(x) + qpos, memory + mpos, memory)
        return x + self.ffn(self.norm3(x))


class Grounding(nn.Module):
    def __init__(self, D, G, Q, heads, enc_layers, dec_layers):
        super().__init__()
        self.D = D
        self.register_buffer("pos", sine_pos_2d(D, G).flatten(1).t().contiguous())  # (G*G, D)
        # Geometry encoder: one CLS token that cross-attends to the image (image-dependent prompt).
        self.geo_cls = nn.Parameter(0.5 * torch.randn(1, 1, D))
        self.geo_attn = MHA(D, heads)
        self.geo_norm = nn.LayerNorm(D)
        self.encoder = nn.ModuleList(FusionLayer(D, heads, 4 * D) for _ in range(enc_layers))
        self.encoder_norm = nn.LayerNorm(D)
        self.query_embed = nn.Parameter(torch.randn(Q, D))
        self.query_pos = nn.Parameter(0.5 * torch.randn(1 + Q, D))
        self.presence_token = nn.Parameter(torch.randn(1, D))
        self.ref_boxes = nn.Parameter(torch.cat([torch.randn(Q, 2), torch.randn(Q, 2) - 1.5], dim=1))
        self.decoder = nn.ModuleList(DecoderLayer(D, heads, 4 * D) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(D)
        self.bbox_embed = MLP(D, D, 4, 3)
        self.presence_head = nn.Linear(D, 1)
        # Scoring (DotProductScoring): MLP-projected prompt, mean-pooled over valid tokens.
        self.prompt_mlp = MLP(D, 2 * D, D, 2)
        self.prompt_norm = nn.LayerNorm(D)
        self.query_proj = nn.Linear(D, D)
        # Segmentation head: pixel decoder over memory + fpn1 + fpn0, D channels at every level, query
        # mask embeddings of D. The finest level (4G x 4G = M) mixes space with a depthwise 3x3 and
        # channels with a 1x1 (depthwise-separable): a dense 3x3 there was half a CPU training step
        # through this head, and narrowing the channels instead cost mask quality at high IoU.
        self.pix_conv1 = nn.Conv2d(D, D, 3, padding=1)
        self.pix_dw2 = nn.Conv2d(D, D, 3, padding=1, groups=D)
        self.pix_pw2 = nn.Conv2d(D, D, 1)
        self.mask_embed = MLP(D, D, D, 3)

    def forward(self, fpn0, fpn1, fpn2, text, text_pad):
        D = self.D
        img = fpn2.flatten(2).transpose(1, 2)  # (B, G*G, D)
        pos = self.pos[None]
        cls = self.geo_cls.expand(img.shape[0], -1, -1)
        cls = self.geo_norm(cls + self.geo_attn(cls, img + pos, img))
        prompt = torch.cat([text, cls], dim=1)
        prompt_pad = torch.cat([text_pad, torch.zeros_like(text_pad[:, :1])], dim=1)
        x = img
        for layer in self.encoder:
            x = layer(x, pos, prompt, prompt_pad)
        memory = self.encoder_norm(x)  # (B, G*G, D)

        tgt = torch.cat([self.presence_token, self.query_embed], dim=0)[None].expand(img.shape[0], -1, -1)
        ref = self.ref_boxes[None]
        h = tgt
        for layer in self.decoder:
            h = layer(h, self.query_pos[None], memory, pos)
            ref = ref + self.bbox_embed(self.decoder_norm(h[:, 1:]))  # refinement in logit space
        h = self.decoder_norm(h)
        queries = h[:, 1:]
        boxes = ref.sigmoid()
        presence = self.presence_head(h[:, 0])

        valid = (~prompt_pad).to(prompt.dtype)[..., None]
        p = self.prompt_norm(self.prompt_mlp(prompt))
        pooled = (p * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        logits = (self.query_proj(queries) @ pooled[..., None]) / math.sqrt(D)
        logits = logits.clamp(-12.0, 12.0)

        G = fpn2.shape[-1]
        mem_map = memory.transpose(1, 2).unflatten(2, (G, G))
        # Nearest 2x upsampling (equal to repeat_interleave(2) on both axes, whose index_select /
        # index_add cost as much as a 64x64 convolution when training through it).
        pix = F.interpolate(mem_map, scale_factor=2.0, mode="nearest") + fpn1
        pix = F.gelu(self.pix_conv1(pix))
        pix = F.interpolate(pix, scale_factor=2.0, mode="nearest") + fpn0
        pix = F.gelu(self.pix_pw2(self.pix_dw2(pix)))
        masks = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(queries), pix) / math.sqrt(D)
        return logits, boxes, masks, presence, memory.transpose(0, 1).contiguous(), queries.contiguous()


# ------------------------------------------------------------------------------------------------
# SAM head (SAM2-style prompt encoder + two-way transformer mask decoder)
# ------------------------------------------------------------------------------------------------
class LayerNorm2d(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SamHead(nn.Module):
    def __init__(self, D, G, S, heads, gen):
        super().__init__()
        self.S = float(S)
        self.register_buffer("pe_gaussian", torch.randn(2, D // 2, generator=gen))
        self.point_embeddings = nn.Parameter(torch.randn(4, D))  # labels 0, 1, 2, 3
        self.not_a_point_embed = nn.Parameter(torch.randn(1, D))
        self.no_mask_embed = nn.Parameter(0.1 * torch.randn(1, D, 1, 1))
        ys, xs = torch.meshgrid(torch.arange(G, dtype=torch.float32), torch.arange(G, dtype=torch.float32),
                                indexing="ij")
        grid = torch.stack([(xs + 0.5) / G, (ys + 0.5) / G], dim=-1)
        self.register_buffer("dense_pe", self._fourier(grid).flatten(0, 1))  # (G*G, D)
        # Output tokens: obj score, iou, 4 mask tokens (SAM2 order).
        self.obj_score_token = nn.Parameter(torch.randn(1, D))
        self.iou_token = nn.Parameter(torch.randn(1, D))
        self.mask_tokens = nn.Parameter(torch.randn(4, D))
        self.self_attn, self.norm1 = MHA(D, heads), nn.LayerNorm(D)
        self.cross_t2i, self.norm2 = MHA(D, heads, D // 2), nn.LayerNorm(D)
        self.mlp, self.norm3 = Mlp(D, 4 * D), nn.LayerNorm(D)
        self.cross_i2t, self.norm4 = MHA(D, heads, D // 2), nn.LayerNorm(D)
        self.final_t2i, self.norm_final = MHA(D, heads, D // 2), nn.LayerNorm(D)
        self.dc1 = nn.ConvTranspose2d(D, D // 4, 2, 2)
        self.ln_up = LayerNorm2d(D // 4)
        self.dc2 = nn.ConvTranspose2d(D // 4, D // 8, 2, 2)
        self.hyper = nn.ModuleList(MLP(D, D, D // 8, 3) for _ in range(4))
        self.iou_head = MLP(D, D, 4, 3)
        self.obj_head = nn.Linear(D, 1)

    def _fourier(self, c01):
        c = (2 * c01 - 1) @ self.pe_gaussian * (2 * math.pi)
        return torch.cat([c.sin(), c.cos()], dim=-1)

    def _dense_prompt_lo(self, emb, points, labels):
        """Hook for subclasses that add dense prompt maps at the G x G grid (identity here)."""
        return emb

    def _dense_prompt_hi(self, up, points, labels):
        """Hook for subclasses that add dense prompt maps at the 4G x 4G grid, before the GELU (identity here)."""
        return up

    def forward(self, emb, s0, s1, points, labels):
        pe = self._fourier((points + 0.5) / self.S)  # (B, N, D)
        lab = labels[..., None]
        valid = (lab != -1).to(pe.dtype)
        pe = pe * valid + (1 - valid) * self.not_a_point_embed
        for k in range(4):
            pe = pe + (lab == k).to(pe.dtype) * self.point_embeddings[k]
        out_tok = torch.cat([self.obj_score_token, self.iou_token, self.mask_tokens], dim=0)
        tokens = torch.cat([out_tok[None].expand(points.shape[0], -1, -1), pe], dim=1)

        G = emb.shape[-1]
        emb = self._dense_prompt_lo(emb, points, labels)
        src = (emb + self.no_mask_embed).flatten(2).transpose(1, 2)  # (B, G*G, D)
        kpe = self.dense_pe[None]
        q = self.norm1(tokens + self.self_attn(tokens, tokens, tokens))
        q = self.norm2(q + self.cross_t2i(q + tokens, src + kpe, src))
        q = self.norm3(q + self.mlp(q))
        src = self.norm4(src + self.cross_i2t(src + kpe, q + tokens, q))
        q = self.norm_final(q + self.final_t2i(q + tokens, src + kpe, src))

        up = src.transpose(1, 2).unflatten(2, (G, G))
        up = F.gelu(self.ln_up(self.dc1(up) + s1))
        up = F.gelu(self._dense_prompt_hi(self.dc2(up) + s0, points, labels))  # (B, D/8, 4G, 4G)
        hyper = torch.stack([self.hyper[i](q[:, 2 + i]) for i in range(4)], dim=1)  # (B, 4, D/8)
        masks = (hyper @ up.flatten(2)).unflatten(2, (up.shape[-2], up.shape[-1]))
        iou = self.iou_head(q[:, 1]).sigmoid()
        obj = self.obj_head(q[:, 0])
        return masks[:, 1:4].contiguous(), iou[:, 1:4].contiguous(), obj


# ------------------------------------------------------------------------------------------------
# Concept bank (precomputed text memory per vocabulary entry)
# ------------------------------------------------------------------------------------------------
class ConceptBank(nn.Module):
    def __init__(self, D, L, gen):
        super().__init__()
        K = len(CONCEPTS)
        pad = torch.ones(K, L, dtype=torch.bool)
        text = torch.zeros(K, L, D)
        shared = torch.randn(2, D, generator=gen)  # SOT / EOT embeddings shared by all prompts
        for k, n in enumerate(CONCEPT_TOKENS):
            assert 0 < n < L
            pad[k, :n] = False
            text[k, 0] = shared[0]
            text[k, 1:n - 1] = torch.randn(n - 2, D, generator=gen)
            text[k, n - 1] = shared[1] + 0.5 * text[k, 1:n - 1].mean(0)
        self.register_buffer("text", text)
        self.register_buffer("pad", pad)

    def forward(self, ids):
        return self.text[ids], self.pad[ids]


# ------------------------------------------------------------------------------------------------
# Building, tracing, verifying
# ------------------------------------------------------------------------------------------------
def build(preset, seed, trunk_only=False):
    p = dict(PRESETS[preset])
    PRESET_WINDOW[0] = p["window"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    S, P, C, D = p["image_size"], p["patch"], p["channels"], p["neck_channels"]
    G = S // P
    trunk, detector_neck, interactive_neck = Trunk(p), DetectorNeck(C, D), InteractiveNeck(C, D)
    # The SAM head draws its initial weights before grounding does, so a change to grounding's
    # architecture leaves the SAM head's (and everything else's) initial weights as they were.
    sam_head = SamHead(D, G, S, p["heads_d"], gen)
    mods = {
        "trunk": trunk,
        "detector_neck": detector_neck,
        "interactive_neck": interactive_neck,
        "grounding": Grounding(D, G, p["num_queries"], p["heads_d"], p["enc_layers"], p["dec_layers"]),
        "sam_head": sam_head,
        "concept_bank": ConceptBank(D, p["prompt_length"], gen),
    }
    init_trunk(mods["trunk"], gen, p)
    if trunk_only:
        mods = {"trunk": mods["trunk"]}
    else:
        calibrate(mods, S)
    for m in mods.values():
        m.eval()
        for prm in m.parameters():
            prm.requires_grad_(False)
    info = {
        "format": "instinct-teacher-bundle", "version": 1, "name": f"reference-{preset}-seed{seed}",
        "image_size": S, "resize": "squash", "pixel_mean": [0.5, 0.5, 0.5], "pixel_std": [0.5, 0.5, 0.5],
        "trunk": {"channels": C, "grid": G, "patch": P}, "neck_channels": D,
        "num_queries": p["num_queries"], "mask_size": 4 * G, "prompt_length": p["prompt_length"],
        "concepts": list(CONCEPTS),
    }
    return mods, info


@torch.no_grad()
def calibrate(mods, S):
    """Data-dependent rescaling (on 4 synthetic images) so the random heads produce outputs of useful
    magnitude: neck levels ~unit std, class logits std ~3, mask logits std ~4 (both signs), presence
    logits centred at +0.5, IoU / object scores spread. Only output layers are rescaled."""
    for m in mods.values():
        m.eval()
    x = synthetic_images(4, S, seed=11)
    f = mods["trunk"](x)
    for stacks in (mods["detector_neck"].convs, mods["interactive_neck"].sam2_convs):
        for st in stacks:
            s = st(f).std()
            st.conv_3x3.weight.div_(s)
            st.conv_3x3.bias.div_(s)

    def rescale(lin, got, want):
        lin.weight.mul_(want / got)
        lin.bias.mul_(want / got)

    g = mods["grounding"]
    fpn = mods["detector_neck"](f)
    text, pad = mods["concept_bank"](torch.tensor([0, 3, 7, 9]))
    logits, _, masks, presence, _, _ = g(*fpn, text, pad)
    rescale(g.query_proj, logits.std(), 3.0)
    rescale(g.mask_embed.layers[-1], masks.std(), 4.0)
    logits, _, masks, presence, _, _ = g(*fpn, text, pad)
    rescale(g.presence_head, presence.std().clamp(min=1e-3), 1.5)
    g.presence_head.bias.add_(0.5 - g(*fpn, text, pad)[3].mean())

    h = mods["sam_head"]
    emb, s0, s1 = mods["interactive_neck"](f)
    pts = torch.tensor([[[60.0, 80.0]], [[150.0, 40.0]], [[112.0, 112.0]], [[30.0, 200.0]]])
    lab = torch.ones(4, 1, dtype=torch.long)
    m_, iou, obj = h(emb, s0, s1, pts, lab)
    for hy in h.hyper:
        rescale(hy.layers[-1], m_.std(), 4.0)
    rescale(h.iou_head.layers[-1], torch.logit(iou).std().clamp(min=1e-3), 1.0)
    rescale(h.obj_head, obj.std().clamp(min=1e-3), 2.0)
    h.obj_head.bias.add_(1.0 - h(emb, s0, s1, pts, lab)[2].mean())


def example_inputs(key, info, B, gen):
    """Random inputs of the right shapes/dtypes for module `key` at batch B."""
    S, C, G, D = info["image_size"], info["trunk"]["channels"], info["trunk"]["grid"], info["neck_channels"]
    L = info["prompt_length"]
    r = lambda *s: torch.randn(*s, generator=gen)
    if key == "trunk":
        return (r(B, 3, S, S).clamp(-1, 1),)
    if key in ("detector_neck", "interactive_neck"):
        return (r(B, C, G, G),)
    if key == "grounding":
        n = torch.randint(1, L, (B,), generator=gen)
        pad = torch.arange(L)[None] >= n[:, None]
        return (r(B, D, 4 * G, 4 * G), r(B, D, 2 * G, 2 * G), r(B, D, G, G), r(B, L, D), pad)
    if key == "sam_head":
        N = 3
        pts = torch.rand(B, N, 2, generator=gen) * S
        labels = torch.randint(-1, 4, (B, N), generator=gen)
        return (r(B, D, G, G), r(B, D // 8, 4 * G, 4 * G), r(B, D // 4, 2 * G, 2 * G), pts, labels)
    if key == "concept_bank":
        return (torch.randint(0, len(info["concepts"]), (B,), generator=gen),)
    raise KeyError(key)


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out, mods, info, verify=True):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    info = dict(info)
    info["modules"] = {}
    for key, m in mods.items():
        path = out / f"{key}.pt"
        dev = next(iter(list(m.parameters()) + list(m.buffers())), torch.zeros(())).device
        with torch.no_grad():
            ex = tuple(t.to(dev) for t in example_inputs(key, info, 2, gen))
            traced = torch.jit.trace(m, ex, check_trace=False)
        traced.save(str(path))
        info["modules"][key] = {"file": path.name, "sha256": sha256_file(path)}
        if verify:
            loaded = torch.jit.load(str(path), map_location=dev)
            for B in (1, 3):
                x = tuple(t.to(dev) for t in example_inputs(key, info, B, gen))
                with torch.no_grad():
                    ref, got = as_tuple(m(*x)), as_tuple(loaded(*x))
                assert len(ref) == len(got), key
                for i, (a, b) in enumerate(zip(ref, got)):
                    assert a.shape == b.shape and a.dtype == b.dtype, (key, i, a.shape, b.shape)
                    if a.dtype == torch.bool:
                        assert torch.equal(a, b), (key, i)
                    else:
                        err = (a - b).abs().max().item()
                        assert err <= 1e-5 * (1 + a.abs().max().item()), (key, B, i, err)
    torch.save(dict(mods["trunk"].state_dict()), str(out / "trunk_state_dict.pt"))
    (out / "bundle.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ------------------------------------------------------------------------------------------------
# Synthetic images and the mean-teacher-vector baseline
# ------------------------------------------------------------------------------------------------
def synthetic_images(n, S, seed):
    """Random coloured shapes (discs, rectangles, triangles) on noisy backgrounds, normalised with
    mean = std = 0.5 -> [-1, 1]. Returns (n, 3, S, S) float32."""
    import numpy as np
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    imgs = np.empty((n, 3, S, S), np.float32)
    for i in range(n):
        img = rng.uniform(0, 1, (3, 1, 1)) + rng.normal(0, 0.08, (3, S, S))
        for _ in range(rng.integers(1, 5)):
            col = rng.uniform(0, 1, (3, 1))
            cx, cy = rng.uniform(0.1, 0.9, 2) * S
            r = rng.uniform(0.08, 0.3) * S
            kind = rng.integers(3)
            if kind == 0:
                m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            elif kind == 1:
                m = (abs(xx - cx) < r) & (abs(yy - cy) < r * rng.uniform(0.4, 1.0))
            else:
                m = (yy - cy < r) & (yy - cy > -r + 2 * abs(xx - cx))
            img[:, m] = col
        imgs[i] = (np.clip(img, 0, 1) - 0.5) / 0.5
    return torch.from_numpy(imgs)


def mean_vector_baseline(trunk, n, S, seed=7):
    """Cosine of the constant predictor equal to the mean teacher vector (estimated on one half of the
    images, evaluated on the other half), averaged over images and locations."""
    x = synthetic_images(n, S, seed)
    with torch.no_grad():
        f = torch.cat([trunk(x[i:i + 8]) for i in range(0, n, 8)])  # (n, C, G, G)
    half = n // 2
    mu = f[:half].mean(dim=(0, 2, 3))
    cos = F.cosine_similarity(f[half:], mu[None, :, None, None], dim=1)
    return cos.mean().item(), f


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="bundle directory to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--baseline-images", type=int, default=0,
                    help="also report the mean-teacher-vector cosine on N synthetic images")
    ap.add_argument("--no-verify", action="store_true", help="skip reloading and checking B=1/B=3")
    ap.add_argument("--trunk-only", action="store_true",
                    help="write a Stage-A bundle (trunk only; heads neither calibrated nor written)")
    ap.add_argument("--device", default="cpu", help="device to trace on (with --trunk-only: no calibration)")
    args = ap.parse_args(argv)
    t0 = time.time()
    mods, info = build(args.preset, args.seed, args.trunk_only)
    if args.device != "cpu":  # trace there (faster at SAM3 size); the files load on any device
        for m in mods.values():
            m.to(args.device)
    info = write_bundle(args.out, mods, info, verify=not args.no_verify)
    counts = " ".join(f"{k}={sum(p.numel() for p in m.parameters()) / 1e6:.3f}M" for k, m in mods.items())
    print(f"reference teacher {info['name']} -> {args.out}: {counts} ({time.time() - t0:.1f}s)", flush=True)
    if args.baseline_images:
        cos, _ = mean_vector_baseline(mods["trunk"], args.baseline_images, info["image_size"])
        print(f"mean-teacher-vector baseline cosine on {args.baseline_images} synthetic images: {cos:.3f}")
    return mods, info


if __name__ == "__main__":
    main()
