"""Collection: roll a policy out and write its episodes into the store as a new dataset version.

    plan = plan_collection(ws, CollectRequest(policy="walk", dataset="walk-expert", episodes=100))
    with ws.start_run("collect", plan.settings.dataset, recipe=plan.settings, ...) as run:
        result = collect(plan, run)

Policies: any rollout source (flexrl.rollout.sources): a PPO run or checkpoint, a shipped
policy `zoo:NAME`, a BC/DT finetune run, or `random` (uniform actions in the action bounds).
A PPO policy acts with its Gaussian mean, plus optional Gaussian noise (`noise`, in action
units, clipped to the bounds), or a sample from its Gaussian (`stochastic`).

Reproducible: episode k (0-based) resets its env with seed `seed + k` and draws its noise (or its
random actions) from its own generator seeded with `[seed + k, 1]`, so an episode's data does not
depend on which env slot or worker ran it, and the same command with the same seed gives the same
arrays. (Batched float32 inference can differ in the last bit with the batch size, so keep
--num-envs for bit-identical policy data.)

Fresh by default: without a seed, one is drawn from OS entropy (as numpy and gymnasium do for
`seed=None`), so two default collections never store the same episodes twice, whether they run
one after the other, concurrently (pods) or into different datasets that are later trained on
together; "continue after the dataset's highest seed" would collide for concurrent writers. The
seed drawn is recorded (run record, recipe.yaml, the version's message, every episode) and
printed, so any collection can be repeated with --seed.

Vectorised: each process runs the rollout loop (flexrl.rollout.loop): `num_envs` envs in
lockstep, one batched policy call per step, a Humanoid's physics on every core. An episode's
final observation (Minari's observations[T]) is the one `step` returned with terminated or
truncated, i.e. exactly what SAME_STEP autoreset would put into `infos["final_obs"]`.

Stored per episode (flexrl.store.recording): seed, task (the Humanoid task's name; none for
plain gymnasium envs), policy (the checkpoint's sha256 digest, or "random"), goals
(`info["goal"]` of each step: the command the step was rewarded against) and the numeric info
keys (Humanoid: lin_vel, yaw_rate, xy, heading and every reward term as `reward_terms.<term>`).

Workers and versions: `workers=W` starts W processes (spawn, one torch thread each); worker w
collects a contiguous block of the episodes and writes its own shards, concurrently, under its
own writer lease. **One collection is one version**, whatever W: when every worker has written
all its shards (still invisible to readers), the parent's writer adopts them in worker order
(its lease names them before any worker lets go of its own, so gc never sees them
unprotected; `ShardWriter.hand_over` / `let_go` / `adopt`) and commits them as one version, so
the episode order in the dataset is reproducible too. An interruption at any point (Ctrl-C,
SIGTERM, a failing worker) commits nothing: the workers and the parent delete the shards they
hold, and a `kill -9` leaves shards that `flexrl data gc` finds once their leases expire.

Modules: `plan.py` checks a request into a plan before a run or a shard exists; `jobs.py`
rolls one process's share of the episodes out (flexrl.rollout) into a writer; `workers.py`
runs the shares as spawned processes with the two-phase commit above; `collect.py` runs a
plan and reports what was committed.
"""

from flexrl.collection.collect import CollectResult, collect
from flexrl.collection.plan import (
    DEFAULT_TASK,
    MAX_SEED,
    RANDOM,
    CollectPlan,
    CollectRequest,
    CollectSettings,
    collection_env,
    dataset_env,
    plan_collection,
)

__all__ = [
    "DEFAULT_TASK",
    "MAX_SEED",
    "RANDOM",
    "CollectPlan",
    "CollectRequest",
    "CollectResult",
    "CollectSettings",
    "collect",
    "collection_env",
    "dataset_env",
    "plan_collection",
]
