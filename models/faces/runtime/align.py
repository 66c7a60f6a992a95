"""Five-point face alignment: a similarity transform (Umeyama) onto the ArcFace 112 x 112 template, and the warp."""

from __future__ import annotations

import numpy as np
from PIL import Image

CROP_SIZE = 112
#: where the eye centres, nose tip and mouth corners sit in an aligned 112 x 112 crop (the ArcFace/InsightFace
#: template the embedder's crops follow)
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity (rotation, uniform scale, translation) that maps ``source`` points onto ``target``
    points with the least squared error (Umeyama 1991, reflections excluded)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need two matching (n >= 2, 2) point arrays, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = float((source_centred ** 2).sum() / len(source))
    if source_variance <= 1e-12:
        raise ValueError("the source points coincide: no transform maps them")
    covariance = target_centred.T @ source_centred / len(source)
    left, singular, right = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(left) * np.linalg.det(right) < 0:  # the best fit would mirror the face: take the rotation
        sign[1, 1] = -1.0
    rotation = left @ sign @ right
    scale = float(np.trace(np.diag(singular) @ sign)) / source_variance
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (n, 2) mapped through a 2 x 3 affine ``matrix``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def alignment_transform(landmarks: np.ndarray, size: int = CROP_SIZE,
                        template: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """The similarity mapping a face's five landmarks (frame pixels) onto ``template`` (points of a 112 crop)
    scaled to a ``size`` crop."""
    return similarity_transform(np.asarray(landmarks, dtype=np.float64),
                                np.asarray(template, dtype=np.float64) * (size / CROP_SIZE))


def warp(image: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` crop whose pixel p shows ``image`` at matrix^-1 p (bilinear, black outside)."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)  # Pillow's AFFINE asks, for each output pixel, where to read in the input
    # Pillow samples at pixel centres (x + 0.5); shift so integer coordinates mean pixel centres on both sides
    centre = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    uncentre = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    coefficients = (centre @ inverse @ uncentre)[:2].ravel()
    picture = Image.fromarray(np.ascontiguousarray(image))
    crop = picture.transform((size, size), Image.Transform.AFFINE, tuple(float(c) for c in coefficients),
                             resample=Image.Resampling.BILINEAR)
    return np.asarray(crop)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE,
               template: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """The aligned ``size`` x ``size`` crop of the face whose five landmarks are given in ``image`` pixels, its
    landmarks placed on ``template`` (the ArcFace one unless the embedder's manifest names another)."""
    return warp(image, alignment_transform(landmarks, size, template), size)
