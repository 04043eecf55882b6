"""Closed-form matting (Levin, Lischinski and Weiss, "A Closed-Form Solution to Natural Image
Matting", 2008), solved only for the unknown pixels of a trimap.

The matting Laplacian is built only from the 3x3 windows that touch an unknown pixel. The
sparse system over the unknown pixels is solved directly, so the cost grows with the width of
the uncertain band rather than with the photo's size. Bands larger than a limit are solved at
a reduced scale and brought back with the guided filter.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
from scipy import ndimage

from . import refine

log = logging.getLogger(__name__)

WINDOW_RADIUS = 1
WINDOW_PIXELS = (2 * WINDOW_RADIUS + 1) ** 2
# Regulariser of the local colour covariance (colour units 0..1), as in the paper.
EPSILON = 1e-7
# Above this many unknown pixels the band is solved at a reduced scale, bounding time and memory.
MAX_UNKNOWN_PIXELS = 300_000


def matting_laplacian(image: np.ndarray, unknown: np.ndarray) -> sparse.csr_matrix:
    """Return the matting Laplacian over all pixels, from the windows that touch `unknown`.

    `image` is float (height, width, 3) in 0..1.
    """
    height, width = unknown.shape
    size = 2 * WINDOW_RADIUS + 1
    centres = ndimage.binary_dilation(unknown, structure=np.ones((size, size), dtype=bool))
    centres[:WINDOW_RADIUS, :] = False
    centres[-WINDOW_RADIUS:, :] = False
    centres[:, :WINDOW_RADIUS] = False
    centres[:, -WINDOW_RADIUS:] = False
    centre_rows, centre_columns = np.nonzero(centres)

    offsets = [(dy, dx) for dy in range(-WINDOW_RADIUS, WINDOW_RADIUS + 1)
               for dx in range(-WINDOW_RADIUS, WINDOW_RADIUS + 1)]
    indices = np.stack([(centre_rows + dy) * width + (centre_columns + dx) for dy, dx in offsets], axis=1)
    windows = image.reshape(-1, 3)[indices]  # (windows, 9, 3)
    centred = windows - windows.mean(axis=1, keepdims=True)
    covariance = np.einsum("nki,nkj->nij", centred, centred) / WINDOW_PIXELS
    covariance += (EPSILON / WINDOW_PIXELS) * np.eye(3)
    inverse = np.linalg.inv(covariance)

    projected = np.einsum("nki,nij->nkj", centred, inverse)
    affinity = (1.0 + np.einsum("nkj,nlj->nkl", projected, centred)) / WINDOW_PIXELS
    values = np.eye(WINDOW_PIXELS) - affinity
    rows = np.repeat(indices, WINDOW_PIXELS, axis=1).ravel()
    columns = np.tile(indices, (1, WINDOW_PIXELS)).ravel()
    pixel_count = height * width
    return sparse.csr_matrix((values.ravel(), (rows, columns)), shape=(pixel_count, pixel_count))


def _solve(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """Alpha in 0..1 for a float image and a uint8 trimap (0 background, 255 subject, else unknown)."""
    known = (trimap == 0) | (trimap == 255)
    alpha = (trimap == 255).astype(np.float64)
    unknown_indices = np.flatnonzero(~known.ravel())
    if unknown_indices.size == 0:
        return alpha
    if not (trimap == 0).any() or not (trimap == 255).any():
        # Nothing to propagate from one side: keep the trimap's own values as alpha.
        return trimap.astype(np.float64) / 255.0

    laplacian = matting_laplacian(image, ~known)
    known_indices = np.flatnonzero(known.ravel())
    unknown_rows = laplacian[unknown_indices]
    system = unknown_rows[:, unknown_indices].tocsc()
    right_hand_side = -(unknown_rows[:, known_indices] @ alpha.ravel()[known_indices])
    # Unknown pixels whose windows all lie on the border get an empty row: pin them to 0.5.
    empty = np.asarray(abs(system).sum(axis=1)).ravel() == 0
    if empty.any():
        system = system + sparse.diags(empty.astype(np.float64)).tocsc()
        right_hand_side[empty] = 0.5
    solution = sparse_linalg.spsolve(system, right_hand_side)
    flat = alpha.ravel()
    flat[unknown_indices] = np.clip(solution, 0.0, 1.0)
    return flat.reshape(trimap.shape)


def solve_alpha(rgb: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """Return alpha (float32, 0..1) for an sRGB uint8 photo and a uint8 trimap of the same size."""
    unknown_count = int(np.count_nonzero((trimap != 0) & (trimap != 255)))
    height, width = trimap.shape
    if unknown_count <= MAX_UNKNOWN_PIXELS:
        return _solve(rgb.astype(np.float64) / 255.0, trimap).astype(np.float32)

    scale = (MAX_UNKNOWN_PIXELS / unknown_count) ** 0.5
    small_width, small_height = max(1, round(width * scale)), max(1, round(height * scale))
    log.info("uncertain band of %d pixels solved at %d x %d", unknown_count, small_width, small_height)
    small_rgb = refine.resize_rgb(rgb, small_width, small_height)
    small_trimap = np.asarray(refine.resize_float(trimap.astype(np.float32), small_width, small_height))
    # A pixel stays fixed only if the whole neighbourhood it was resized from was fixed.
    small_trimap = np.where(small_trimap >= 254.5, 255, np.where(small_trimap <= 0.5, 0, 128)).astype(np.uint8)
    small_alpha = _solve(small_rgb.astype(np.float64) / 255.0, small_trimap)
    alpha = refine.upsample_guided(small_alpha.astype(np.float32), rgb)
    alpha = np.where(trimap == 255, 1.0, np.where(trimap == 0, 0.0, alpha))
    return alpha.astype(np.float32)
