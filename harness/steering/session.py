"""Forward hooks that give every row of a batch its own steering, and a ledger of what they did.

A pre-hook on the model reads, for every forward pass, which absolute positions of each row it
computes (from the attention mask and the input length), so the layer hooks act on the right
positions whether the KV cache is on (a prompt pass, then one position per decode step) or off
(every forward recomputes the whole sequence): ActAdd's prefix lands on the prompt's first
positions, every-position vectors skip padding and BOS, on every pass. The ledger counts, per
row, site (layer and module) and forward kind, the positions changed and the norm added, and
each site's scale: the largest norm it added at one position over the mean residual norm there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.errors import UserError
from harness.models import hook_module
from harness.schema.results import LedgerEntry
from harness.steering.base import Intervention, Steering

Kind = tuple[str, bool]  # (positions, steer_bos) of every-position interventions
FORWARD_KINDS = ("prompt", "decode")
MAX_SCALE = 1e3
"""A site adding more than this multiple of the residual norm at one position drowns the prompt
out (and past ~1e7 in float32 the residual is below rounding): its rows are flagged."""


class PrefixTruncatedWarning(UserWarning):
    """An ActAdd vector is longer than the prompt it steers; only the overlap is added."""


class SteeringNotAppliedError(RuntimeError):
    """A hook never ran, or a non-zero steering changed no position at a site: never a silent result."""


class SteeringScaleWarning(UserWarning):
    """A steering added a non-finite norm, or more than `MAX_SCALE` x the residual norm."""


def unapplied(steering: Steering, ledger: Sequence[LedgerEntry]) -> list[str]:
    """The sites of `steering` (`Steering.sites`) at which `ledger` (one row's) counts no changed
    position: each must be empty for the steering to have been applied."""
    return [site for site in steering.sites() if not sum(e.positions for e in ledger if e.site == site)]


def _norms(x: torch.Tensor) -> torch.Tensor:
    """Norms over the last dimension in float32, computed in float64 so that a vector whose
    entries are finite in float32 never gets an infinite norm from squaring them."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float64).float()


@dataclass(frozen=True)
class RowLayout:
    """Where each row's tokens sit in the batch: its left padding and its prompt's length (BOS
    and preamble included), and whether position 0 of every row is a BOS token."""

    starts: tuple[int, ...]
    prompt_lengths: tuple[int, ...]
    has_bos: bool = True

    @classmethod
    def from_mask(cls, mask: torch.Tensor, has_bos: bool) -> RowLayout:
        """The layout of a prompt batch from its attention mask (any padding side)."""
        valid = mask.bool()
        starts = torch.where(valid.any(1), valid.int().argmax(1), valid.shape[1])
        return cls(tuple(starts.tolist()), tuple(valid.sum(1).tolist()), has_bos)


@dataclass
class _Forward:
    """What the pre-hook learned about the current forward pass."""

    start: int  # absolute position of the first input position
    length: int
    rel: torch.Tensor  # [B, L] position of each input within its row (0 = the row's first token)
    valid: torch.Tensor  # [B, L] real tokens (not padding)
    masks: dict[Kind, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "prompt" if self.start == 0 else "decode"


class _Site:
    """The tensors that apply every row's interventions at one (layer, point)."""

    def __init__(self, rows: Sequence[Sequence[Intervention]], layout: RowLayout, width: int,
                 dtype: torch.dtype, device: torch.device):
        batch = len(rows)
        self.adds: dict[Kind, torch.Tensor] = {}
        self.projections: list[tuple[Kind, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        prefix = [iv for ivs in rows for iv in ivs if iv.positions == "prefix"]
        self.prefix: torch.Tensor | None = None
        self.prefix_len = torch.zeros(batch, dtype=torch.long, device=device)
        self.prefix_norms: torch.Tensor | None = None
        self.truncated: list[tuple[int, int]] = []  # (vector length, prompt length) of cut rows
        if prefix:
            n = max(iv.vector.shape[0] for iv in prefix)
            self.prefix = torch.zeros(batch, n + 1, width, dtype=dtype, device=device)
        for b, ivs in enumerate(rows):
            for iv in ivs:
                vector = iv.vector.to(device=device, dtype=dtype)
                kind = (iv.positions, iv.steer_bos)
                if iv.positions == "prefix":
                    n = min(vector.shape[0], layout.prompt_lengths[b])
                    if n < vector.shape[0]:
                        self.truncated.append((vector.shape[0], n))
                    self.prefix[b, :n] += vector[:n]
                    self.prefix_len[b] = n
                elif iv.operator == "add":
                    self.adds.setdefault(kind, torch.zeros(batch, width, dtype=dtype, device=device))
                    self.adds[kind][b] += vector
                else:
                    unit = torch.zeros(batch, width, dtype=dtype, device=device)
                    unit[b] = (vector.float() / vector.float().norm().clamp_min(1e-12)).to(dtype)
                    value = torch.zeros(batch, 1, 1, dtype=dtype, device=device)
                    value[b] = iv.value if iv.operator == "clamp" else 0.0
                    rows_on = torch.zeros(batch, 1, 1, dtype=dtype, device=device)
                    rows_on[b] = 1
                    self.projections.append((kind, unit, value, rows_on))
        if self.prefix is not None:
            self.prefix_norms = _norms(self.prefix)  # [B, n + 1], 0 at the sentinel
        self.add_norms = {k: _norms(v) for k, v in self.adds.items()}
        zeros = {k: torch.zeros(batch, device=device) for k in FORWARD_KINDS}
        self.positions = {k: v.clone() for k, v in zeros.items()}
        self.norm = {k: v.clone() for k, v in zeros.items()}
        self.peak = torch.zeros(batch, device=device)  # largest norm added at one position
        self.residual = torch.zeros(2, batch, device=device)  # sum and count of residual norms
        self.calls = 0

    def scale(self) -> list[float]:
        """Per row: the largest norm added at one position over the mean residual norm of the
        row's positions after the first (0 where nothing was seen)."""
        total, count = self.residual.tolist()
        return [p / (t / c) if c and t else (math.inf if p else 0.0)
                for p, t, c in zip(self.peak.tolist(), total, count, strict=True)]

    def prefix_reach(self, layout: RowLayout) -> int:
        """The first absolute position after every row's prefix."""
        lengths = self.prefix_len.tolist()
        return max((s + n for s, n in zip(layout.starts, lengths, strict=True)), default=0)

    def apply(self, hidden: torch.Tensor, fwd: _Forward, prefix_active: bool) -> torch.Tensor:
        """`hidden` [B, L, d] with every row's interventions applied; the ledger updated."""
        self.calls += 1
        out = hidden
        positions, norm = self.positions[fwd.kind], self.norm[fwd.kind]
        if self.prefix is not None and prefix_active:
            inside = fwd.valid & (fwd.rel >= 0) & (fwd.rel < self.prefix_len[:, None])
            idx = torch.where(inside, fwd.rel, self.prefix.shape[1] - 1)
            out = out + self.prefix.gather(1, idx.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
            norms = self.prefix_norms.gather(1, idx)
            positions += (norms > 0).sum(1)
            norm += norms.sum(1)
        for kind, vector in self.adds.items():
            mask = fwd.masks[kind]  # [B, L]
            out = out + vector[:, None, :] * mask.unsqueeze(-1).to(out.dtype)
            count = mask.sum(1) * (self.add_norms[kind] > 0)
            positions += count
            norm += count * self.add_norms[kind]
        for kind, unit, value, rows_on in self.projections:
            mask = fwd.masks[kind].unsqueeze(-1).to(out.dtype) * rows_on
            gap = (value - (out * unit[:, None, :]).sum(-1, keepdim=True)) * mask
            out = out + gap * unit[:, None, :]
            positions += mask.squeeze(-1).sum(1)
            norm += gap.abs().squeeze(-1).float().sum(1)
        body = (fwd.valid & (fwd.rel >= 1)).float()
        self.residual[0] += (_norms(hidden) * body).sum(1)
        self.residual[1] += body.sum(1)
        self.peak = torch.maximum(self.peak, (_norms(out - hidden) * fwd.valid).amax(1))
        return out


@dataclass(frozen=True)
class Ledger:
    """Per row, site and forward kind ("prompt", "decode"): positions changed and norm added;
    per row and site, the scale (see `_Site.scale`)."""

    rows: list[list[LedgerEntry]]
    scales: list[dict[str, float]]

    def row(self, b: int) -> list[LedgerEntry]:
        return self.rows[b]

    def problem(self, b: int) -> str | None:
        """Why row `b`'s steering cannot be trusted: a non-finite norm, or a site that added
        more than `MAX_SCALE` x the residual norm; None when neither."""
        for e in self.rows[b]:
            if not math.isfinite(e.norm):
                return f"non-finite steering norm at {e.site}"
        for site, scale in self.scales[b].items():
            if not scale <= MAX_SCALE:
                return (f"the steering at {site} added {scale:.3g} x the residual norm at one position "
                        f"(over {MAX_SCALE:g} x: the prompt is drowned out)")
        return None


class SteeringSession:
    """Hooks that apply `steerings` (one per row, None = unsteered) to a model's forward passes.

    `layout` fixes the rows' padding and prompt lengths (the engine knows them); without it the
    layout is read from the attention mask of each new sequence (`harness.steer`), and a single
    steering applies to every row of whatever batch comes.
    """

    def __init__(self, model: nn.Module, steerings: Sequence[Steering | None] | Steering,
                 layout: RowLayout | None = None, has_bos: bool = True):
        self.model = model
        self.steerings = steerings
        self.layout = layout
        self.has_bos = has_bos if layout is None else layout.has_bos
        self.sites: dict[tuple[int, str], _Site] = {}
        self.fwd: _Forward | None = None
        self._ids: torch.Tensor | None = None
        self._reach: dict[tuple[int, str], int] = {}
        self._prompt_end = 0
        self.ledgers: list[Ledger] = []

    # -- building ----------------------------------------------------------------------------
    def _rows(self, batch: int) -> list[Steering | None]:
        if isinstance(self.steerings, Steering):
            return [self.steerings] * batch
        if len(self.steerings) != batch:
            raise ValueError(f"{len(self.steerings)} row steerings for a batch of {batch} rows")
        return list(self.steerings)

    def _build(self, layout: RowLayout, batch: int, like: torch.Tensor) -> None:
        rows = self._rows(batch)
        width = self.model.config.get_text_config().hidden_size
        dtype = next(self.model.parameters()).dtype
        keys = sorted({(iv.layer, iv.point) for s in rows if s for iv in s.interventions})
        self._finish_ledger()
        self.sites = {
            key: _Site([[iv for iv in (s.interventions if s else ()) if (iv.layer, iv.point) == key]
                        for s in rows], layout, width, dtype, like.device)
            for key in keys
        }
        self._reach = {k: s.prefix_reach(layout) for k, s in self.sites.items()}
        cut = [t for site in self.sites.values() for t in site.truncated]
        if cut:
            n, have = cut[0]
            warnings.warn(f"{len(cut)} row(s): the ActAdd vector covers {n} positions but the prompt has "
                          f"only {have} tokens; the first {have} positions of the vector were added",
                          PrefixTruncatedWarning, stacklevel=2)
        self._prompt_end = max((s + n for s, n in zip(layout.starts, layout.prompt_lengths, strict=True)),
                               default=0)
        self.layout = layout

    def _finish_ledger(self) -> None:
        """Move the ledger of the sequence just finished to the host (one sync per sequence)."""
        if not self.sites:
            return
        batch = len(next(iter(self.sites.values())).prefix_len)
        rows: list[list[LedgerEntry]] = [[] for _ in range(batch)]
        scales: list[dict[str, float]] = [{} for _ in range(batch)]
        for (layer, point), site in self.sites.items():
            for kind in FORWARD_KINDS:
                pos, norm = site.positions[kind].tolist(), site.norm[kind].tolist()
                for b in range(batch):
                    rows[b].append(LedgerEntry(site=f"L{layer}.{point}", kind=kind,
                                               positions=int(round(pos[b])), norm=float(norm[b])))
            for b, scale in enumerate(site.scale()):
                scales[b][f"L{layer}.{point}"] = scale
        ledger = Ledger(rows, scales)
        problems = [p for b in range(batch) if (p := ledger.problem(b))]
        if problems:
            warnings.warn(f"{len(problems)} row(s) flagged: {problems[0]}", SteeringScaleWarning,
                          stacklevel=3)
        self.ledgers.append(ledger)

    # -- hooks ------------------------------------------------------------------------------
    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs["inputs_embeds"]
        batch, length = ref.shape[0], ref.shape[1]
        start, mask = _start(kwargs, length)
        if start == 0 and self._new_sequence(ids):
            full = mask if mask is not None else torch.ones(batch, length, dtype=torch.long,
                                                            device=ref.device)
            layout = self.layout if isinstance(self.steerings, list) and self.layout else \
                RowLayout.from_mask(full, self.has_bos)
            self._build(layout, batch, ref)
        self._ids = ids if start == 0 else None
        layout = self.layout
        starts = torch.tensor(layout.starts, device=ref.device)
        rel = torch.arange(start, start + length, device=ref.device)[None, :] - starts[:, None]
        valid = rel >= 0
        if mask is not None:
            valid = valid & mask[:, start:].bool()
        self.fwd = _Forward(start, length, rel, valid)
        plen = torch.tensor(layout.prompt_lengths, device=ref.device)[:, None]
        kinds = {k for site in self.sites.values() for k in (*site.adds, *(p[0] for p in site.projections))}
        for kind in kinds:
            positions, steer_bos = kind
            first = 0 if steer_bos or not self.has_bos else 1
            m = valid & (rel >= first)
            if positions == "prompt":
                m = m & (rel < plen)
            elif positions == "generated":
                m = m & (rel >= plen)
            self.fwd.masks[kind] = m

    def _new_sequence(self, ids: torch.Tensor | None) -> bool:
        """Whether a forward from position 0 starts a new sequence or recomputes the current one
        (generation without a KV cache feeds the growing sequence again)."""
        if self.fwd is None or self.layout is None:
            return True
        if not isinstance(self.steerings, Steering):
            return False  # the engine's layout is fixed for the whole batch
        prev = self._ids
        if prev is None or ids is None or prev.shape[0] != ids.shape[0] or ids.shape[1] != prev.shape[1] + 1:
            return True
        return not bool(torch.equal(ids[:, : prev.shape[1]], prev))

    def _layer_hook(self, key: tuple[int, str]):  # noqa: ANN202
        def hook(module: nn.Module, args: object, output: object) -> object:
            site = self.sites.get(key)
            if site is None or self.fwd is None:
                return output
            hidden = output[0] if isinstance(output, tuple) else output
            fwd = self.fwd
            if fwd.rel.device != hidden.device:  # a device_map model's layers sit on several devices
                site = self._on_device(key, hidden.device)
                fwd = _Forward(fwd.start, fwd.length, fwd.rel.to(hidden.device), fwd.valid.to(hidden.device),
                               {k: v.to(hidden.device) for k, v in fwd.masks.items()})
            new = site.apply(hidden, fwd, fwd.start < self._reach[key])
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    def _on_device(self, key: tuple[int, str], device: torch.device) -> _Site:
        site = self.sites[key]
        for name, value in vars(site).items():
            if isinstance(value, torch.Tensor):
                setattr(site, name, value.to(device))
            elif isinstance(value, dict):
                setattr(site, name, {k: v.to(device) for k, v in value.items()})
            elif isinstance(value, list):
                setattr(site, name, [tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in p)
                                     for p in value])
        return site

    @contextmanager
    def attached(self) -> Iterator[SteeringSession]:
        """The hooks on the model for the duration of the block; always removed, also on error.
        On a normal exit, a site whose hook never ran is an error."""
        width = self.model.config.get_text_config().hidden_size
        for iv in (iv for s in self._all_steerings() for iv in s.interventions):
            if iv.vector.shape[-1] != width:
                raise UserError(f"the vector at layer {iv.layer} has {iv.vector.shape[-1]} dimensions; the "
                                f"model's hidden size is {width} (a vector of another model?)")
        keys = sorted({(iv.layer, iv.point) for s in self._all_steerings() for iv in s.interventions})
        handles = [self.model.register_forward_pre_hook(self._pre_hook, with_kwargs=True)]
        try:
            for key in keys:
                handles.append(hook_module(self.model, *key).register_forward_hook(self._layer_hook(key)))
            yield self
            self._finish_ledger()
            silent = [f"L{k[0]}.{k[1]}" for k, s in self.sites.items() if s.calls == 0]
            if silent:
                raise SteeringNotAppliedError(
                    f"steering hook at {', '.join(silent)} never ran: the model did not call that "
                    "module in its forward pass (unsupported architecture or hook point)")
        finally:
            for handle in handles:
                handle.remove()
            self.sites = {}

    def _all_steerings(self) -> list[Steering]:
        if isinstance(self.steerings, Steering):
            return [self.steerings]
        return [s for s in self.steerings if s is not None]


def _start(kwargs: dict[str, Any], length: int) -> tuple[int, torch.Tensor | None]:
    """The absolute position of a forward pass's first input, and its 2-d attention mask if any.

    From the mask when given (past and current positions), else from the KV cache's length
    (transformers passes it as `past_key_values` or `cache`, and may drop an all-ones mask),
    else from `cache_position`; a forward with none of them starts at 0.
    """
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.shape[1] - length, mask
    for name in ("past_key_values", "cache"):
        cache = kwargs.get(name)
        if cache is not None and hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length()), None
    position = kwargs.get("cache_position")
    if isinstance(position, torch.Tensor) and position.numel():
        return int(position[0]), None
    return 0, None


@contextmanager
def steering_hooks(model: nn.Module, steerings: Sequence[Steering | None],
                   layout: RowLayout) -> Iterator[SteeringSession]:
    """Apply one steering per row of a batch with a known layout, for one forward or generate call."""
    session = SteeringSession(model, list(steerings), layout)
    with session.attached():
        yield session
