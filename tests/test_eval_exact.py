"""Evaluation is an exact per-example mean, whatever the batch or host count.

The held-out set is a folder of 5 random 32x32 photos (an odd number, so
shards and batches never divide it). A toy eval step returns per-example
values; one of them is the PSNR of an image against itself scaled by 0.9,
which is +inf on the all-zero padding, so a mask applied by multiplication
instead of selection would turn the mean into NaN.

* In one process: batch sizes 1, 2 and 4 give the per-image mean computed
  directly in numpy from the files.
* Random inputs are keyed by the image, not by its place in a batch: the
  blur baseline's PSNR on the project's real AM halftones (no learned
  weights) is the same at eval batch 1, 2 and 4, on one process and on two,
  and equals the mean over the images halftoned one at a time with
  `fold_in(key, index in the split)`; so is each image's reference.
* Two JAX processes (localhost, gloo, one CPU device each), global eval batch
  2 and 4: both processes report the single-process figures; they run the
  same number of eval steps although one has 3 images and the other 2.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from ihc_jax import colorspace
from ihc_jax import halftone
from ihc_jax import input_pipeline
from ihc_jax import metrics
from ihc_jax.trainers import baselines
from ihc_jax.trainers import loop as loop_lib
from ihc_jax.trainers import mesh as mesh_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
NUM_IMAGES = 5


def _write_photos(folder):
  os.makedirs(folder)
  rng = np.random.default_rng(5)
  for i in range(NUM_IMAGES):
    pixels = (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f"photo{i}.png"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("eval") / "photos")
  _write_photos(folder)
  return folder


def _config(photos, eval_batch_size):
  config = input_pipeline.default_data_config()
  config.source = f"folder:{photos}"
  config.eval_source = f"folder:{photos}"
  config.image_size = SIZE
  config.batch_size = 2
  config.eval_batch_size = eval_batch_size
  config.num_parallel_calls = 1
  return config


HALFTONE = halftone.default_halftone_config()


def _blur_psnr(rng, image):
  """[B] PSNR of the blur descreen of a real AM halftone of `image`."""
  gray = colorspace.rgb_to_gray(image)
  ht = halftone.synthesize(rng, gray, HALFTONE)
  return metrics.psnr(baselines.blur_baseline(ht, HALFTONE), gray,
                      reduction="none")


def toy_eval_step(state, batch, frozen, rng):
  """Per-example [B] values: a brightness, a (padding: +inf) PSNR, the
  blur baseline on a halftone drawn from `rng`, the reference's mean."""
  del frozen
  image = batch["image"]
  return {"brightness": state["gain"] * jnp.mean(image, axis=(1, 2, 3)),
          "psnr": metrics.psnr(image * 0.9, image, reduction="none"),
          "blur_psnr": _blur_psnr(rng, image),
          "reference": jnp.mean(batch["reference"], axis=(1, 2, 3))}


def _load(photos):
  return [np.asarray(Image.open(os.path.join(photos, f"photo{i}.png")),
                     np.float64) / 255.0 for i in range(NUM_IMAGES)]


def _blur_expected(photos):
  """The blur baseline's mean, each image halftoned alone with its key."""
  root = jax.random.PRNGKey(0)
  return np.mean([float(_blur_psnr(jax.random.fold_in(root, i),
                                   jnp.asarray(x[None], jnp.float32))[0])
                  for i, x in enumerate(_load(photos))])


def _expected(photos):
  """Per-image means straight from the files, in float64."""
  images = _load(photos)
  brightness = [2.0 * x.mean() for x in images]
  psnr = [10 * np.log10(1.0 / np.mean((0.1 * x) ** 2)) for x in images]
  return {"eval/brightness": np.mean(brightness), "eval/psnr": np.mean(psnr)}


def _toy_stage():
  return loop_lib.Stage(name="toy", init_variables=lambda key: {},
                      optimizers={}, train_step=None, frozen={},
                      eval_step=toy_eval_step)


def _evaluate(config, eval_step=toy_eval_step):
  _, eval_ds = input_pipeline.create_datasets(config, seed=0)
  mesh = mesh_lib.make_mesh()
  state = mesh_lib.replicate({"gain": np.float32(2.0)}, mesh)
  return loop_lib.evaluate(_toy_stage(), state, eval_ds, mesh, 0,
                         jax.random.PRNGKey(0),
                         loop_lib.compile_eval_step(eval_step))


@pytest.fixture(scope="module")
def batch_one(photos):
  return _evaluate(_config(photos, 1))


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_batch_size_does_not_change_the_means(photos, batch_size, batch_one):
  got = _evaluate(_config(photos, batch_size))
  want = _expected(photos)
  assert sorted(got) == sorted(list(want) + ["eval/blur_psnr",
                                             "eval/reference"])
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)
  # Random halftones and references follow the image, not the batching.
  np.testing.assert_allclose(got["eval/blur_psnr"], _blur_expected(photos),
                             rtol=1e-5)
  np.testing.assert_allclose(got["eval/reference"], batch_one["eval/reference"],
                             rtol=1e-6)


