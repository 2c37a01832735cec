"""Building SAM3's image model from its own source: compatibility shims, the small test size,
strict checkpoint loading and the real-form RoPE rewrite. Shared by scripts/export_sam3.py and
scripts/check_sam3_bundle.py (docs/sam3.md). SAM3's code is imported from the user's clone
(`--sam3-src` / SAM3_SRC) or an installed `sam3` package; nothing of it lives in this project.
"""
import contextlib
import functools
import importlib
import math
import os
import sys
import types

import torch
import torch.nn.functional as F


class ExportError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


# ================================================================================================
# COMPATIBILITY SHIMS: the only place where this project patches torch or stands in for packages
# that SAM3 imports. Each shim is applied only when what it replaces is missing; `apply_shims`
# returns the names of those it applied (recorded in export_report.json).
# ================================================================================================

def _stub_module(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__instinct_stub__ = True
    sys.modules[name] = mod
    return mod


class _Anything:
    """Stand-in object for import-time attribute access in modules SAM3 imports but that image
    inference never runs (triton kernels, video decoders)."""

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]  # used as a decorator
        return _Anything()

    def __getitem__(self, item):
        return _Anything()


def _lazy_stub(name):
    mod = _stub_module(name)
    mod.__getattr__ = lambda attr: _Anything()
    return mod


def _softmax_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """torch.nn.functional.scaled_dot_product_attention for torch < 2: the explicit softmax form
    (same maths; eval mode only, so dropout must be 0)."""
    if dropout_p not in (0, 0.0):
        raise ExportError("the softmax attention shim supports eval mode only (dropout_p=0)")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn = torch.matmul(query * scale, key.transpose(-2, -1))
    if is_causal:
        n, m = query.shape[-2], key.shape[-2]
        causal = torch.ones(n, m, dtype=torch.bool, device=query.device).tril()
        attn = attn.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    return torch.matmul(attn.softmax(dim=-1), value)


def _timm_standin():
    """timm's DropPath / Mlp / trunc_normal_ with timm's parameter names (fc1, fc2), enough for
    SAM3's model code in eval mode. Used only when timm is not importable."""
    import torch.nn as nn

    class DropPath(nn.Module):
        def __init__(self, drop_prob=0.0, scale_by_keep=True):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return x

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU,
                     norm_layer=None, bias=True, drop=0.0, use_conv=False):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
            self.act = act_layer()
            drop1, drop2 = drop if isinstance(drop, (tuple, list)) else (drop, drop)
            self.drop1 = nn.Dropout(drop1)
            self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
            self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
            self.drop2 = nn.Dropout(drop2)

        def forward(self, x):
            return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))

    def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
        return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)

    layers = _stub_module("timm.layers", DropPath=DropPath, Mlp=Mlp, trunc_normal_=trunc_normal_)
    models = _stub_module("timm.models")
    _stub_module("timm.models.layers", DropPath=DropPath, Mlp=Mlp, trunc_normal_=trunc_normal_)
    _stub_module("timm", layers=layers, models=models)


def _transforms_v2_standin():
    """The four torchvision.transforms.v2 steps Sam3Processor uses, for torchvision < 0.15: on
    uint8 CHW tensors, Resize is torchvision's antialiased bilinear resize (v2's default), rounded
    back to uint8; ToDtype(float32, scale=True) divides by 255."""
    import numpy as np
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class ToDtype:
        def __init__(self, dtype, scale=False):
            self.dtype, self.scale = dtype, scale

        def __call__(self, x):
            if x.dtype == self.dtype:
                return x
            if self.scale and x.dtype == torch.uint8 and self.dtype.is_floating_point:
                return x.to(self.dtype) / 255.0
            if self.scale:
                raise ExportError(f"ToDtype stand-in: {x.dtype} -> {self.dtype} with scale is not supported")
            return x.to(self.dtype)

    class Resize:
        def __init__(self, size, antialias=True):
            self.size, self.antialias = list(size), antialias

        def __call__(self, x):
            return TF.resize(x, self.size, interpolation=InterpolationMode.BILINEAR, antialias=self.antialias)

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, x):
            return TF.normalize(x, self.mean, self.std)

    def to_image(img):
        if isinstance(img, torch.Tensor):
            return img
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()

    functional = _stub_module("torchvision.transforms.v2.functional", to_image=to_image)
    v2 = _stub_module("torchvision.transforms.v2", Compose=Compose, ToDtype=ToDtype, Resize=Resize,
                      Normalize=Normalize, functional=functional)
    import torchvision.transforms
    torchvision.transforms.v2 = v2


