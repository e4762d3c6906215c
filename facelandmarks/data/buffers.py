"""The output arrays of ``prepare``: one side held in memory, or written shard by shard into the staged set."""

from __future__ import annotations

import os

import numpy as np

from facelandmarks.data import npz
from facelandmarks.data.cropping import CroppedFace
from facelandmarks.data.fileset import SetWriter
from facelandmarks.data.records import FaceRecord
from facelandmarks.landmarks import mirror_landmarks


class SplitBuffer:
    """Preallocated arrays of one output file, filled face by face.

    ``np.empty`` only reserves address space: rows never written (skipped
    faces) cost no memory.
    """

    def __init__(self, capacity: int, size: int, channels: int, num_points: int):
        self.images = np.empty((capacity, size, size, channels), np.uint8)
        self.landmarks = np.empty((capacity, num_points, 2), np.float32)
        self.visible = np.empty((capacity, num_points), bool)
        self.box = np.empty((capacity, 4), np.float32)
        self.mirrored = np.zeros(capacity, bool)
        self.vflipped = np.zeros(capacity, bool)
        self.strings = {"subject": [], "name": [], "source": [], "detection": [], "path": []}
        self.count = 0

    def add(self, face: CroppedFace, record: FaceRecord, image, landmarks, visible, mirrored=False, vflipped=False):
        i = self.count
        self.images[i] = image
        self.landmarks[i] = landmarks
        self.visible[i] = visible
        self.box[i] = face.box
        self.mirrored[i] = mirrored
        self.vflipped[i] = vflipped
        strings = (("subject", record.subject), ("name", record.name), ("source", record.source),
                   ("detection", face.detection), ("path", os.path.abspath(record.image_path) if record.image_path else ""))
        for key, value in strings:
            self.strings[key].append(value)
        self.count += 1

    def arrays(self, scheme: str, set_id: str) -> dict[str, np.ndarray]:
        n = self.count
        out = {
            "images": self.images[:n],
            "landmarks": self.landmarks[:n],
            "visible": self.visible[:n],
            "box": self.box[:n],
            "mirrored": self.mirrored[:n],
            "vflipped": self.vflipped[:n],
            "scheme": np.array(scheme),
            "set_id": np.array(set_id),
        }
        for key, values in self.strings.items():
            out[key] = np.array(values, dtype=str) if values else np.zeros(0, "<U1")
        return out


def add_with_copies(buffer: SplitBuffer, face: CroppedFace, record: FaceRecord, scheme, mirror: bool, vflip: bool):
    """The face, and its mirrored / vertically flipped copies when asked (training faces only)."""
    buffer.add(face, record, face.image, face.landmarks, face.visible)
    if mirror:
        uv, visible = mirror_landmarks(face.landmarks, face.visible, scheme)
        _, labelled = mirror_landmarks(face.landmarks, face.labelled, scheme)
        uv[~labelled] = 0.0
        buffer.add(face, record, face.image[:, ::-1], uv, visible, mirrored=True)
    if vflip:
        # The seed's vertical flip: y' = 1 - y, identities unchanged.
        uv = face.landmarks.copy()
        uv[:, 1] = np.where(face.labelled, 1.0 - uv[:, 1], 0.0)
        buffer.add(face, record, face.image[::-1], uv, face.visible, vflipped=True)


def write_npz(writer: SetWriter, file_name: str, arrays: dict[str, np.ndarray], compress: bool, jpeg: int = 0) -> None:
    """One npz of the set, schema-checked (under its final name) before it is written (``jpeg``: see ``save_npz``)."""
    npz.validate(arrays, writer.final(file_name))
    writer.write(file_name, lambda path: npz.save_npz(path, arrays, compress=compress, jpeg=jpeg))


class ShardedBuffer:
    """Faces of one side written ``shard_size`` rows at a time to numbered npz files of the staged set.

    Memory stays at one shard whatever the dataset's size; ``finish`` writes
    the manifest (``PREFIX_train.shards.json``) that ``train.py --data`` reads.
    """

    def __init__(self, writer: SetWriter, side: str, shard_size: int, copies: int, size: int, channels: int,
                 num_points: int, scheme: str, compress: bool, jpeg: int = 0, landmark_box=None):
        self.writer, self.stem = writer, f"{writer.name}_{side}"
        self.landmark_box = landmark_box  # the manifest's definition carries it (``npz.write_manifest``)
        self.shard_size, self.scheme, self.compress, self.jpeg = shard_size, scheme, compress, jpeg
        self.shape = (size, size, channels)
        self._fresh = lambda: SplitBuffer(shard_size + copies, size, channels, num_points)
        self.buffer = self._fresh()
        self.shards, self.subjects = [], set()
        self.count = 0

    def add(self, face, record, scheme, mirror: bool, vflip: bool) -> None:
        before = self.buffer.count
        add_with_copies(self.buffer, face, record, scheme, mirror, vflip)
        self.count += self.buffer.count - before
        self.subjects.add(record.subject)
        if self.buffer.count >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.buffer.count == 0:
            return
        file_name = npz.shard_path(self.stem, len(self.shards)).name
        write_npz(self.writer, file_name, self.buffer.arrays(self.scheme, self.writer.set_id), self.compress,
                  self.jpeg)
        self.shards.append({"file": file_name, "faces": int(self.buffer.count)})
        self.buffer = self._fresh()

    def finish(self) -> str:
        """Write the last shard and the manifest; returns the manifest's final path."""
        self.flush()
        file_name = f"{self.stem}{npz.MANIFEST_SUFFIX}"
        self.writer.write(file_name, lambda path: npz.write_manifest(path, self.shards, self.scheme, self.shape,
                                                                     self.writer.set_id, self.landmark_box))
        return str(self.writer.final(file_name))
