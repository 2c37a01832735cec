"""Independent Python reference of the student: timm's VisionTransformer architecture
(vit_base_patch16_224 family: class token, learned pos-embed, pre-norm blocks with fused qkv,
exact GELU, final norm) + EfficientSAM3's adapter head, with the module names of InstinctSAM's
released trunk files (model.backbone.model.*, model.head.{0,1,3}.*).

Written from the architecture description, not from timm's code; attention is computed explicitly
(softmax(q k^T / sqrt(d)) v), not with a fused kernel, so it checks the C++ SDPA path too."""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    def __init__(self, patch, width):
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.heads)
        o = a.softmax(-1) @ v
        return self.proj(o.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width, heads, hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, img_size=1008, patch=16, width=768, depth=12, heads=12, mlp_ratio=4.0, eps=1e-6):
        super().__init__()
        self.grid = img_size // patch
        self.patch_embed = PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, width))
        self.blocks = nn.ModuleList([Block(width, heads, int(width * mlp_ratio), eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=eps)

    def forward_features(self, x):
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        for b in self.blocks:
            t = b(t)
        return self.norm(t)


class Backbone(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.model = VisionTransformer(**kw)


class Inner(nn.Module):
    def __init__(self, width, out_channels, **kw):
        super().__init__()
        self.backbone = Backbone(width=width, **kw)
        self.head = nn.Sequential(nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                                  nn.GELU(), nn.Conv2d(out_channels, out_channels, 3, padding=1))


class StudentTrunk(nn.Module):
    def __init__(self, out_channels=1024, out_grid=72, width=768, **kw):
        super().__init__()
        self.out_grid = out_grid
        self.model = Inner(width, out_channels, **kw)

    def forward(self, x):
        vit = self.model.backbone.model
        t = vit.forward_features(x)[:, 1:]
        B, N, C = t.shape
        f = self.model.head(t.transpose(1, 2).reshape(B, C, vit.grid, vit.grid))
        if vit.grid != self.out_grid:
            f = F.interpolate(f, size=(self.out_grid, self.out_grid), mode="bilinear", align_corners=False)
        return f


def randomize_(module, seed):
    """Deterministic non-trivial weights (incl. BatchNorm statistics) for parity tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif "norm" in name and name.endswith("weight"):
                    t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
                else:
                    t.copy_(0.05 * torch.randn(t.shape, generator=g))
            else:
                t.fill_(7)
    return module