def test_a_batch_keyed_step_would_differ(photos):
  """The check above can fail: one key for the whole batch (the old way)
  gives other screens, hence another blur figure, at batch 4 than alone."""
  got = _evaluate(_config(photos, 4))
  mesh = mesh_lib.make_mesh()
  _, eval_ds = input_pipeline.create_datasets(_config(photos, 4), seed=0)
  batch = next(eval_ds.as_numpy_iterator())
  batch_keyed = _blur_psnr(jax.random.PRNGKey(0),
                           jnp.asarray(batch["image"]))[:4]
  del mesh
  assert abs(float(jnp.mean(batch_keyed)) - got["eval/blur_psnr"]) > 1e-3


def test_hosts_run_the_same_steps_and_cover_every_image_once(photos):
  for eval_batch in (2, 4):
    seen, steps = [], []
    for host in range(2):
      _, eval_ds = input_pipeline.create_datasets(
          _config(photos, eval_batch), seed=0, process_index=host,
          process_count=2)
      batches = list(eval_ds.as_numpy_iterator())
      steps.append(len(batches))
      assert int(eval_ds.cardinality()) == len(batches)
      for batch in batches:
        assert batch["image"].shape == (eval_batch // 2, SIZE, SIZE, 3)
        seen += [float(x.mean()) for x, m in zip(batch["image"],
                                                 batch["mask"]) if m]
    # Host 0 has 3 images, host 1 has 2: both run ceil(3 / per-host batch).
    assert steps[0] == steps[1] == -(-3 // (eval_batch // 2))
    assert len(seen) == NUM_IMAGES == len(set(seen))


def test_drop_remainder_keeps_only_batches_every_host_fills(photos):
  config = _config(photos, 2)
  config.eval_drop_remainder = True
  for host in range(2):
    _, eval_ds = input_pipeline.create_datasets(
        config, seed=0, process_index=host, process_count=2)
    masks = [b["mask"].tolist() for b in eval_ds.as_numpy_iterator()]
    assert masks == [[1.0], [1.0]]  # min(3, 2) images per host
  config.eval_batch_size = 6
  with pytest.raises(ValueError, match="fills no eval batch"):
    input_pipeline.create_datasets(config, seed=0, process_index=0,
                                   process_count=2)


def test_eval_steps():
  assert input_pipeline.eval_steps([3, 2], 2, False) == 2
  assert input_pipeline.eval_steps([3, 2], 2, True) == 1
  assert input_pipeline.eval_steps([0, 0, 1], 4, False) == 1


def test_scalar_metric_is_rejected_with_the_contract(photos):
  def batch_mean_step(state, batch, frozen, rng):
    del state, frozen, rng
    return {"psnr": metrics.psnr(batch["image"] * 0.9, batch["image"])}

  with pytest.raises(ValueError, match=r"'psnr'.*per-example"):
    _evaluate(_config(photos, 2), batch_mean_step)


_WORKER = textwrap.dedent("""
    import json, sys
    from ihc_jax import distributed
    distributed.initialize()
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_eval_exact as t
    out = {{}}
    for batch in (2, 4):
      out[batch] = t._evaluate(t._config({photos!r}, batch))
    print("RESULT " + json.dumps(
        dict(process=jax.process_index(), count=jax.process_count(),
             metrics=out)))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(photos, tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER.format(tests=os.path.join(REPO, "tests"),
                                   photos=photos))
  port = _free_port()
  processes = []
  for i in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
               PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
    processes.append(subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  results = []
  for process in processes:
    try:
      output, _ = process.communicate(timeout=300)
    finally:
      if process.poll() is None:
        process.kill()
    assert process.returncode == 0, output[-3000:]
    line = [l for l in output.splitlines() if l.startswith("RESULT ")][-1]
    results.append(json.loads(line[len("RESULT "):]))
  assert [r["process"] for r in results] == [0, 1]
  assert all(r["count"] == 2 for r in results)
  want = _expected(photos)
  single = _evaluate(_config(photos, 2))
  for result in results:
    for batch, got in result["metrics"].items():
      for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5,
                                   err_msg=f"{key} batch {batch}")
      for key in single:
        np.testing.assert_allclose(got[key], single[key], rtol=1e-5,
                                   err_msg=f"{key} batch {batch}")


def test_paper_evaluation_reads_each_held_out_image_once(photos):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ihc_jax.eval import run as paper_eval  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"seed": 0, "data": _config(photos, 2)})
  images, references = paper_eval.load_eval_images(config, -1)
  # 5 images in batches of 2: the padding of the third batch is dropped.
  assert images.shape == references.shape == (NUM_IMAGES, SIZE, SIZE, 3)
  assert len({x.tobytes() for x in images}) == NUM_IMAGES
