"""The dataset index: every sample of one split, whatever the on-disk format.

Readers (`bench.data.formats`) build it; pipelines (`pipelines/`) consume it. A sample
points at one file or frame folder per modality (``rgb``, ``depth``, ``flow``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

MODALITIES = ("rgb", "depth", "flow")
NO_LABEL = -1  # IsoGD's test list carries 0 ("no label"), mapped here


@dataclass(frozen=True, slots=True)
class Sample:
    sample_id: str                 # unique within its index, e.g. "train/001/M_00001" or "34870"
    label: int                     # 0-based class, NO_LABEL when the split has none
    paths: Mapping[str, Path]      # modality -> absolute path of a video file or frame folder
    num_frames: int | None = None  # decodable frames, from metadata or the index cache when
                                   # known; probed from the file otherwise (bench.data.probe)
    source: str = ""               # "list_file:line" it came from, for error messages


@dataclass(slots=True)
class DatasetIndex:
    format: str                    # "isogd" | "jester" | "framelist"
    root: Path
    split: str                     # "train" | "valid" | "test"
    classes: list[str]
    samples: list[Sample] = field(default_factory=list)
    #: every ``num_frames`` is a count of decodable frames, verified by decoding (a probed
    #: index, or counts from ``bench data prepare``'s cache): readers need not count again
    counts_decoded: bool = False

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present in every sample, in MODALITIES order."""
        if not self.samples:
            return ()
        common = set(self.samples[0].paths)
        for s in self.samples[1:]:
            common &= set(s.paths)
        return tuple(m for m in MODALITIES if m in common)

    def shard(self, rank: int, world_size: int) -> "DatasetIndex":
        """Every ``world_size``-th sample from ``rank``: disjoint shards that cover the split."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        return DatasetIndex(self.format, self.root, self.split, self.classes,
                            self.samples[rank::world_size], counts_decoded=self.counts_decoded)
