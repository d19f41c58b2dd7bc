"""Fixed 1-D sin-cos position tables with interleaved columns (Mu-MAE / VideoMAE layout)."""
import numpy as np


def sincos_table(num_positions: int, dim: int) -> np.ndarray:
    """Returns float32 [num_positions, dim]; column j is sin (even j) or cos (odd j).

    PE[pos, j] = sin(pos / 10000^(2*floor(j/2)/dim)) for even j and cos(...) for odd j: the sin and
    cos columns are interleaved, not two concatenated halves. The tables are constants, not params.
    """
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angles = pos / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype(np.float32)