def apply_shims(timm_src=None):
    """Makes `import sam3` and SAM3's image inference work on this interpreter. `timm_src` (default
    $INSTINCT_TIMM_SRC) is a directory holding timm's source, used when timm is not installed: random
    weights depend on which timm builds them, so every caller must see the same one. Returns the list
    of shims applied."""
    applied = []
    timm_src = timm_src or os.environ.get("INSTINCT_TIMM_SRC")  # the same timm as every other caller

    def missing(name):
        if name in sys.modules:
            return False
        try:
            __import__(name)
            return False
        except ImportError:
            return True

    if timm_src and os.path.isdir(os.path.join(timm_src, "timm")) and timm_src not in sys.path:
        sys.path.insert(0, timm_src)
    if missing("timm"):
        _timm_standin()
        applied.append("timm (DropPath/Mlp/trunc_normal_ stand-in)")
    if missing("iopath"):
        class _PathMgr:
            open = staticmethod(open)
            exists = staticmethod(os.path.exists)
        common = _stub_module("iopath.common")
        file_io = _stub_module("iopath.common.file_io", g_pathmgr=_PathMgr(), PathManager=_PathMgr)
        common.file_io = file_io
        _stub_module("iopath", common=common)
        applied.append("iopath (g_pathmgr.open = open)")
    if missing("ftfy"):
        # ftfy.fix_text repairs mojibake and also straightens curly quotes, expands ligatures, folds
        # fullwidth forms, NFC-normalises and drops control characters; plain ASCII prompts (COCO's
        # names) are unchanged. The C++ tokenizer does the same as this stand-in (tokenizer.h).
        _stub_module("ftfy", fix_text=lambda text, **kw: text)
        applied.append("ftfy (fix_text = identity)")
    if missing("huggingface_hub"):
        def _no_hub(*a, **k):
            raise ExportError("no Hugging Face download here: pass --checkpoint or --random-init")
        _stub_module("huggingface_hub", hf_hub_download=_no_hub)
        applied.append("huggingface_hub (downloads refused)")
    for top, subs in (("triton", ("language",)), ("einops", ()), ("decord", ()),
                      ("pycocotools", ("mask", "coco", "cocoeval"))):
        if missing(top):
            mod = _lazy_stub(top)
            for sub in subs:
                setattr(mod, sub, _lazy_stub(f"{top}.{sub}"))
            applied.append(f"{top} (empty stand-in: not used by image inference)")

    try:
        importlib.import_module("torchvision.transforms.v2")
    except ImportError:
        _transforms_v2_standin()
        applied.append("torchvision.transforms.v2 (Compose/ToDtype/Resize/Normalize stand-in)")
    if not hasattr(F, "scaled_dot_product_attention"):
        F.scaled_dot_product_attention = _softmax_sdpa
        applied.append("torch.nn.functional.scaled_dot_product_attention (softmax form)")
    try:
        importlib.import_module("torch.nn.attention")
    except ImportError:
        import enum

        class SDPBackend(enum.Enum):
            ERROR = -1
            MATH = 0
            FLASH_ATTENTION = 1
            EFFICIENT_ATTENTION = 2
            CUDNN_ATTENTION = 3

        attention = _stub_module("torch.nn.attention", SDPBackend=SDPBackend,
                                 sdpa_kernel=lambda *a, **k: contextlib.nullcontext())
        torch.nn.attention = attention
        applied.append("torch.nn.attention (sdpa_kernel = no-op)")
    if not hasattr(torch, "compiler") or not hasattr(torch.compiler, "is_dynamo_compiling"):
        compiler = getattr(torch, "compiler", None) or types.ModuleType("torch.compiler")
        compiler.is_dynamo_compiling = lambda: False
        torch.compiler = compiler
        sys.modules.setdefault("torch.compiler", compiler)
        applied.append("torch.compiler.is_dynamo_compiling = False")
    for fn in ("enable_flash_sdp", "enable_math_sdp", "enable_mem_efficient_sdp"):
        if not hasattr(torch.backends.cuda, fn):
            setattr(torch.backends.cuda, fn, lambda enabled: None)
            applied.append(f"torch.backends.cuda.{fn} = no-op")
    if not torch.cuda.is_available():
        # SAM3 builds bf16 CUDA autocast contexts at import / construction (tracker, video); on a
        # machine without CUDA they become disabled CPU contexts. Image inference runs in fp32.
        real_autocast = torch.autocast

        class _Autocast(real_autocast):
            def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
                if device_type == "cuda":
                    device_type, dtype, enabled = "cpu", torch.bfloat16, False
                super().__init__(device_type, dtype=dtype, enabled=enabled)

        torch.autocast = _Autocast
        torch.amp.autocast = _Autocast
        torch.Tensor.pin_memory = lambda self, *a, **k: self
        applied.append("torch.autocast('cuda') -> disabled (no CUDA)")
        applied.append("Tensor.pin_memory = identity (no CUDA)")
    return applied


