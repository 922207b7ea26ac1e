"""Exemplar-based colour transfer without a network (Welsh et al., 2002).

The reference colorization scheme is trained against a pseudo ground truth
I_example: the gray target colorized from a colour reference. The official
code read it from precomputed Deep Exemplar-based Colorization (DEC) outputs;
`exemplar_transfer` produces a stand-in that needs no pretrained network, after
"Transferring color to greyscale images" (Welsh, Ashikhmin, Mueller, 2002):

1. Target and reference go to CIE Lab. The reference luminance is remapped to
   the target's mean and standard deviation.
2. A jittered grid of `num_samples` reference pixels is drawn.
3. Every target pixel takes the chroma (a, b) of the sample whose
   luminance and `window` x `window` neighbourhood standard deviation match
   best (weighted squared distance).
4. The target's L is kept exactly (as DEC does); chroma that would leave the
   sRGB gamut is scaled down (keeping its hue) so that clipping to [0, 1]
   does not change the luminance.

Everything is JAX and jit-able with the integer options static; target pixels
are matched in chunks so memory stays at chunk x num_samples floats.
"""

import jax
import jax.numpy as jnp

from ihc_jax import colorspace

# Chroma scales tried (largest first) to keep a transferred colour in gamut.
_CHROMA_SCALES = (1.0, 0.75, 0.5, 0.25, 0.0)
# How far an unclipped RGB value may leave [0, 1] and still count as in gamut.
_GAMUT_TOLERANCE = 2e-3


def local_std(luminance: jnp.ndarray, window: int) -> jnp.ndarray:
  """Standard deviation over a `window` x `window` neighbourhood.

  Args:
    luminance: [B,H,W] values.
    window: odd neighbourhood size; borders are reflected.

  Returns:
    [B,H,W] float32 local standard deviations.
  """
  if window < 1 or window % 2 != 1:
    raise ValueError(f"window must be a positive odd number, got {window}")
  pad = window // 2
  padded = jnp.pad(luminance, ((0, 0), (pad, pad), (pad, pad)),
                   mode="reflect" if min(luminance.shape[1:]) > pad
                   else "edge")

  def box_mean(x):
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, window, window),
                                   (1, 1, 1), "VALID")
    return summed / (window * window)

  mean = box_mean(padded)
  mean_square = box_mean(padded * padded)
  return jnp.sqrt(jnp.maximum(mean_square - mean * mean, 0.0))


