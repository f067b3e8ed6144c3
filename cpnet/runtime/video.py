"""Writing a video file: the one writer for the demo's recording and ``cpnet data --clip``.

Frames go to a temporary name beside the target (``.NAME.<pid>.part.mp4``); when the writer is closed
the file must open again and hold every frame written, and only then is it renamed into place. OpenCV's
``VideoWriter`` reports no failed write (a full disk, ``ulimit -f``), so without that check a truncated,
unplayable file would end up under the name asked for with exit 0. What a killed writer (``kill -9``)
left behind is removed by the next writer to the same place.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .files import sweep, utf8_path

#: The container (file suffix) picks the codec; each of these opens in every OpenCV with FFmpeg.
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def check_video_suffix(path: "str | Path", flag: str = "") -> None:
    if Path(path).suffix.lower() not in VIDEO_FOURCC:
        raise UserError(f"{flag + ' ' if flag else ''}{path}: the video must be {', '.join(VIDEO_FOURCC)} "
                        f"(the container picks the codec)")


class VideoFile:
    """A video written under a temporary name and moved into place by :meth:`close` once it reads back whole.
    Frames of another size than the first (the demo's mode change) are resized to the first's.
    ``hint`` ends the line that says OpenCV cannot write here (the demo names its OpenCV's FFmpeg)."""

    def __init__(self, path: "str | Path", fps: float, hint: str = "try .avi"):
        # FFmpeg's own complaint about the cut-short file ("moov atom not found") would repeat our one line; read
        # when FFmpeg is first used, and the user's own setting wins
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        self.path = Path(utf8_path(path, "video"))
        check_video_suffix(self.path)
        suffix = self.path.suffix.lower()
        self.fourcc = VIDEO_FOURCC[suffix]
        self.fps = float(fps)
        self.hint = hint
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part{suffix}")
        sweep(self.path.parent, f".{self.path.name}.*.part*")  # what a killed writer (kill -9) left behind
        self.writer = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                self.tmp.unlink(missing_ok=True)
                raise UserError(f"{self.path}: OpenCV cannot write this video (fourcc {self.fourcc}, {w}x{h} at "
                                f"{self.fps:g} fps); {self.hint}")
        if (w, h) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place (None if no frame was written); a file that does not read back
        whole is removed, and a one-line UserError says so."""
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        try:
            self._check_readable()
            os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.path

    def discard(self) -> None:
        """Drop what was written (an error before the end): nothing is left under either name."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)

    def _check_readable(self) -> None:
        cap = cv2.VideoCapture(str(self.tmp))
        try:
            ok = cap.isOpened() and cap.read()[0]
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
        finally:
            cap.release()
        # some containers (mkv) give the frame count as an estimate from the duration: a little slack, while a
        # cut-short file does not open at all or lacks most of its frames
        if not ok or (count > 0 and count < self.frames * 0.98 - 1):
            size = self.tmp.stat().st_size if self.tmp.exists() else 0
            raise UserError(f"{self.path}: not saved: the video could not be finished ({size} bytes written, "
                            f"{count} of {self.frames} frames readable; is the disk full?); free some space "
                            f"and run again")