@contextlib.contextmanager
def cuda_constructors_on(device):
    """SAM3 creates a few caches with device="cuda" at construction (sine position encoding,
    decoder box-bias coordinates); they are plain attributes, so `.to()` does not move them. Build
    them on the export `device` instead (a no-op when that is CUDA)."""
    if str(device).startswith("cuda"):
        yield
        return
    names = ("zeros", "ones", "arange", "empty", "full", "tensor", "linspace")
    saved = {n: getattr(torch, n) for n in names}

    def redirect(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            d = kwargs.get("device")
            if d is not None and str(d).startswith("cuda"):
                kwargs["device"] = device
            return fn(*args, **kwargs)
        return call

    for n, fn in saved.items():
        setattr(torch, n, redirect(fn))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch, n, fn)
# ==================================== end of compatibility shims ================================


def import_sam3(sam3_src=None, timm_src=None):
    """Imports SAM3 from `sam3_src` (a directory holding the `sam3` package) or the environment.
    Returns (sam3 module, shims applied, commit or None)."""
    if sam3_src:
        if not os.path.isdir(os.path.join(sam3_src, "sam3")):
            raise ExportError(f"--sam3-src {sam3_src}: no 'sam3' package directory in it")
        sys.path.insert(0, os.path.abspath(sam3_src))
    applied = apply_shims(timm_src)
    try:
        import sam3  # noqa: F401
        from sam3 import model_builder  # noqa: F401
    except ImportError as e:
        where = sam3_src or "the Python path"
        raise ExportError(f"cannot import sam3 from {where}: {e}")
    return sys.modules["sam3"], applied, sam3_commit(sam3_src or os.path.dirname(os.path.dirname(sys.modules["sam3"].__file__)))


