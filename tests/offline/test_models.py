"""BC and DT modules: bounds, causality, padding, determinism, and that they can learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexrl.config import FinetuneBCRecipe, FinetuneDTRecipe, validate_recipe
from flexrl.offline.bc import BCModule
from flexrl.offline.datamodule import DatasetInfo
from flexrl.offline.dt import DTModule
from flexrl.offline.training import build
from tests.offline.conftest import ACT_DIM, GOAL_DIM, OBS_DIM, TINY_DT

K = 6


ACT_LOW, ACT_HIGH = np.array([-0.4, 0.0], np.float32), np.array([0.4, 2.0], np.float32)


def info() -> DatasetInfo:
    rng = np.random.default_rng(1)
    return DatasetInfo(
        ref="x@v1",
        digest="sha256:0",
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        goal_dim=GOAL_DIM,
        obs_mean=rng.normal(size=OBS_DIM).astype(np.float32),
        obs_std=rng.uniform(0.5, 2, size=OBS_DIM).astype(np.float32),
        max_return=10.0,
        max_length=100,
        act_low=ACT_LOW,  # like Humanoid's [-0.4, 0.4], and one range off centre
        act_high=ACT_HIGH,
    )


def dt_module(**dt) -> DTModule:
    torch.manual_seed(0)
    recipe = validate_recipe({"dt": {**TINY_DT, "context_len": K, **dt}}, FinetuneDTRecipe)
    return DTModule(recipe, info())


def bc_module() -> BCModule:
    torch.manual_seed(0)
    return BCModule(validate_recipe({"bc": {"hidden_sizes": [32, 32]}}, FinetuneBCRecipe), info())


def window_batch(b: int = 4, k: int = K, scale: float = 1.0, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "observations": torch.randn(b, k, OBS_DIM, generator=g) * scale,
        "actions": torch.from_numpy(ACT_LOW) + torch.rand(b, k, ACT_DIM, generator=g) * 0.4,
        "returns_to_go": torch.randn(b, k, generator=g) * scale,
        "timesteps": torch.arange(k).repeat(b, 1) + 3,
        "mask": torch.ones(b, k, dtype=torch.bool),
        "goals": torch.randn(b, k, GOAL_DIM, generator=g) * scale,
    }


def test_predictions_lie_in_action_bounds() -> None:
    dt, bc = dt_module().eval(), bc_module().eval()
    batch = window_batch(scale=1e4)  # huge inputs would push an unbounded head far out
    low, high = torch.from_numpy(ACT_LOW), torch.from_numpy(ACT_HIGH)
    with torch.no_grad():
        for pred in (dt.predict(batch), bc.predict({k: v[:, -1] for k, v in batch.items()})):
            assert torch.isfinite(pred).all()
            assert (pred >= low).all() and (pred <= high).all()
    for model in (dt, bc):  # tanh's ends map onto the range's ends: all of it is reachable
        ends = model.net.act_scaler.denormalize(torch.tensor([[-1.0], [1.0]]))
        torch.testing.assert_close(ends, torch.stack([low, high]))


@pytest.mark.parametrize("t", [0, 2, K - 2])
def test_dt_is_causal(t: int) -> None:
    """Changing steps t+1.. (every input) leaves the predictions for steps <= t unchanged."""
    model = dt_module().eval()
    batch = window_batch()
    changed = {k: v.clone() for k, v in batch.items()}
    for key in ("observations", "actions", "returns_to_go", "goals"):
        changed[key][:, t + 1 :] = torch.randn_like(changed[key][:, t + 1 :]) * 5
    changed["timesteps"][:, t + 1 :] += 7
    with torch.no_grad():
        a, b = model.predict(batch), model.predict(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the later steps did change


def test_action_at_t_does_not_see_its_own_action() -> None:
    model = dt_module().eval()
    batch = window_batch()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["actions"][:, -1] = -changed["actions"][:, -1]
    with torch.no_grad():
        torch.testing.assert_close(model.predict(batch), model.predict(changed), rtol=0, atol=1e-6)


def test_padded_steps_do_not_change_the_loss() -> None:
    model = dt_module().eval()
    real = 3
    short = window_batch(k=real)
    padded = {}
    for key, value in short.items():  # left-pad to K with garbage, mask False there
        pad = torch.randn(value.shape[0], K - real, *value.shape[2:]) * 100
        padded[key] = torch.cat([pad.to(value.dtype), value], dim=1)
    padded["mask"][:, : K - real] = False
    padded["timesteps"][:, : K - real] = 999
    with torch.no_grad():
        loss_short = model.loss(short)
        loss_padded = model.loss(padded)
        padded["actions"][:, : K - real] = torch.nan  # not even NaN targets leak into the loss
        loss_nan = model.loss(padded)
    torch.testing.assert_close(loss_padded, loss_short, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_nan, loss_short, rtol=1e-5, atol=1e-6)


def test_padding_gives_finite_gradients() -> None:
    model = dt_module().train()
    batch = window_batch()
    batch["mask"][:, :4] = False
    model.loss(batch).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_gpt2_positional_embedding_is_neutralised() -> None:
    wpe = dt_module().net.transformer.wpe.weight
    assert not wpe.requires_grad and wpe.abs().max() == 0


def _losses(workspace, kind: str, steps: int) -> list[float]:
    recipe_model = FinetuneDTRecipe if kind == "dt" else FinetuneBCRecipe
    section = {"dt": {**TINY_DT, "dropout": 0.1}} if kind == "dt" else {}
    recipe = validate_recipe(
        {"seed": 3, "train": {"batch_size": 8, "steps_per_epoch": steps}, **section}, recipe_model
    )
    module, data = build(kind, recipe, "tiny@v1", workspace)
    optimizer = module.configure_optimizers()["optimizer"]
    losses = []
    for batch in data.train_dataloader():
        optimizer.zero_grad()
        loss = module.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["dt", "bc"])
def test_same_seed_gives_identical_losses(workspace, kind: str) -> None:
    first, second = _losses(workspace, kind, 5), _losses(workspace, kind, 5)
    assert len(first) == 5
    assert first == second


def _overfit(module, batch: dict, steps: int, lr: float) -> tuple[float, float]:
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0)
    module.train()
    initial = module.loss(batch).item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.loss(batch)
        loss.backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        return initial, module.loss(batch).item()


def _whole_dataset_batch(workspace, kind: str) -> dict:
    """Every step of the tiny dataset's first episodes, as one batch."""
    recipe_model = FinetuneDTRecipe if kind == "dt" else FinetuneBCRecipe
    section = {"dt": TINY_DT} if kind == "dt" else {}
    recipe = validate_recipe({"data": {"val_fraction": 0}, **section}, recipe_model)
    _, data = build(kind, recipe, "tiny@v1", workspace)
    from flexrl.offline.datamodule import _open_sampler, to_tensors

    spec = data._spec(data.train_episodes[:4], 1, 0)
    sampler = _open_sampler(spec)
    episodes = np.repeat(spec.episodes, sampler.lengths[spec.episodes])
    ends = np.concatenate(
        [
            np.arange(s, s + n)
            for s, n in zip(
                sampler.starts[spec.episodes], sampler.lengths[spec.episodes], strict=True
            )
        ]
    )
    return to_tensors(sampler.windows(episodes, ends), kind)


def test_dt_overfits_a_tiny_dataset(workspace) -> None:
    batch = _whole_dataset_batch(workspace, "dt")
    torch.manual_seed(0)
    module = DTModule(
        validate_recipe({"dt": {**TINY_DT, "context_len": 5}}, FinetuneDTRecipe),
        _real_info(workspace, "dt"),
    )
    initial, final = _overfit(module, batch, 400, 3e-3)
    assert final < 1e-3 < initial


def test_bc_overfits_a_tiny_dataset(workspace) -> None:
    batch = _whole_dataset_batch(workspace, "bc")
    torch.manual_seed(0)
    module = BCModule(
        validate_recipe({"bc": {"hidden_sizes": [64, 64]}}, FinetuneBCRecipe),
        _real_info(workspace, "bc"),
    )
    initial, final = _overfit(module, batch, 400, 3e-3)
    assert final < 1e-3 < initial


def _real_info(workspace, kind: str) -> DatasetInfo:
    recipe_model = FinetuneDTRecipe if kind == "dt" else FinetuneBCRecipe
    section = {"dt": TINY_DT} if kind == "dt" else {}
    _, data = build(kind, validate_recipe(section, recipe_model), "tiny@v1", workspace)
    assert data.info is not None
    return data.info
