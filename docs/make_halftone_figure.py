"""Makes docs/images/halftone_types.png (run from the repo root): one real photo in each halftone type."""
import numpy as np, jax.numpy as jnp
from PIL import Image
from skimage import data
from ihc_jax import halftone, color
rgb = data.astronaut()[30:230, 130:330].astype(np.float32) / 255.0  # 200x200 face crop
img = jnp.asarray(rgb)[None]
gray = color.rgb_to_gray(img)
panels = [("colour", rgb), ("gray", np.repeat(np.asarray(gray[0]), 3, -1))]
for name, out in [
    ("AM 3px 45deg", halftone.am_screen(gray, period=3.0, angle=45.0)),
    ("AM binary", halftone.am_screen(gray, period=3.0, angle=45.0, binary=True)),
    ("Bayer 8", halftone.ordered_dither(gray, size=8)),
    ("Floyd-Steinberg", halftone.error_diffusion(gray, kernel="floyd_steinberg")),
    ("Jarvis", halftone.error_diffusion(gray, kernel="jarvis")),
]:
  panels.append((name, np.repeat(np.asarray(out[0]), 3, -1)))
panels.append(("colour AM", np.asarray(halftone.am_screen_color(img, period=3.0)[0])))
row = np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=1) for _, p in panels], 1)
Image.fromarray((np.clip(row, 0, 1) * 255 + 0.5).astype(np.uint8)).save("docs/images/halftone_types.png")
print([n for n, _ in panels])
