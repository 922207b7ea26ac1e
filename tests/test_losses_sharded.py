"""Every loss under a batch sharded over 4 fake CPU devices equals the
unsharded result. Runs in a subprocess because XLA_FLAGS must be set before
jax is imported. VGG19 and H use RANDOM weights on purpose."""

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent('''
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from ihc_jax import losses
    from ihc_jax.models.histogram import HistogramNet
    from ihc_jax.models.vgg import init_vgg19_params

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)  # NumPy inputs: no eager jax.random compiles
    b = 8
    a, c, d = rng.random((3, b, 8, 8, 3), dtype=np.float32)
    z1, z2 = rng.standard_normal((2, b, 8), dtype=np.float32)
    logits = [rng.standard_normal((b, 3, 3, 1), dtype=np.float32),
              rng.standard_normal((b, 2, 2, 1), dtype=np.float32)]
    vgg_params = init_vgg19_params(0)  # random weights
    hist_net = HistogramNet(bins=8, features=(4, 4, 4))
    h_shapes = jax.eval_shape(hist_net.init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    h_params = jax.tree_util.tree_map(  # random weights
        lambda s: rng.standard_normal(s.shape, dtype=np.float32) * 0.3,
        h_shapes["params"])
    d_kernel = rng.standard_normal((3, 3, 3, 1), dtype=np.float32)

    def discriminator(x):  # a tiny conv "D" for the R1 penalty
      out = jax.lax.conv_general_dilated(x, d_kernel, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return [out, out[:, ::2, ::2]]

    def all_losses(a, c, d, z1, z2, logits):
      feats = losses.vgg_features(vgg_params, jnp.concatenate([a, c]),
                                  layers=("relu4_1",))["relu4_1"]
      fa, fc = feats[:b], feats[b:]
      out = {}
      for red in ("none", "mean"):
        out.update({
            f"pixel_{red}": losses.pixel_loss(a[..., :1], c[..., :1], d[..., :1],
                                              reduction=red),
            f"perceptual_{red}": losses.perceptual_loss_from_features(
                fa, fc, reduction=red),
            f"reconstruction_{red}": losses.reconstruction_loss(a, c, d, c,
                                                                reduction=red),
            f"structure_{red}": losses.structure_loss_from_features(
                a, c, fa, fc, reduction=red),
            f"style_{red}": losses.style_loss_from_features(fa, fc, reduction=red),
            f"latent_{red}": losses.latent_loss(z1, z2, reduction=red),
            f"kl_{red}": losses.kl_loss(z1, z2, reduction=red),
            f"gen_{red}": losses.generator_adversarial_loss(logits, reduction=red),
            f"disc_{red}": losses.discriminator_adversarial_loss(
                logits, [x + 1 for x in logits], mode="hinge", reduction=red),
            f"r1_{red}": losses.r1_penalty(discriminator, a, reduction=red),
            f"self_similarity_{red}": losses.self_similarity_loss(
                a, c, chunk_rows=3, reduction=red),
            f"histogram_{red}": losses.histogram_loss(hist_net.apply, h_params,
                                                      a, c, reduction=red),
            f"soft_histogram_{red}": losses.histogram_loss_from_histograms(
                losses.soft_histogram(a, bins=8), losses.hard_histogram(c, bins=8),
                reduction=red),
            f"mode_seeking_{red}": losses.mode_seeking_loss_from_features(
                fa, fc, z1, z2, reduction=red),
        })
      out["style_cross_batch"] = losses.style_loss_from_features(
          fa, fc, cross_batch=True)
      return out

    fn = jax.jit(all_losses)
    expected = fn(a, c, d, z1, z2, logits)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    args = jax.tree_util.tree_map(shard, (a, c, d, z1, z2, logits))
    assert len(args[0].sharding.device_set) == 4
    got = fn(*args)
    for name in expected:
      np.testing.assert_allclose(got[name], expected[name], rtol=2e-5, atol=1e-6,
                                 err_msg=name)
      assert np.isfinite(np.asarray(got[name])).all(), name
      if name.endswith("_none"):
        assert got[name].shape == (b,), name
    print("SHARDED-OK", len(expected))
''')


def test_losses_sharded_equal_unsharded():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=4").strip()
  env["JAX_PLATFORMS"] = "cpu"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "SHARDED-OK 29" in result.stdout
