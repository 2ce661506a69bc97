"""Video of a rollout, and the GL checks that come before any.

MuJoCo picks its GL backend once, when it is first imported. `use_offscreen_gl()` sets
MUJOCO_GL=egl (unless the user chose one) and must run before anything imports mujoco; this
module imports mujoco, gymnasium's MuJoCo envs and torch only inside functions for that reason.
`check_gl()` then opens a context so a machine without GL fails at once with one line saying
what to install, before any episode is run.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flexrl.errors import FlexrlError
from flexrl.rollout.progress import progress_bar

if TYPE_CHECKING:
    import gymnasium as gym

VIDEO_SIZE = (320, 240)  # width, height: Mesa's software EGL renders this at ~7-17 frames/s
VIDEO_STEPS = 200  # frames of the video episode, at most (3 s of Humanoid)

GL_HINTS = {
    "egl": "install EGL and Mesa's drivers (Debian/Ubuntu: apt-get install libegl1 "
    "libgl1-mesa-dri), or render with OSMesa instead: MUJOCO_GL=osmesa and libosmesa6",
    "osmesa": "install OSMesa (Debian/Ubuntu: apt-get install libosmesa6), or render with EGL "
    "instead: MUJOCO_GL=egl and libegl1 libgl1-mesa-dri",
}


def use_offscreen_gl() -> str:
    """Make MuJoCo render offscreen with EGL unless the user chose a backend (MUJOCO_GL).

    MuJoCo reads MUJOCO_GL once, when first imported: call this before anything imports it.
    Returns the backend in effect.
    """
    if "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules:
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL", "")


def gl_error(exc: BaseException, backend: str) -> FlexrlError:
    """One line for a GL backend that cannot work here, naming what to install."""
    text = " ".join(str(exc).split())
    if isinstance(exc, AttributeError) and "NoneType" in text:
        # PyOpenGL leaves its platform None when dlopen of libEGL/libOSMesa failed
        cause = "its GL library could not be loaded"
    else:
        cause = text.split(". ")[0][:160] or type(exc).__name__
    hint = GL_HINTS.get(
        backend.lower(),
        "an on-screen backend needs a display; unset MUJOCO_GL to render offscreen with EGL "
        "(Debian/Ubuntu: libegl1 libgl1-mesa-dri) or set MUJOCO_GL=osmesa (libosmesa6)",
    )
    return FlexrlError(
        f"--video: cannot render with MUJOCO_GL={backend or '(unset)'} ({cause}); {hint}"
    )


def check_gl(width: int = VIDEO_SIZE[0], height: int = VIDEO_SIZE[1]) -> None:
    """Make a GL context and a MuJoCo render context now, so a machine without GL fails before
    any work is done (GLFW without a display only warns until MuJoCo needs the context)."""
    backend = os.environ.get("MUJOCO_GL", "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GLFW's warnings repeat what the error says
            import mujoco  # with a broken EGL/OSMesa the import itself fails

            context = mujoco.GLContext(width, height)
            try:
                context.make_current()
                model = mujoco.MjModel.from_xml_string("<mujoco/>")
                mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100).free()
            finally:
                context.free()
    except Exception as e:  # only GL work happens here: any failure means no usable GL
        raise gl_error(e, backend) from None


@dataclass
class VideoResult:
    path: Path
    frames: int
    fps: float  # of the video file
    render_fps: float  # frames rendered, stepped and encoded per second after the first
    episode_return: float  # over the steps shown


class EpisodeVideo:
    """One env's frames streamed into an MP4 (imageio, libx264) at the env's frame rate, at
    most `max_frames` of them. The file appears complete or not at all: frames go into a
    temporary file beside `path`, renamed into place when the block ends without an error.

        with EpisodeVideo(env, path, 201) as video:
            ... video.frame() after the reset and after every step ...
        video.result(episode_return)
    """

    def __init__(
        self,
        env: gym.Env,
        path: Path,
        max_frames: int,
        size: tuple[int, int] = VIDEO_SIZE,
        progress: bool = True,
    ) -> None:
        self.env, self.path, self.max_frames = env, path, max_frames
        _set_render_size(env, *size)
        self.fps = float(env.metadata.get("render_fps") or 30)
        self.tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
        self.frames = 0
        self.start = time.monotonic()
        self.elapsed = 0.0
        self.progress = progress

    def __enter__(self) -> EpisodeVideo:
        import imageio.v2 as imageio

        self.writer = imageio.get_writer(
            self.tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264", macro_block_size=8
        )
        self.bar = progress_bar("video", "frames", self.progress, self.max_frames)
        self.advance = self.bar.__enter__()
        return self

    def frame(self) -> None:
        """Render the env's current state as the next frame (nothing once the video is full)."""
        if self.frames >= self.max_frames:
            return
        self.writer.append_data(self.env.render())
        self.frames += 1
        if self.frames == 1:  # the rate leaves out making the GL context and encoder
            self.start = time.monotonic()
        self.elapsed = time.monotonic() - self.start
        self.advance()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.bar.__exit__(None, None, None)
            self.writer.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)

    def result(self, episode_return: float) -> VideoResult:
        """`episode_return`: the rewards of the steps shown (frames - 1 of them)."""
        frames, elapsed = self.frames, self.elapsed
        rate = (frames - 1) / elapsed if frames > 1 and elapsed > 0 else 0.0
        return VideoResult(self.path.resolve(), frames, self.fps, rate, episode_return)


def _set_render_size(env: gym.Env, width: int, height: int) -> None:
    """Shrink a MuJoCo env's offscreen frame before its first render (gymnasium's default is
    480x480); other envs keep their own size."""
    base = env.unwrapped
    renderer = getattr(base, "mujoco_renderer", None)
    if renderer is None:
        return
    visual = base.model.vis.global_
    visual.offwidth, visual.offheight = max(visual.offwidth, width), max(visual.offheight, height)
    renderer.width, renderer.height = width, height
    base.width, base.height = width, height