def sam3_commit(src_dir):
    """The SAM3 commit: from a git checkout, or a SNAPSHOT/README line naming a 40-hex commit."""
    import re
    import subprocess
    try:
        out = subprocess.run(["git", "-C", src_dir, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", out.stdout.strip()):
            # only if src_dir itself is the top of that checkout
            top = subprocess.run(["git", "-C", src_dir, "rev-parse", "--show-toplevel"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            if os.path.realpath(top) == os.path.realpath(src_dir):
                return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for parent in (src_dir, os.path.dirname(os.path.abspath(src_dir))):
        for name in ("SNAPSHOT.md", "README.md"):
            p = os.path.join(parent, name)
            if os.path.isfile(p):
                m = re.search(r"\b([0-9a-f]{40})\b", open(p, encoding="utf-8", errors="replace").read())
                if m:
                    return m.group(1)
    return None


# The reduced SAM3 for tests and demos: SAM3's own classes and code paths with smaller factory
# sizes (D = 256 stays: it is written into ~10 places of SAM3's code).
SMALL = dict(image_size=224, trunk_width=128, trunk_depth=4, trunk_heads=4, window=8,
             global_blocks=(1, 3), text_width=128, text_layers=2, text_heads=4,
             encoder_layers=2, decoder_layers=2, num_queries=16)
FULL_IMAGE_SIZE = 1008


@contextlib.contextmanager
def small_factories(mb):
    """Swaps the private size factories of sam3.model_builder for the SMALL sizes while building."""
    s = SMALL
    saved = {n: getattr(mb, n) for n in ("_create_vit_backbone", "_create_text_encoder",
                                         "_create_transformer_encoder", "_create_transformer_decoder",
                                         "_create_position_encoding", "Sam3TrackerPredictor")}

    def vit(compile_mode=None):
        return mb.ViT(img_size=s["image_size"], pretrain_img_size=s["window"] * 14, patch_size=14,
                      embed_dim=s["trunk_width"], depth=s["trunk_depth"], num_heads=s["trunk_heads"],
                      mlp_ratio=4.625, norm_layer="LayerNorm", drop_path_rate=0.1, qkv_bias=True,
                      use_abs_pos=True, tile_abs_pos=True, global_att_blocks=s["global_blocks"],
                      rel_pos_blocks=(), use_rope=True, use_interp_rope=True,
                      window_size=s["window"], pretrain_use_cls_token=True, retain_cls_token=False,
                      ln_pre=True, ln_post=False, return_interm_layers=False,
                      bias_patch_embed=False, compile_mode=compile_mode)

    def text(bpe_path):
        return mb.VETextEncoder(tokenizer=mb.SimpleTokenizer(bpe_path=bpe_path), d_model=256,
                                width=s["text_width"], heads=s["text_heads"], layers=s["text_layers"])

    def encoder():
        enc = saved["_create_transformer_encoder"]()
        enc.layers = enc.layers[: s["encoder_layers"]]
        enc.num_layers = s["encoder_layers"]
        return enc

    def decoder():
        dec = saved["_create_transformer_decoder"]()
        return _shrink_decoder(mb, dec, s)

    def position_encoding(precompute_resolution=None):
        return saved["_create_position_encoding"](
            precompute_resolution=s["image_size"] if precompute_resolution else None)

    def tracker(*args, **kwargs):
        kwargs["image_size"] = s["image_size"]
        return saved["Sam3TrackerPredictor"](*args, **kwargs)

    mb._create_vit_backbone = vit
    mb._create_text_encoder = text
    mb._create_transformer_encoder = encoder
    mb._create_transformer_decoder = decoder
    mb._create_position_encoding = position_encoding
    mb.Sam3TrackerPredictor = tracker
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(mb, n, v)


def _shrink_decoder(mb, dec, s):
    """Rebuilds SAM3's TransformerDecoder with fewer layers / queries and the small resolution,
    through its own constructor (so every derived buffer and cache is consistent)."""
    import inspect
    layer = dec.layers[0]
    sig = inspect.signature(type(dec).__init__)
    kwargs = dict(layer=layer, num_layers=s["decoder_layers"], num_queries=s["num_queries"],
                  return_intermediate=True, box_refine=True, num_o2m_queries=0, dac=True,
                  boxRPB="log", d_model=256, frozen=False, interaction_layer=None,
                  dac_use_selfatt_ln=True, resolution=s["image_size"], stride=14,
                  use_act_checkpoint=True, presence_token=True)
    kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
    return type(dec)(**kwargs)


def build_image_model(sam3_src=None, timm_src=None, size="full", device="cpu", seed=0):
    """SAM3's image model (with the interactive predictor) built by SAM3's own builder, eval mode,
    random weights from `seed`, on `device` (its construction-time caches too). Returns (model, info)."""
    sam3, applied, commit = import_sam3(sam3_src, timm_src)
    from sam3 import model_builder as mb
    bpe = os.path.join(os.path.dirname(sam3.__file__), "assets", "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.isfile(bpe):
        raise ExportError(f"SAM3's BPE vocabulary is missing: {bpe}")
    torch.manual_seed(seed)
    ctx = small_factories(mb) if size == "small" else contextlib.nullcontext()
    with ctx, cuda_constructors_on(device):
        model = mb.build_sam3_image_model(bpe_path=bpe, device="cpu", eval_mode=True,
                                          checkpoint_path=None, load_from_HF=False,
                                          enable_segmentation=True, enable_inst_interactivity=True)
    init_uninitialised(model, seed)
    model = model.to(device).eval()
    image_size = SMALL["image_size"] if size == "small" else FULL_IMAGE_SIZE
    return model, dict(sam3_commit=commit, shims=applied, bpe_path=bpe, image_size=image_size)


def init_uninitialised(model, seed):
    """SAM3 creates some parameters with torch.empty and leaves their initialisation to the
    checkpoint (the text encoder's positional_embedding and text_projection). For random-weight
    builds, give every non-finite or never-initialised tensor a seeded normal init."""
    g = torch.Generator().manual_seed(seed + 1)
    text = model.backbone.language_backbone.encoder
    with torch.no_grad():
        text.positional_embedding.copy_(torch.randn(text.positional_embedding.shape, generator=g) * 0.01)
        if isinstance(text.text_projection, torch.nn.Parameter):
            w = text.text_projection
            w.copy_(torch.randn(w.shape, generator=g) * w.shape[0] ** -0.5)
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and not torch.isfinite(t).all():
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)


# ------------------------------------------------------------------ strict checkpoint loading
MERGED_TRUNK_PREFIX = "detector.backbone.vision_backbone.trunk.model."


def map_checkpoint_keys(ckpt):
    """SAM3's own key mapping (`_load_checkpoint`): `detector.X` -> `X`,
    `tracker.X` -> `inst_interactive_predictor.model.X`; other keys are returned as unmapped."""
    mapped, unmapped = {}, []
    for k, v in ckpt.items():
        if k.startswith("detector."):
            mapped[k[len("detector."):]] = v
        elif k.startswith("tracker."):
            mapped["inst_interactive_predictor.model." + k[len("tracker."):]] = v
        else:
            unmapped.append(k)
    return mapped, unmapped


def load_checkpoint_strict(model, path):
    """Loads sam3.pt into `model` requiring every key, no extra key and equal shapes; raises
    ExportError naming the first offending key (SAM3's own loader uses strict=False and only prints
    missing keys, which silently leaves random weights). Returns the sha256 of the file."""
    from make_reference_teacher import sha256_file
    if not os.path.isfile(path):
        raise ExportError(f"checkpoint {path}: no such file")
    digest = sha256_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        raise ExportError(f"checkpoint {path}: cannot read it with torch.load: {str(e).splitlines()[0]}")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ExportError(f"checkpoint {path}: expected a state dict of tensors (or {{'model': state_dict}})")
    merged = [k for k in ckpt if k.startswith(MERGED_TRUNK_PREFIX)]
    if merged:
        raise ExportError(
            f"checkpoint {path}: key '{merged[0]}' is a student trunk merged by `instinct-merge sam3`; "
            "SAM3's builder cannot load it (it would silently keep a random 446M trunk). Export the "
            "original sam3.pt, then put the student in with `instinct-merge bundle --bundle DIR --trunk TRUNK`")
    mapped, unmapped = map_checkpoint_keys(ckpt)
    if unmapped:
        raise ExportError(f"checkpoint {path}: unexpected key '{unmapped[0]}' (SAM3 keys start with "
                          f"'detector.' or 'tracker.'; {len(unmapped)} such keys)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in mapped]
    extra = [k for k in mapped if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key '{_unmap(missing[0])}' ({len(missing)} missing in all)")
        if extra:
            parts.append(f"unexpected key '{_unmap(extra[0])}' ({len(extra)} unexpected in all)")
        raise ExportError(f"checkpoint {path}: " + "; ".join(parts))
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ExportError(f"checkpoint {path}: key '{_unmap(k)}' has shape {list(v.shape)}, "
                              f"the model expects {list(expected[k].shape)}")
    model.load_state_dict(mapped, strict=True)
    return digest


def _unmap(key):
    p = "inst_interactive_predictor.model."
    return "tracker." + key[len(p):] if key.startswith(p) else "detector." + key


# ------------------------------------------------------------------ real-form RoPE
def rewrite_rope(trunk):
    """Replaces every trunk attention's complex RoPE (`freqs_cis`, complex64) by the equivalent
    real rotation with `rope_cos` / `rope_sin` buffers (N, head_dim/2): channel pairs (2i, 2i+1)
    rotated by the angle of freqs_cis[n, i]. Removes the trunk's complex ops and device constants.
    Returns the number of attention modules rewritten."""
    count = 0
    for blk in trunk.blocks:
        attn = blk.attn
        fc = getattr(attn, "freqs_cis", None)
        if fc is None:
            continue
        cos, sin = fc.real.float().contiguous(), fc.imag.float().contiguous()
        del attn._buffers["freqs_cis"]
        attn.freqs_cis = None
        attn.register_buffer("rope_cos", cos)
        attn.register_buffer("rope_sin", sin)
        attn._apply_rope = types.MethodType(_apply_rope_real, attn)
        count += 1
    return count


def _apply_rope_real(self, q, k):
    def rotate(x):
        xf = x.float().unflatten(-1, (-1, 2))
        x0, x1 = xf[..., 0], xf[..., 1]
        out = torch.stack((x0 * self.rope_cos - x1 * self.rope_sin,
                           x0 * self.rope_sin + x1 * self.rope_cos), dim=-1).flatten(-2)
        return out.type_as(x)
    return rotate(q), rotate(k)
