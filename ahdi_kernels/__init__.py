"""ahdi_kernels: the numeric core of AHDI, pure functions on arrays.

No I/O and no dask, zarr, click or torch imports: frames in, images out.
"""

from .arp import arp_coefficients
from .buffer import FrameBuffer
from .compute import REPRESENTATIONS, AhdiResult, check_representations, compute_ahdi
from .motion import (MotionActivity, flow_picture, grey_for_flow, motion_activity, resize_region,
                     resize_to)
from .normalize import to_uint8
from .params import AhdiParams
from .pooling import (box_mean, combine_windows, hierarchical_pool, information_weights,
                      rank_pool_chunks, rank_pool_windows)
from .segments import (activity_energy, effective_segments, fixed_windows, level1_windows,
                       overlapping_windows, resolve_eps, segment_bounds)

__version__ = "0.1.0"

__all__ = [
    "AhdiParams", "AhdiResult", "FrameBuffer", "MotionActivity", "REPRESENTATIONS",
    "activity_energy", "arp_coefficients", "box_mean", "check_representations",
    "combine_windows", "compute_ahdi", "effective_segments", "fixed_windows", "flow_picture",
    "grey_for_flow", "hierarchical_pool", "information_weights", "level1_windows",
    "motion_activity", "overlapping_windows", "rank_pool_chunks", "rank_pool_windows",
    "resize_region", "resize_to", "resolve_eps", "segment_bounds", "to_uint8",
]
