"""Rolling policies out in environments: the one path behind `flexrl eval`, `flexrl collect`,
videos and training's replay recording.

    sources.py   SOURCE (a run, a checkpoint, zoo:NAME, random) -> PolicySource -> Actor
    actors.py    the batched Actor protocol; PPO and random actors (BC/DT: flexrl.offline.actors)
    slots.py     EnvSlots: N envs reset one at a time (own seed, own task), stepped together
    loop.py      rollout(): the episode loop, one batched policy call per step -> store Episodes
    metrics.py   per-episode and per-task metrics (tracking errors, distance, turned, falls)
    video.py     an episode rendered offscreen to MP4, and the GL checks before it
    progress.py  progress bars of long rollouts

Episodes are recorded step by step with flexrl.store.recording, as training's replay is.
Nothing here imports mujoco or torch at import time (MuJoCo's GL backend is chosen on import).
"""