def jittered_grid(key: jax.Array, batch: int, height: int, width: int,
                  num_samples: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """One random pixel per cell of a rows x cols grid, per image.

  rows = floor(sqrt(num_samples)), cols = ceil(num_samples / rows); the first
  `num_samples` cells (row-major) are kept.

  Args:
    key: PRNG key.
    batch: number of images (independent jitter each).
    height: image height.
    width: image width.
    num_samples: number of samples.

  Returns:
    (ys, xs): int32 [batch, num_samples] pixel coordinates.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be positive, got {num_samples}")
  rows = max(1, int(num_samples ** 0.5))
  cols = -(-num_samples // rows)
  # One draw for the whole batch: a single PRNG call compiles much faster.
  jitter = jax.random.uniform(key, (2, batch, rows, cols))
  cell_y = jnp.arange(rows, dtype=jnp.float32)[:, None]
  cell_x = jnp.arange(cols, dtype=jnp.float32)[None, :]
  ys = jnp.floor((cell_y + jitter[0]) * height / rows).astype(jnp.int32)
  xs = jnp.floor((cell_x + jitter[1]) * width / cols).astype(jnp.int32)
  ys = jnp.clip(ys, 0, height - 1).reshape(batch, -1)[:, :num_samples]
  xs = jnp.clip(xs, 0, width - 1).reshape(batch, -1)[:, :num_samples]
  return ys, xs


def _fit_gamut(lightness: jnp.ndarray, chroma: jnp.ndarray) -> jnp.ndarray:
  """Lab -> RGB, scaling chroma down until the colour is (nearly) in gamut."""
  scales = jnp.asarray(_CHROMA_SCALES, jnp.float32)[:, None]  # [S,1]
  # All candidate scales in one conversion: [...,S,3].
  lab = jnp.concatenate([
      jnp.broadcast_to(lightness[..., None, None],
                       lightness.shape + (len(_CHROMA_SCALES), 1)),
      chroma[..., None, :] * scales], axis=-1)
  rgb = colorspace.lab_to_rgb(lab, clip=False)
  inside = jnp.all((rgb >= -_GAMUT_TOLERANCE)
                   & (rgb <= 1.0 + _GAMUT_TOLERANCE), axis=-1)
  # The largest in-gamut scale; scale 0 (gray) is always in gamut.
  first = jnp.argmax(inside, axis=-1)
  chosen = jnp.take_along_axis(rgb, first[..., None, None], axis=-2)[..., 0, :]
  return jnp.clip(chosen, 0.0, 1.0)


def exemplar_transfer(target_gray: jnp.ndarray, reference_rgb: jnp.ndarray,
                      *, num_samples: int = 200, window: int = 5,
                      luminance_weight: float = 0.5,
                      chunk_pixels: int = 16384,
                      key: jax.Array | None = None) -> jnp.ndarray:
  """Colorizes gray targets with the colours of references (Welsh et al.).

  Args:
    target_gray: [B,H,W,1] gray (ITU-R 601 luma) in [0, 1].
    reference_rgb: [B,h,w,3] colour references in [0, 1] (any size).
    num_samples: jittered-grid samples per reference (Welsh et al. use ~200).
    window: neighbourhood size for the local standard deviation.
    luminance_weight: weight of the luminance term in the match; the
      neighbourhood standard deviation gets 1 - luminance_weight.
    chunk_pixels: target pixels matched at once (memory: chunk x samples).
    key: PRNG key for the sample jitter; None -> a fixed key (deterministic).

  Returns:
    [B,H,W,3] float32 RGB in [0, 1] whose CIE L equals the target's.
  """
  target_gray = jnp.asarray(target_gray, jnp.float32)
  reference_rgb = jnp.asarray(reference_rgb, jnp.float32)
  if target_gray.ndim != 4 or target_gray.shape[-1] != 1:
    raise ValueError(f"target_gray must be [B,H,W,1], got "
                     f"{tuple(target_gray.shape)}")
  if reference_rgb.ndim != 4 or reference_rgb.shape[-1] != 3:
    raise ValueError(f"reference_rgb must be [B,h,w,3], got "
                     f"{tuple(reference_rgb.shape)}")
  if reference_rgb.shape[0] != target_gray.shape[0]:
    raise ValueError(
        f"batch sizes differ: {target_gray.shape[0]} targets, "
        f"{reference_rgb.shape[0]} references")
  if not 0.0 <= luminance_weight <= 1.0:
    raise ValueError(f"luminance_weight must be in [0, 1], got "
                     f"{luminance_weight}")
  if chunk_pixels < 1:
    raise ValueError(f"chunk_pixels must be positive, got {chunk_pixels}")
  if key is None:
    key = jax.random.PRNGKey(0)
  batch, height, width, _ = target_gray.shape
  ref_height, ref_width = reference_rgb.shape[1:3]

  target_l = colorspace.rgb_to_lab(colorspace.gray_to_rgb(target_gray))[..., 0]
  reference_lab = colorspace.rgb_to_lab(reference_rgb)
  reference_l = reference_lab[..., 0]

  # Luminance remapping (Hertzmann et al.): match the target's statistics.
  t_mean = jnp.mean(target_l, axis=(1, 2), keepdims=True)
  t_std = jnp.std(target_l, axis=(1, 2), keepdims=True)
  r_mean = jnp.mean(reference_l, axis=(1, 2), keepdims=True)
  r_std = jnp.std(reference_l, axis=(1, 2), keepdims=True)
  remapped = (reference_l - r_mean) * (t_std / jnp.maximum(r_std, 1e-6)) \
      + t_mean

  target_features = jnp.stack([target_l, local_std(target_l, window)],
                              axis=-1).reshape(batch, -1, 2)
  reference_features = jnp.stack([remapped, local_std(remapped, window)],
                                 axis=-1)

  ys, xs = jittered_grid(key, batch, ref_height, ref_width, num_samples)
  pick = jax.vmap(lambda image, y, x: image[y, x])
  sample_features = pick(reference_features, ys, xs)  # [B,n,2]
  sample_chroma = pick(reference_lab[..., 1:], ys, xs)  # [B,n,2]

  weights = jnp.asarray([luminance_weight, 1.0 - luminance_weight],
                        jnp.float32)
  num_pixels = height * width
  chunk = min(chunk_pixels, num_pixels)
  num_chunks = -(-num_pixels // chunk)
  padded = jnp.pad(target_features,
                   ((0, 0), (0, num_chunks * chunk - num_pixels), (0, 0)))
  chunks = padded.reshape(batch, num_chunks, chunk, 2).transpose(1, 0, 2, 3)

  def best_sample(pixels):  # [B,chunk,2] -> [B,chunk] sample indices
    diff = pixels[:, :, None, :] - sample_features[:, None, :, :]
    distance = jnp.sum(weights * diff * diff, axis=-1)
    return jnp.argmin(distance, axis=-1)

  best = jax.lax.map(best_sample, chunks).transpose(1, 0, 2).reshape(
      batch, -1)[:, :num_pixels]
  chroma = jnp.take_along_axis(sample_chroma, best[..., None], axis=1)
  chroma = chroma.reshape(batch, height, width, 2)
  return _fit_gamut(target_l, chroma)
