"""Decision Transformer (Chen et al. 2021) on a `transformers.GPT2Model` backbone.

Each step t of a window contributes three tokens, (R_t, s_t, a_t): return-to-go, normalised
state and action, each with its own linear embedding, plus a learned timestep embedding (the
step inside the episode) added to all three. GPT-2 is built from a GPT2Config made from the
recipe (random init, nothing downloaded). Its positional embedding is neutralised (zeroed and
frozen) as in the reference implementations: the timestep embedding already says where a
token is, and an absolute position inside the window would make left-padded and unpadded
windows differ. The action a_t is predicted from the hidden state of s_t through tanh, so it
sees R_<=t, s_<=t and a_<t only (causal attention). Actions, in and out, are scaled between
the dataset's action range and [-1, 1].

Goal conditioning: a goal embedding is **added to every token of every step** (like the
timestep embedding), rather than one goal token prepended to the window, because
- the goal can change inside an episode (the `goal` task resamples its command every
  `resample_steps`), and a per-step embedding says which command was in force at each step;
- the sequence stays the reference 3K tokens, so token positions, causality and the padding
  mask are exactly those of the original DT (a prepended token would sit among the padding
  of left-padded windows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2Model

try:  # transformers >= 4.53: the mask GPT2Model builds, built the same way here
    from transformers.masking_utils import create_causal_mask
except ImportError:  # pragma: no cover - older transformers: whole-GPT2Model path only
    create_causal_mask = None

from flexrl.config import DTConfig, FinetuneDTRecipe
from flexrl.offline.base import ActionScaler, ObsNormalizer, OfflinePolicyModule
from flexrl.offline.datamodule import DatasetInfo


def gpt2_config(cfg: DTConfig) -> GPT2Config:
    return GPT2Config(
        vocab_size=1,  # inputs are embeddings; the token table is never used
        bos_token_id=0,
        eos_token_id=0,
        n_positions=3 * cfg.context_len,
        n_embd=cfg.hidden_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.n_inner,
        activation_function=cfg.activation_function,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        use_cache=False,
    )


class DecisionTransformer(nn.Module):
    def __init__(self, info: DatasetInfo, cfg: DTConfig):
        super().__init__()
        h = cfg.hidden_size
        self.context_len = cfg.context_len
        self.max_ep_len = cfg.max_ep_len
        self.goal_dim = info.goal_dim
        self.normalizer = ObsNormalizer(info.obs_mean, info.obs_std)
        self.act_scaler = ActionScaler(info)
        self.transformer = GPT2Model(gpt2_config(cfg))
        wpe = self.transformer.wpe
        nn.init.zeros_(wpe.weight)
        wpe.weight.requires_grad_(False)
        self.embed_timestep = nn.Embedding(cfg.max_ep_len, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(info.obs_dim, h)
        self.embed_action = nn.Linear(info.act_dim, h)
        self.embed_goal = nn.Linear(info.goal_dim, h) if info.goal_dim else None
        self.embed_ln = nn.LayerNorm(h)
        self.predict_action = nn.Sequential(nn.Linear(h, info.act_dim), nn.Tanh())

    def forward(
        self,
        observations: torch.Tensor,  # B x K x obs, raw
        actions: torch.Tensor,  # B x K x act
        returns_to_go: torch.Tensor,  # B x K, already divided by rtg_scale
        timesteps: torch.Tensor,  # B x K
        mask: torch.Tensor | None = None,  # B x K, False on (left) padding
        goals: torch.Tensor | None = None,  # B x K x goal
    ) -> torch.Tensor:
        """Predicted actions, B x K x act, in the dataset's action range."""
        b, k = observations.shape[:2]
        if mask is None:
            mask = torch.ones(b, k, dtype=torch.bool, device=observations.device)
        # Padding is zeroed here too, so nothing in it (not even NaN) reaches a real token:
        # a masked attention weight is 0, but 0 * NaN is not.
        keep = mask.unsqueeze(-1)
        observations = torch.where(keep, observations, 0.0)
        actions = torch.where(keep, actions, 0.0)
        returns_to_go = torch.where(mask, returns_to_go, 0.0)
        goals = None if goals is None else torch.where(keep, goals, 0.0)
        timesteps = torch.where(mask, timesteps, 0)
        time = self.embed_timestep(timesteps.clamp(0, self.max_ep_len - 1))
        if self.embed_goal is not None:
            if goals is None:
                raise ValueError("this model is goal-conditioned: pass goals")
            time = time + self.embed_goal(goals)
        states = self.embed_state(self.normalizer(observations)) + time
        acts = self.embed_action(self.act_scaler.normalize(actions)) + time
        rtg = self.embed_return(returns_to_go.unsqueeze(-1)) + time
        # (R_1, s_1, a_1, R_2, ...): B x 3K x h
        tokens = torch.stack([rtg, states, acts], dim=2).reshape(b, 3 * k, -1)
        tokens = self.embed_ln(tokens)
        token_mask = mask.repeat_interleave(3, dim=1).long()
        unit = self.predict_action(self._state_hidden(tokens, token_mask))  # from s_t tokens
        return self.act_scaler.denormalize(unit)

    def _fast_backbone(self) -> bool:
        cfg = self.transformer.config
        return (
            create_causal_mask is not None
            and cfg._attn_implementation == "sdpa"
            and not cfg.add_cross_attention
            and not cfg.scale_attn_by_inverse_layer_idx
        )

    def _state_hidden(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """GPT-2's last hidden state at the state tokens (positions 1, 4, 7, ...): B x K x h."""
        gpt = self.transformer
        if not self._fast_backbone():
            return gpt(inputs_embeds=tokens, attention_mask=token_mask).last_hidden_state[:, 1::3]
        # GPT2Model.forward up to its last block (no cache, positions 0..3K-1).
        n = tokens.shape[1]
        positions = torch.arange(n, device=tokens.device).unsqueeze(0)
        attn_mask = create_causal_mask(
            config=gpt.config,
            inputs_embeds=tokens,
            attention_mask=token_mask,
            past_key_values=None,
            position_ids=positions,
        )
        x = gpt.drop(tokens + gpt.wpe(positions))
        for block in gpt.h[:-1]:
            out = block(x, None, attn_mask)
            x = out[0] if isinstance(out, tuple) else out
        return gpt.ln_f(self._last_block_at_states(gpt.h[-1], x, attn_mask))

    def _last_block_at_states(
        self, block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """GPT2Block(x)[:, 1::3]: queries, residual and MLP for the state tokens only; keys and
        values for every token (the attention, its scale and its dropout are GPT2Attention's)."""
        attn = block.attn
        b, n, h = x.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        normed = block.ln_1(x)
        weight, bias = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: x @ weight + bias
        kv = torch.addmm(bias[h:], normed.reshape(-1, h), weight[:, h:]).view(b, n, 2, heads, -1)
        key, value = kv.permute(2, 0, 3, 1, 4).unbind(0)  # B x heads x 3K x hd each
        states = normed[:, 1::3]
        k = states.shape[1]
        query = torch.addmm(bias[:h], states.reshape(-1, h), weight[:, :h])
        query = query.view(b, k, heads, head_dim).transpose(1, 2)
        if attn_mask is None:  # no padding: plain causal, the state token 3t+1 sees 0..3t+1
            rows = torch.arange(1, n, 3, device=x.device).unsqueeze(-1)
            attn_mask = (torch.arange(n, device=x.device) <= rows)[None, None]
        else:
            attn_mask = attn_mask[:, :, 1::3]
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=attn.attn_dropout.p if attn.training else 0.0,
            scale=attn.scaling,
        )
        out = attn.resid_dropout(attn.c_proj(out.transpose(1, 2).reshape(b, k, h)))
        hidden = x[:, 1::3] + out
        return hidden + block.mlp(block.ln_2(hidden))


class DTModule(OfflinePolicyModule):
    kind = "dt"

    def __init__(self, recipe: FinetuneDTRecipe, info: DatasetInfo):
        super().__init__(recipe, info)
        self.net = DecisionTransformer(info, recipe.dt)

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(
            batch["observations"],
            batch["actions"],
            batch["returns_to_go"],
            batch["timesteps"],
            batch["mask"],
            batch.get("goals"),
        )
