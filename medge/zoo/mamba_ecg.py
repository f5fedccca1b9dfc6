"""1D-CNN + Mamba ECG reconstruction (leads II, V1, V5 → 12 leads), no mamba-ssm/triton.

The selective scan ``h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_t``, ``y_t = C_t · h_t + D x_t`` (A a
negative scalar per channel, as in Mamba-2) runs in a chunked closed form: inside a chunk of T
steps, with ``F = cumsum(Δ A)``, the output is
``y = (exp(F_t − F_s) [s ≤ t] ⊙ C Bᵀ) (Δ x) + exp(F_t) C h₀`` — a masked T×T matmul — and the
state passed to the next chunk is ``h_T = exp(F_T) h₀ + Σₛ exp(F_T − F_s) Δ_s x_s B_s``.  The chunk
loop is unrolled at export (static length), so the ONNX graph has only CumSum, Exp, MatMul.

For streaming, `MambaStep` is the same Mamba stack as a recurrence over one token (4 input samples)
with its state as inputs and outputs: the depthwise-conv window (last 3 inputs) and the scan state
``h`` of every block.  Stepping it over the stem's tokens gives the full model's block outputs.
The stem and head are plain convolutions (stream them on overlapping windows).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from medge.zoo import load_safetensors_weights
from medge.zoo.catalog import WEIGHTS_DIR


class MambaBlock(nn.Module):
    """Pre-norm Mamba mixer: in-proj → causal depthwise conv → SiLU → selective scan → gate → out-proj."""

    def __init__(self, dim: int, length: int, state: int = 8, expand: int = 2, chunk: int = 125) -> None:
        super().__init__()
        if length % chunk:
            raise ValueError(f"sequence length {length} must be a multiple of the chunk {chunk}")
        inner = dim * expand
        self.chunk, self.state = chunk, state
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * inner)
        self.conv = nn.Conv1d(inner, inner, 4, groups=inner, padding=3)
        self.x_proj = nn.Linear(inner, 2 * state + inner)  # B, C and Δ (pre-softplus) per step
        self.a_log = nn.Parameter(torch.log(torch.linspace(1.0, 8.0, inner)))
        self.skip = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, dim)
        self.register_buffer("causal", torch.tril(torch.ones(chunk, chunk, dtype=torch.bool)), persistent=False)

    def scan(self, x: torch.Tensor, dt: torch.Tensor, b_in: torch.Tensor, c_out: torch.Tensor) -> torch.Tensor:
        """Chunked closed-form selective scan; x, dt: (B, L, inner); b_in, c_out: (B, L, N)."""
        batch, length, inner = x.shape
        a = -torch.exp(self.a_log)  # (inner,)
        h = x.new_zeros(batch, inner, self.state)
        outs = []
        for start in range(0, length, self.chunk):
            sl = slice(start, start + self.chunk)
            xc, dtc, bc, cc = x[:, sl], dt[:, sl], b_in[:, sl], c_out[:, sl]
            cum = torch.cumsum(dtc * a, dim=1).transpose(1, 2)  # (B, inner, T), non-increasing
            decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~self.causal, float("-inf")).exp()
            gram = torch.matmul(cc, bc.transpose(1, 2)).unsqueeze(1)  # (B, 1, T, T)
            u = (dtc * xc).transpose(1, 2).unsqueeze(-1)  # (B, inner, T, 1)
            intra = torch.matmul(decay * gram, u).squeeze(-1)  # (B, inner, T)
            inter = torch.exp(cum) * torch.matmul(h, cc.transpose(1, 2))  # (B, inner, T)
            outs.append((intra + inter).transpose(1, 2))
            to_end = torch.exp(cum[..., -1:] - cum)  # (B, inner, T)
            h = torch.exp(cum[..., -1:]) * h + torch.matmul(to_end * u.squeeze(-1), bc)
        return torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        xz = self.in_proj(self.norm(x))
        xs, z = xz.chunk(2, dim=-1)
        xs = F.silu(self.conv(xs.transpose(1, 2))[..., :length].transpose(1, 2))
        b_in, c_out, dt = torch.split(self.x_proj(xs), [self.state, self.state, xs.shape[-1]], dim=-1)
        y = self.scan(xs, F.softplus(dt), b_in, c_out) + xs * self.skip
        return x + self.out_proj(y * F.silu(z))


class MambaECG(nn.Module):
    """Conv stem (/4) → 2 Mamba blocks → transposed-conv upsampling → 12 leads in mV."""

    def __init__(self, in_leads: int = 3, out_leads: int = 12, samples: int = 5000, dim: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(in_leads, dim, 7, padding=3), nn.GELU(),
                                  nn.Conv1d(dim, dim, 4, stride=4), nn.GELU())
        self.blocks = nn.Sequential(*[MambaBlock(dim, samples // 4) for _ in range(2)])
        self.up = nn.ConvTranspose1d(dim, dim, 4, stride=4)
        self.head = nn.Sequential(nn.GELU(), nn.Conv1d(dim + in_leads, out_leads, 7, padding=3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.blocks(self.stem(x).transpose(1, 2)).transpose(1, 2)
        return self.head(torch.cat([self.up(f), x], dim=1))


class MambaStep(nn.Module):
    """``(token, conv_state, ssm_state) → (token_out, conv_state_out, ssm_state_out)``: one step of
    the Mamba blocks of a `MambaECG`.

    token: (B, 1, dim) stem feature; conv_state: (B, blocks, inner, 3) last three conv inputs;
    ssm_state: (B, blocks, inner, N) scan state ``h``.  Both states start at zeros.
    """

    def __init__(self, model: MambaECG) -> None:
        super().__init__()
        self.blocks = model.blocks

    def forward(self, token: torch.Tensor, conv_state: torch.Tensor,
                ssm_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = token[:, 0]  # (B, dim)
        conv_out, ssm_out = [], []
        for i, blk in enumerate(self.blocks):
            xs, z = blk.in_proj(blk.norm(x)).chunk(2, dim=-1)  # (B, inner) each
            window = torch.cat([conv_state[:, i], xs.unsqueeze(-1)], dim=-1)  # (B, inner, 4)
            xs = F.silu((window * blk.conv.weight[:, 0]).sum(-1) + blk.conv.bias)
            b_in, c_out, dt = torch.split(blk.x_proj(xs), [blk.state, blk.state, xs.shape[-1]], dim=-1)
            dt = F.softplus(dt)
            a = -torch.exp(blk.a_log)
            h = torch.exp(dt * a).unsqueeze(-1) * ssm_state[:, i] + (dt * xs).unsqueeze(-1) * b_in.unsqueeze(1)
            y = (h * c_out.unsqueeze(1)).sum(-1) + xs * blk.skip
            x = x + blk.out_proj(y * F.silu(z))
            conv_out.append(window[..., 1:])
            ssm_out.append(h)
        return x.unsqueeze(1), torch.stack(conv_out, dim=1), torch.stack(ssm_out, dim=1)


def mamba_ecg(in_leads: int = 3, out_leads: int = 12, samples: int = 5000, dim: int = 32) -> nn.Module:
    """A 1D-CNN + Mamba 3→12-lead reconstructor for `samples`-long windows, in eval mode."""
    return MambaECG(in_leads, out_leads, samples, dim).eval()


def mamba_ecg_step(in_leads: int = 3, out_leads: int = 12, samples: int = 5000, dim: int = 32,
                   shared_weights: str | None = "ecg-mamba-3to12.safetensors") -> nn.Module:
    """The recurrent step of the Mamba blocks of `mamba_ecg` (with the shared demo weights when shipped)."""
    model = MambaECG(in_leads, out_leads, samples, dim)
    if shared_weights:
        path = WEIGHTS_DIR / shared_weights
        if path.is_file():
            load_safetensors_weights(model, path)
    return MambaStep(model).eval()
