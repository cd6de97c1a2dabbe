"""The decoder-only transformer every supported architecture is: weights, loading, the forward pass.

An architecture (one small file each) supplies only what differs: its RoPE style, how a block
composes the shared layers, and per-layer details such as sliding windows.  It is found by the
file's architecture string in `models.registry`.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgelm.errors import ModelFileError
from edgelm.gguf.reader import file_identity
from edgelm.kernels.composite import DecoderBlock, QKVWeights, Rope
from edgelm.kernels.ops import Ops, select_ops
from edgelm.kernels.packed import Weight
from edgelm.models.config import ModelConfig
from edgelm.models.layers import AttentionWeights, FFNWeights
from edgelm.models.layout import OUTPUT, OUTPUT_NORM, ROPE_FREQS, TOKEN_EMBD
from edgelm.models.model_file import ModelFile
from edgelm.runtime.kv_cache import ContiguousCache, LayerCache, SequenceCache, SlidingWindowCache
from edgelm.weights.qtensor import FileRows, QTensor

__all__ = ["Architecture", "Layer", "Transformer"]

Segments = list[tuple[int, int, LayerCache]]


# The matrix products of a block, by their names in the file (blk.N.<name>.weight).
_LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# Its small tensors, where the architecture has them.
_LAYER_SMALL = (
    "attn_norm.weight", "ffn_norm.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
    "attn_q_norm.weight", "attn_k_norm.weight", "post_attention_norm.weight", "post_ffw_norm.weight",
)  # fmt: skip


@dataclass(frozen=True)
class Layer:
    index: int
    attn_norm: np.ndarray
    attn: AttentionWeights
    ffn_norm: np.ndarray
    ffn: FFNWeights
    rope: Rope
    window: int  # sliding-window size; 0 = attends to the whole context
    post_attn_norm: np.ndarray | None = None
    post_ffn_norm: np.ndarray | None = None
    # The backend's handle of the whole block (`Ops.block`), where the architecture's block is
    # `composite.block` (see Architecture.decoder_block).
    plan: object | None = None


# A block: (model, layer, x (T, E), positions (T,), segments) -> x (T, E)
BlockFn = Callable[["Transformer", Layer, np.ndarray, np.ndarray, Segments], np.ndarray]


@dataclass(frozen=True)
class Architecture:
    name: str
    block: BlockFn
    rope_neox: bool  # NeoX-style RoPE (qwen, gemma) or adjacent pairs (llama)
    embed_scale: Callable[[ModelConfig], float] = lambda cfg: 1.0
    # Per-layer RoPE base: the sliding-window layers of some models use their own.
    layer_rope_base: Callable[[ModelConfig, int], float] = lambda cfg, i: cfg.rope_base
    # Scale applied to q before q.k (1/sqrt(head_dim) unless the model says otherwise).
    q_scale: Callable[[ModelConfig], float] = lambda cfg: 1.0 / math.sqrt(cfg.head_dim)
    uses_gelu: bool = False
    # Its block is the plain pre-norm block (composite.DecoderBlock): the backend may run one
    # sequence's step through it in one call.
    decoder_block: bool = False


@dataclass(frozen=True, eq=False)
class Transformer:
    config: ModelConfig
    arch: Architecture
    tok_embd: QTensor
    layers: tuple[Layer, ...]
    output_norm: np.ndarray
    output: Weight
    embed_scale: float
    q_scale: float
    ops: Ops
    model_file: ModelFile | None = field(default=None, repr=False)
    embd_rows: FileRows | None = field(default=None, repr=False)  # where tok_embd lies in its file
    # The prepared weights whose load work is left for after the first step (`Ops.settle`); emptied
    # then.
    unsettled: list[Weight] = field(default_factory=list, repr=False)

    @classmethod
    def from_model_file(cls, mf: ModelFile, arch: Architecture, ops: Ops | None = None) -> Transformer:
        cfg = mf.config
        t = mf.tensors
        ops = ops or select_ops()

        # The small tensors (norms, biases, RoPE factors) as float32, read first: reading a tensor maps
        # the file's large pages around it, which must not bring back a repacked matrix's pages.
        small_names = [ROPE_FREQS, OUTPUT_NORM]
        small_names += [f"blk.{i}.{s}" for i in range(cfg.n_layers) for s in _LAYER_SMALL]
        smalls = {name: t[name].dequantize() for name in small_names if name in t}
        # Every matrix product's weights in the layout the kernels read fastest (maybe repacked, all
        # at once). A tied output head is repacked too: the embedding lookup reads the file's rows.
        names = [f"blk.{i}.{m}.weight" for i in range(cfg.n_layers) for m in _LAYER_MATRICES]
        names.append(OUTPUT if OUTPUT in t else TOKEN_EMBD)
        prepared = dict(zip(names, ops.prepare([t[n] for n in names], mf.gguf.release), strict=True))

        def matrix(name: str) -> Weight:
            return prepared[name]

        def small(name: str) -> np.ndarray | None:
            return smalls.get(name)

        def need(name: str) -> np.ndarray:
            v = small(name)
            if v is None:
                raise ModelFileError(mf.path, f"missing tensor {name!r}")
            return v

        factors = small(ROPE_FREQS)
        freq_scale = 1.0 / cfg.rope_scaling.factor if cfg.rope_scaling.type == "linear" else 1.0
        if cfg.rope_scaling.type not in ("none", "linear"):
            raise ModelFileError(mf.path, f"RoPE scaling {cfg.rope_scaling.type!r} is not supported yet")
        q_scale = arch.q_scale(cfg)
        layers = []
        for i in range(cfg.n_layers):
            b = f"blk.{i}."
            local = cfg.is_local_layer(i)
            rope = Rope(
                dim=cfg.rope_dim,
                base=arch.layer_rope_base(cfg, i),
                neox=arch.rope_neox,
                freq_scale=1.0 if local else freq_scale,
                factors=factors,
            )
            attn = AttentionWeights(
                qkv=QKVWeights(
                    wq=matrix(b + "attn_q.weight"),
                    wk=matrix(b + "attn_k.weight"),
                    wv=matrix(b + "attn_v.weight"),
                    bq=small(b + "attn_q.bias"),
                    bk=small(b + "attn_k.bias"),
                    bv=small(b + "attn_v.bias"),
                    q_norm=small(b + "attn_q_norm.weight"),
                    k_norm=small(b + "attn_k_norm.weight"),
                ),
                wo=matrix(b + "attn_output.weight"),
            )
            ffn = FFNWeights(*(matrix(f"{b}ffn_{m}.weight") for m in ("gate", "up", "down")))
            attn_norm, ffn_norm = need(b + "attn_norm.weight"), need(b + "ffn_norm.weight")
            window = cfg.sliding_window if local else 0
            plan = None
            if arch.decoder_block:
                spec = DecoderBlock(
                    attn_norm, attn.qkv, attn.wo, ffn_norm, ffn.gate, ffn.up, ffn.down, rope, cfg.n_heads,
                    cfg.n_kv_heads, cfg.norm_eps, q_scale, window, arch.uses_gelu,
                )  # fmt: skip
                plan = ops.block_plan(spec)
            layers.append(
                Layer(
                    index=i,
                    attn_norm=attn_norm,
                    attn=attn,
                    ffn_norm=ffn_norm,
                    ffn=ffn,
                    rope=rope,
                    window=window,
                    post_attn_norm=small(b + "post_attention_norm.weight"),
                    post_ffn_norm=small(b + "post_ffw_norm.weight"),
                    plan=plan,
                )
            )
        output_norm = need(OUTPUT_NORM)
        # The embedding lookup reads its rows from the file (see FileRows), on a descriptor of its own.
        try:
            fd = os.open(mf.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            changed = mf.gguf.identity is not None and file_identity(os.fstat(fd)) != mf.gguf.identity
        except OSError as e:
            raise ModelFileError(mf.path, f"cannot open: {e.strerror or e}") from e
        if changed:
            os.close(fd)
            raise ModelFileError(mf.path, "the file changed on disk while it was being loaded")
        model = cls(
            config=cfg,
            arch=arch,
            tok_embd=t[TOKEN_EMBD],
            embd_rows=FileRows(fd, mf.gguf.tensors[TOKEN_EMBD].offset),
            layers=tuple(layers),
            output_norm=output_norm,
            output=prepared[names[-1]],
            embed_scale=arch.embed_scale(cfg),
            q_scale=q_scale,
            ops=ops,
            model_file=mf,
            unsettled=list(prepared.values()),
        )
        weakref.finalize(model, os.close, fd)
        return model

    # -- state ---------------------------------------------------------------------------------

    def new_cache(self, n_ctx: int) -> SequenceCache:
        """A KV cache for one sequence of up to `n_ctx` tokens (sliding-window layers keep less)."""
        cfg = self.config
        layers: list[LayerCache] = []
        for layer in self.layers:
            if layer.window and layer.window < n_ctx:
                layers.append(SlidingWindowCache(layer.window, cfg.n_kv_heads, cfg.head_dim, cfg.head_dim_v))
            else:
                layers.append(ContiguousCache(n_ctx, cfg.n_kv_heads, cfg.head_dim, cfg.head_dim_v))
        return SequenceCache(layers, n_ctx)

    # -- compute -------------------------------------------------------------------------------

    def _blocks(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        caches: Sequence[SequenceCache],
        lengths: Sequence[int] | None,
    ) -> np.ndarray:
        """The token embeddings through every block: (T, E), before the output norm."""
        tokens = np.asarray(tokens, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        if lengths is None:
            lengths = [len(tokens)]
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        x = self.ops.embedding(self.tok_embd, tokens, self.embd_rows)  # (T, E)
        if self.embed_scale != 1.0:
            x = x * np.float32(self.embed_scale)
        block = self.arch.block
        for layer in self.layers:
            segments = [(bounds[j], bounds[j + 1], c.layers[layer.index]) for j, c in enumerate(caches)]
            x = block(self, layer, x, positions, segments)
        return x

    def hidden(
        self, tokens: np.ndarray, positions: np.ndarray, caches: Sequence[SequenceCache]
    ) -> np.ndarray:
        """The final hidden states of one sequence, (T, E) after the output norm: what the output head
        reads, and what an embedding pools."""
        x = self._blocks(tokens, positions, caches, None)
        return self.ops.rms_norm(x, self.output_norm, self.config.norm_eps)

    def forward(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        caches: Sequence[SequenceCache],
        lengths: Sequence[int] | None = None,
        logit_rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits of a batch: tokens (T,) at positions (T,) -> (R, vocab).

        The batch holds `len(caches)` sequences one after another, `lengths[i]` rows for sequence i
        (all rows for a single sequence when `lengths` is None): a prompt chunk (prefill), one token
        (decode), or several sequences decoding together.  `logit_rows` picks the rows whose logits
        are computed (all by default; generation needs only each sequence's last row).
        """
        x = self._blocks(tokens, positions, caches, lengths)
        if logit_rows is not None:
            x = x[logit_rows]
        x = self.ops.rms_norm(x, self.output_norm, self.config.norm_eps)
        logits = self.ops.matmul(x, self.output)
        if self.unsettled:  # the first step is out: what the load left for later may start
            self.ops.settle(self.unsettled)
            self.unsettled.clear()
        return logits
