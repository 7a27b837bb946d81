"""The parameter set of the AHDI method, with the spec's defaults.

Every choice the algorithm makes is a named field here, so a store, a
benchmark or an ablation can record exactly what produced an image, and
``param_hash`` tells two parameter sets apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

CROPS = ("face", "track", "align", "center", "none", "landmarks")
#: The crops that follow the face frame by frame (``ahdi.pipeline.face_track``).
TRACKED_CROPS = ("track", "align")
SEGMENTATIONS = ("adaptive", "fixed")
LEVEL2_MODES = ("weighted", "arp")
NORMALIZATIONS = ("minmax", "percentile")
FARNEBACK_DEFAULT = (0.5, 3, 15, 3, 5, 1.2, 0)


def _param(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
           kind: type | None = None, option: bool = True) -> Any:
    """A parameter field: its default plus what a command line needs to offer it.

    ``kind`` is the type an option parses (default: the default's type),
    ``option=False`` keeps a parameter out of the command line (config only).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "kind": kind or type(default), "option": option})


@dataclasses.dataclass(frozen=True)
class AhdiParams:
    """Parameters of one AHDI conversion (see docs/algorithm.md).

    Parameters
    ----------
    size : int
        Output side S; frames are cropped and resized to S x S.
    crop : {'face', 'track', 'align', 'center', 'none', 'landmarks'}
        How the frame is cropped before resizing (applied by the pipeline):
        one face box for the clip, a box that follows the face, the face
        registered onto the clip's first well-detected face (docs/algorithm.md).
    flow_side : int
        Longest side of the grey frames Farneback runs on.
    farneback : tuple
        ``(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags)``.
    eps : float or 'auto'
        Activity threshold on MA_t in px/frame; 'auto' = 0.5 x median(MA).
    n_segments : int
        Primary number of adaptive segments n (>= 2).
    min_len : int
        Fewest frames in a segment.
    segmentation : {'adaptive', 'fixed'}
        Adaptive energy quantiles, or fixed windows of ``segment_len``.
    segment_len : int
        Window length in frames for ``segmentation='fixed'``.
    stride : int or None
        Window start step for ``fixed``; None means ``segment_len // 2``.
    patch : int
        Odd side of the box mean of the patch-wise pooling.
    levels : int
        Hierarchy depth (1 = one patch-wise dynamic image of the video).
    level2 : {'weighted', 'arp'}
        How window images combine at the last level.
    window : int
        Run length of intermediate levels when ``levels >= 3``.
    normalize : {'minmax', 'percentile'}
        Mapping of the float image to uint8.
    max_windows : int
        Capacity of the stored MDV stack; a video with more level-1 windows
        than this fails clearly instead of being silently truncated.
    """

    # Each field's metadata holds its one-line help and, where the values
    # are a closed set, its choices: the command line builds its options
    # from them, so a parameter is described in this one place.
    size: int = _param(224, "Output side S in pixels.")
    crop: str = _param("align", "Crop before resizing.", choices=CROPS)
    flow_side: int = _param(64, "Longest side of the frames Farneback runs on.")
    farneback: tuple = _param(FARNEBACK_DEFAULT, "Farneback settings (pyr_scale, levels, "
                              "winsize, iterations, poly_n, poly_sigma, flags); --config only.",
                              option=False)
    eps: float | str = _param("auto", "Activity threshold in px/frame, or 'auto' = "
                              "0.5 x median.", kind=str)
    n_segments: int = _param(8, "Number of adaptive segments n.")
    min_len: int = _param(3, "Fewest frames in a segment.")
    segmentation: str = _param("adaptive", "Adaptive energy quantiles or fixed windows.",
                               choices=SEGMENTATIONS)
    segment_len: int = _param(10, "Window length for --segmentation fixed.")
    stride: int | None = _param(None, "Window step for fixed windows (default: "
                                "segment-len // 2).", kind=int)
    patch: int = _param(9, "Odd patch side p of the patch-wise pooling.")
    levels: int = _param(2, "Hierarchy depth.")
    level2: str = _param("weighted", "How window images combine.", choices=LEVEL2_MODES)
    window: int = _param(3, "Run length of intermediate levels when levels >= 3.")
    normalize: str = _param("minmax", "Float image to uint8 mapping.", choices=NORMALIZATIONS)
    max_windows: int = _param(256, "MDV capacity in fixed mode.")

    def __post_init__(self) -> None:
        # Normalise types that arrive from YAML/JSON/CLI so that equal
        # parameter sets hash equally.
        object.__setattr__(self, "farneback", tuple(self.farneback))
        if isinstance(self.eps, str) and self.eps != "auto":
            try:
                object.__setattr__(self, "eps", float(self.eps))
            except ValueError:
                pass
        elif isinstance(self.eps, int):
            object.__setattr__(self, "eps", float(self.eps))
        self.validate()

    # ------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first out-of-range parameter."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        for name in ("size", "flow_side", "n_segments", "min_len",
                     "segment_len", "patch", "levels", "window", "max_windows"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool),
                 f"{name} must be an integer, got {value!r}")
        need(self.size >= 1, f"size must be >= 1, got {self.size}")
        need(self.patch >= 1 and self.patch % 2 == 1,
             f"patch must be an odd integer >= 1, got {self.patch}")
        need(self.size >= self.patch,
             f"size ({self.size}) must be >= patch ({self.patch})")
        need(self.flow_side >= 8, f"flow_side must be >= 8, got {self.flow_side}")
        need(self.n_segments >= 2, f"n_segments must be >= 2, got {self.n_segments}")
        need(self.min_len >= 1, f"min_len must be >= 1, got {self.min_len}")
        need(self.segment_len >= 2, f"segment_len must be >= 2, got {self.segment_len}")
        need(self.stride is None or (isinstance(self.stride, int) and self.stride >= 1),
             f"stride must be None or an integer >= 1, got {self.stride!r}")
        need(self.levels >= 1, f"levels must be >= 1, got {self.levels}")
        need(self.window >= 2, f"window must be >= 2, got {self.window}")
        need(self.max_windows >= 1, f"max_windows must be >= 1, got {self.max_windows}")
        need(self.crop in CROPS, f"crop must be one of {CROPS}, got {self.crop!r}")
        need(self.segmentation in SEGMENTATIONS,
             f"segmentation must be one of {SEGMENTATIONS}, got {self.segmentation!r}")
        need(self.level2 in LEVEL2_MODES,
             f"level2 must be one of {LEVEL2_MODES}, got {self.level2!r}")
        need(self.normalize in NORMALIZATIONS,
             f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        need(self.eps == "auto" or (isinstance(self.eps, float) and self.eps >= 0),
             f"eps must be 'auto' or a number >= 0, got {self.eps!r}")
        need(len(self.farneback) == 7,
             f"farneback needs 7 values (pyr_scale, levels, winsize, iterations, "
             f"poly_n, poly_sigma, flags), got {len(self.farneback)}")

    @property
    def fixed_stride(self) -> int:
        """Window start step of ``fixed`` segmentation."""
        return self.stride if self.stride is not None else max(1, self.segment_len // 2)

    @property
    def mdv_capacity(self) -> int:
        """Most level-1 window images a video can produce with these parameters."""
        if self.segmentation == "adaptive":
            return self.n_segments - 1
        return self.max_windows

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every parameter."""
        d = dataclasses.asdict(self)
        d["farneback"] = list(self.farneback)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AhdiParams":
        """Build from a dict, refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**d)

    def replace(self, **changes: Any) -> "AhdiParams":
        """A copy with some parameters changed (validated)."""
        return dataclasses.replace(self, **changes)

    def param_hash(self) -> str:
        """Stable short hash of the parameter set (16 hex digits)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
