"""Video with tracking (``FaceTracker``) against detection on every frame (not a test).

    python benchmarks/video_tracking.py                       # shipped model, ../shared/data
    python benchmarks/video_tracking.py --run runs/mobilenetv2-128 --redetect-every 5 10 30

Four clips are built from the face data (written to ``--out``, never into the repository; the clips and overlays
replace files of their names there, so ``--out`` is a new or empty folder, or one an earlier run wrote, marked by its
``.video_tracking`` file: a folder holding anything else is refused):

* ``pan``: one annotated photo (``--photo``; default a frontal HELEN face from 300-W, shown at about
  its own size, so dlib finds it in every frame) slowly panned and zoomed in a 640 x 480 frame.  The
  motion is known, so each frame's points are mapped back into the photo: *jitter* is the mean
  frame-to-frame movement of the points that the motion does not explain, in % of the inter-ocular
  distance (outer eye corners); NME is against the photo's points.
* ``fastpan``: the same path in a third of the frames (three times the speed: up to about one face
  size per second), where smoothing would show as lag.
* ``still``: the photo standing still, with fresh camera-like noise in every frame (Gaussian,
  ``--noise`` gray levels): all movement of the points is jitter.
* ``youtube``: the YouTube68 frames of the ``--people`` people with the most frames, in file order,
  each centred on one black canvas.  YouTube68 keeps three frames per video, seconds apart (four to
  six videos per person): a clip of scene cuts and large moves, not of smooth motion, so jitter means
  nothing here; NME is against the CSV's points of each frame.

The photo and the people may be in the model's training data: NME compares the modes, it does not
rate the model.  The clips' points are iBUG 68's: a model of another markup (its scheme: a built-in one
or your own, whose crops the tracker cuts with ``Predictor.landmark_box``) gets every column but NME,
which it cannot be scored on ("-", said in one line before the table); jitter is measured on its own
points, still in % of the photo's inter-ocular distance.  Each clip runs through ``run_on_video`` once detecting on every frame and once per
``--redetect-every`` with tracking: frames/s there include decoding, drawing, encoding and the
model's first call.  Then ``--repeats`` passes feed the decoded frames to ``FaceTracker`` on a
warmed-up predictor for the points and the landmark time alone (ms per frame: the fastest pass, the
least disturbed by other work on the machine); "2nd passes" counts tracked faces predicted again
because their box moved (``REFINE_CHANGE``), "kept" the faces a detection missed that tracking
kept.  Each mode is measured with the raw points and with the points smoothed over time
(``FaceTracker``'s default; ``smooth`` column), on the same frames.  NME and jitter are means over
the frames (pairs of frames) where the face was found; "missed" counts frames without it.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from facelandmarks import metrics
from facelandmarks.cli.common import OneLineParser, complain
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.video import REDETECT_EVERY, FaceTracker, run_on_video
from facelandmarks.landmarks import is_builtin
from facelandmarks.machine import cpu_description

ROOT = Path(__file__).resolve().parents[1]
FRAME_SIZE = (640, 480)
CLIP_SCHEME = "ibug68"  # the markup of the photo's .pts and of the YouTube68 CSV: NME needs a model of it
EYE_CORNERS = (36, 45)  # of the photo's points: jitter's unit, whatever the model's markup
DEFAULT_PHOTO = "300w/helen/trainset/103236168_2.jpg"


class ClipError(ValueError):
    """A file a clip is built of cannot be read: its line is what the script says (exit status 2; it was 1, unnamed)."""


def read_pts(path: Path) -> np.ndarray:
    """The (68, 2) points of a 300-W style ``.pts`` file."""
    try:
        body = path.read_text().split("{")[1].split("}")[0].split()
        return np.array(body, np.float64).reshape(-1, 2)
    except (OSError, IndexError, ValueError) as err:
        raise ClipError(f"{path}: not a readable .pts file ({err})") from None


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise ClipError(f"{path}: missing or not an image")
    return image


OWNED_MARK = ".video_tracking"  # in --out: the folder is this script's, its files replaced by every run


def claim_out(out: Path) -> str | None:
    """None once ``out`` is this script's folder (new, empty, or marked ``OWNED_MARK`` by an earlier run; it is marked
    now), else the one line saying why not: its clips and overlays (pan.mp4, pan-10.mp4 ...) replaced files of the
    same names in whatever folder --out named."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        entries = sorted(p.name for p in out.iterdir())
        if entries and OWNED_MARK not in entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            return (f"--out {out}: holds {shown}, not written by video_tracking.py (no {OWNED_MARK} there); name a new "
                    "or empty folder, since its clips replace files of their names")
        (out / OWNED_MARK).touch()
    except OSError as err:  # a file of that name: a traceback
        return f"--out {out}: not a folder it can write in ({err.strerror or err})"
    return None


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """BGR frames -> an mp4v file."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def pan_clip(photo_path: Path, count: int, out: Path, name: str = "pan", moving: bool = True, noise: float = 0.0):
    """(clip path, (T, 2, 3) photo -> frame transforms, photo points): the photo slowly panned and zoomed
    (``moving``) or standing in the frame's middle, with Gaussian noise of ``noise`` gray levels added
    to every frame afresh."""
    photo, points = read_image(photo_path), read_pts(photo_path.with_suffix(".pts"))
    centre = points.mean(0)
    base = 0.3 * FRAME_SIZE[0] / np.ptp(points[:, 0])  # face about 30 % of the frame's width
    frames, transforms, rng = [], [], np.random.default_rng(0)
    for t in range(count):
        phase = 2 * np.pi * t / max(1, count - 1) if moving else 0.0
        scale = base * (1 + 0.15 * np.sin(phase))
        shift = np.array([FRAME_SIZE[0] / 2 + 80 * np.sin(phase), FRAME_SIZE[1] / 2 + 30 * np.sin(2 * phase)])
        matrix = np.hstack([scale * np.eye(2), (shift - scale * centre)[:, None]])
        image = cv2.warpAffine(photo, matrix, FRAME_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if noise:
            image = np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)
        frames.append(image)
        transforms.append(matrix)
    return write_clip(out / f"{name}.mp4", frames), np.array(transforms), points


def youtube_rows(data_dir: Path) -> dict:
    """{frame name: (its image's path, its (68, 2) points)} of YouTube68's CSVs (``ClipError``: one is unreadable)."""
    folder = data_dir / "youtube68"
    rows = {}
    for split in ("training", "test"):
        path = folder / f"{split}_frames_keypoints.csv"
        try:
            with open(path, newline="") as handle:
                for row in list(csv.reader(handle))[1:]:
                    rows.setdefault(row[0], (folder / split / row[0], np.array(row[1:], np.float64).reshape(-1, 2)))
        except (OSError, ValueError) as err:
            raise ClipError(f"{path}: not a readable YouTube68 CSV ({err})") from None
    return rows


def youtube_clip(rows: dict, people: int, out: Path):
    """(clip path, (T, 68, 2) points per frame): the frames (``youtube_rows``) of the people with most YouTube68
    frames."""
    by_person = defaultdict(list)
    for name in sorted(rows):
        by_person[name.rsplit("_", 1)[0]].append(name)
    chosen = sorted(by_person, key=lambda p: (-len(by_person[p]), p))[:people]
    names = [n for person in chosen for n in by_person[person]]
    images = [read_image(rows[n][0]) for n in names]
    height, width = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    frames, truth = [], []
    for name, image in zip(names, images):
        top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
        canvas = np.zeros((height, width, 3), np.uint8)
        canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
        frames.append(canvas)
        truth.append(rows[name][1] + [left, top])
    print(f"youtube clip: {', '.join(chosen)}: {len(frames)} frames of {width} x {height}")
    return write_clip(out / "youtube.mp4", frames), np.array(truth)


def decoded_frames(clip: Path) -> list[np.ndarray]:
    """The clip's frames as run_on_video sees them (RGB, after mp4v)."""
    capture, frames = cv2.VideoCapture(str(clip)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr[..., ::-1].copy())
    capture.release()
    return frames


def track_points(predictor: Predictor, frames: list[np.ndarray], truth: np.ndarray, redetect_every: int, repeats: int,
                 smooth: bool):
    """((T, K, 2) points, in the model's markup, of the face whose points' centre is nearest the truth's, NaN where
    none; ms per frame, the least of ``repeats`` passes; the tracker of the last pass) of FaceTracker passes over
    ``frames``."""
    points, times = np.full((len(truth), predictor.scheme.num_points, 2), np.nan), []
    for _ in range(repeats):
        tracker, start = FaceTracker(predictor, redetect_every, smooth=smooth), time.perf_counter()
        found = [tracker.update(frame) for frame in frames]
        times.append(1000 * (time.perf_counter() - start) / len(frames))
    for t, faces in enumerate(found):
        if faces:
            points[t] = min((f.points for f in faces), key=lambda p: np.linalg.norm(p.mean(0) - truth[t].mean(0)))
    return points, min(times), tracker


def nme_percent(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean NME of iBUG 68 ``points`` against the clip's iBUG 68 ``truth`` over the frames where the face was found."""
    found = ~np.isnan(points[:, 0, 0])
    visible = np.ones(truth[found].shape[:2], bool)
    return 100 * float(np.mean(metrics.nme_per_face(points[found], truth[found], visible, CLIP_SCHEME)))


def jitter_percent(points: np.ndarray, transforms: np.ndarray, photo_points: np.ndarray) -> float:
    """Mean frame-to-frame movement of the points mapped back into the photo, in % of its inter-ocular distance."""
    scale, shift = transforms[:, 0, 0][:, None, None], transforms[:, :, 2][:, None, :]
    in_photo = (points - shift) / scale
    moves = np.linalg.norm(np.diff(in_photo, axis=0), axis=2).mean(axis=1)
    iod = np.linalg.norm(photo_points[EYE_CORNERS[0]] - photo_points[EYE_CORNERS[1]])
    return 100 * float(np.nanmean(moves)) / iod


def measure(run_dir, predictor, clip: Path, truth: np.ndarray, redetect_every: int, out: Path, jitter,
            repeats: int) -> list[dict]:
    """Two table rows, raw and smoothed points: run_on_video's counts and speed (smoothed), and
    FaceTracker passes' points and time (NME "-" for a model of another markup than the clip's)."""
    mode = f"track, every {redetect_every}" if redetect_every > 1 else "detect every frame"
    print(f"{clip.stem}: {mode} ...", file=sys.stderr, flush=True)  # a row takes seconds to minutes
    video = run_on_video(run_dir, clip, out / f"{clip.stem}-{redetect_every}.mp4", track=redetect_every > 1,
                         redetect_every=redetect_every)
    frames, rows = decoded_frames(clip), []
    for smooth in (False, True):
        points, ms, tracker = track_points(predictor, frames, truth, redetect_every, repeats, smooth)
        missed = int(np.isnan(points[:, 0, 0]).sum())
        rows.append({"clip": clip.stem, "mode": mode, "smooth": "yes" if smooth else "no", "frames": video["frames"],
                     "detector runs": video["detections"], "tracked": video["tracked"], "2nd passes": tracker.refined,
                     "kept": tracker.kept,
                     "frames/s": f"{video['fps']:.1f}", "ms/frame": f"{ms:.1f}",
                     "NME %": f"{nme_percent(points, truth):.2f}" if scored(predictor) else "-",
                     "jitter %": jitter(points), "missed": missed})
    return rows


def scored(predictor: Predictor) -> bool:
    """Whether the model marks the clips' points (NME), not those of another markup."""
    return predictor.scheme.name == CLIP_SCHEME


def print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data")),
                        help="the face data folder, holding 300w/ and youtube68/ (default $FACE_DATA_DIR or ../shared/data)")
    parser.add_argument("--run", help="run directory (default: the shipped model in weights/)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/video_tracking"),
                        help=f"folder for the clips and overlays (default /tmp/video_tracking), whose files of their "
                             f"names each run replaces: a new or empty folder, or one an earlier run wrote (it holds "
                             f"{OWNED_MARK}); one holding anything else is refused")
    parser.add_argument("--photo", type=Path, help=f"annotated photo to pan (default: {DEFAULT_PHOTO})")
    parser.add_argument("--frames", type=int, default=150, help="frames of the pan clip")
    parser.add_argument("--noise", type=float, default=3.0, help="gray levels of noise in the still clip's frames")
    parser.add_argument("--people", type=int, default=4, help="YouTube68 people in the real clip")
    parser.add_argument("--repeats", type=int, default=3, help="FaceTracker passes per row; ms/frame is the fastest")
    parser.add_argument("--redetect-every", type=int, nargs="+", default=[REDETECT_EVERY], help="tracking settings to compare")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.redetect_every) < 2 or args.frames < 2 or args.people < 1 or args.repeats < 1:
        parser.error("--redetect-every takes values >= 2 (1 is the per-frame row), --frames >= 2, --people and --repeats >= 1")
    if args.run and not Path(args.run).exists():  # a traceback from Predictor.load, after the machine lines
        parser.error(f"{args.run}: no such run directory")
    photo = args.photo or args.data_dir / DEFAULT_PHOTO
    for path, what in ((photo, "--photo: an annotated photo, a .pts file beside it"),
                       (photo.with_suffix(".pts"), "--photo's iBUG 68 points, beside it"),
                       (args.data_dir / "youtube68", "--data-dir: the face data, with youtube68/")):
        if not path.exists():  # after minutes of the pan clips' rows, for the YouTube68 clip
            parser.error(f"{path}: not found ({what})")
    if problem := claim_out(args.out):
        parser.error(problem)
    try:  # the photo and the YouTube68 CSVs: said after minutes of the pan clips' rows
        read_image(photo), read_pts(photo.with_suffix(".pts"))
        youtube = youtube_rows(args.data_dir)
    except ClipError as err:
        parser.error(str(err))
    print(cpu_description())
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine slows every row alike)")
    predictor = Predictor.load(args.run)
    predictor.predict_crops(np.zeros((1, predictor.crop_size, predictor.crop_size, 3), np.uint8))  # warm-up
    if not scored(predictor):
        print(f"NME: the model marks {predictor.scheme.name} ({predictor.scheme.num_points} points), the clips' points are "
              f"iBUG 68: NME left out (-), the other columns measured")
        # a run of your own markup from before prepare measured it: a sparse markup's box is then too small (built-ins
        # carry theirs: scheme_files.BUILTIN_LANDMARK_BOXES; muct76's and wflw98's is iBUG 68's)
        if predictor.landmark_box is None and not is_builtin(predictor.scheme):
            print(f"tracking: {predictor.name} stores no landmark box for {predictor.scheme.name}, so the tracker boxes its "
                  f"points as iBUG 68's (a markup that spans less of the face loses its tracks: see 'detector runs')")
    rows = []
    try:
        for clip, transforms, photo_points in (pan_clip(photo, args.frames, args.out),
                                               pan_clip(photo, max(2, args.frames // 3), args.out, "fastpan"),
                                               pan_clip(photo, args.frames, args.out, "still", moving=False, noise=args.noise)):
            truth = np.einsum("tij,kj->tki", transforms[:, :, :2], photo_points) + transforms[:, None, :, 2]
            for every in [1, *args.redetect_every]:
                rows += measure(args.run, predictor, clip, truth, every, args.out,
                                lambda p, tf=transforms, pp=photo_points: f"{jitter_percent(p, tf, pp):.2f}", args.repeats)
        clip, truth = youtube_clip(youtube, args.people, args.out)
        for every in [1, *args.redetect_every]:
            rows += measure(args.run, predictor, clip, truth, every, args.out, lambda p: "-", args.repeats)
    except ClipError as err:  # a YouTube68 frame missing: the rows measured are kept, the line is the script's
        if rows:
            print_table(rows)
        complain(f"video_tracking.py: {err}")
        return 2
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
