"""Tests of the IHC networks: sizes, shapes, modes, noise map, layer conventions.

Full-size networks are only traced (`jax.eval_shape`); tiny variants from
`tiny_model_config()` are initialised with random weights and run.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import kernels
from ihc_jax import models
from ihc_jax import weights
from ihc_jax.kernels.cpu import pools as cpu_pools
from ihc_jax.models import layers
from ihc_jax.trainers import linen_utils

KEY = jax.random.PRNGKey(0)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _inputs(name, size, batch=1, nz=8):
  image = lambda c: jnp.zeros((batch, size, size, c), jnp.float32)
  code = jnp.zeros((batch, nz), jnp.float32)
  return {
      "ihn": ((image(1), image(nz)), {"train": False}),
      "generator": ((image(1), image(1), code), {"train": False}),
      "encoder": ((image(3),), {}),
      "discriminator": ((image(3), code), {"train": False}),
      "fusion": ((image(3), image(3)), {}),
  }[name]


# Parameter counts of the official PyTorch modules (original-code.md §3).
@pytest.mark.parametrize("name,expected_params,expected_out", [
    ("ihn", 41_095_681, [(2, 256, 256, 1)] * 3),
    ("generator", 30_254_467, [(2, 256, 256, 3)]),
    ("encoder", 5_361_296, [(2, 8), (2, 8)]),
    ("discriminator", 3_473_954, [(2, 30, 30, 1), (2, 14, 14, 1)]),
    ("fusion", 241_795, [(2, 256, 256, 3)]),
])
def test_full_size_param_counts_and_shapes(name, expected_params, expected_out):
  model = models.build(name, models.default_model_config())
  args, kwargs = _inputs(name, 256, batch=2)
  variables = jax.eval_shape(lambda *a: model.init(KEY, *a, **kwargs), *args)
  assert _count(variables["params"]) == expected_params
  if name == "ihn":
    assert _count(variables["params"]["content"]) == 40_356_993
  out = jax.eval_shape(lambda v, *a: model.apply(v, *a, **kwargs), variables, *args)
  shapes = [o.shape for o in jax.tree_util.tree_leaves(out)]
  assert shapes == expected_out


def test_noise_map_official_identical_channels_std_17():
  noise = models.make_noise_map(KEY, 2, 64, 64)
  assert noise.shape == (2, 64, 64, 8) and noise.dtype == jnp.float32
  np.testing.assert_array_equal(noise, jnp.broadcast_to(noise[..., :1], noise.shape))
  interior = np.asarray(noise[:, 1:-1, 1:-1, 0])
  # sqrt(8 channels * (1+4+1+4+16+4+1+4+1)) = sqrt(288) = 16.97.
  assert abs(interior.std() - np.sqrt(288.0)) < 0.6


def test_noise_map_official_border_std_counts_the_taps_inside():
  # Zero padding: a border pixel sums only the taps that fall inside the
  # image, so its std is sqrt(8 * the sum of those taps squared). 8192
  # independent corner values estimate a std to about 1%.
  noise = np.asarray(models.make_noise_map(KEY, 2048, 8, 8))[..., 0]
  corners = noise[:, [0, 0, -1, -1], [0, -1, 0, -1]]
  edges = np.concatenate([noise[:, 0, 1:-1], noise[:, -1, 1:-1],
                          noise[:, 1:-1, 0], noise[:, 1:-1, -1]], axis=1)
  interior = noise[:, 1:-1, 1:-1]
  # A corner sees 4 of the 9 taps: sqrt(8 * (16+4+4+1)) = 14.14; an edge 6:
  # sqrt(8 * 30) = 15.49; the interior all 9: sqrt(8 * 36) = 16.97.
  np.testing.assert_allclose(corners.std(), np.sqrt(8 * 25.0), rtol=0.03)
  np.testing.assert_allclose(edges.std(), np.sqrt(8 * 30.0), rtol=0.03)
  np.testing.assert_allclose(interior.std(), np.sqrt(8 * 36.0), rtol=0.03)
  assert abs(corners.mean()) < 0.05 * np.sqrt(8 * 25.0)


def test_filter_noise_on_a_delta_is_the_kernel():
  raw = jnp.zeros((1, 5, 5, 8)).at[0, 2, 2, 3].set(1.0)
  official = models.filter_noise(raw, variant="official")
  kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
  for c in range(8):
    np.testing.assert_array_equal(official[0, 1:4, 1:4, c], kernel)
  assert float(jnp.abs(official).sum()) == 8 * 16
  clean = models.filter_noise(raw, variant="clean")
  np.testing.assert_allclose(clean[0, 1:4, 1:4, 3], kernel / 16)
  assert float(jnp.abs(clean[..., :3]).sum() + jnp.abs(clean[..., 4:]).sum()) == 0.0


def test_noise_map_clean_independent_channels():
  noise = models.make_noise_map(KEY, 1, 64, 64, variant="clean")
  assert not np.allclose(noise[..., 0], noise[..., 1])
  # sqrt(36) / 16 = 0.375 in the interior.
  assert abs(float(noise[:, 1:-1, 1:-1].std()) - 0.375) < 0.02
  with pytest.raises(ValueError, match="variant"):
    models.make_noise_map(KEY, 1, 8, 8, variant="gauss")


@pytest.fixture(scope="module")
def tiny():
  return models.tiny_model_config()


def _eval_fn(net):
  return jax.jit(functools.partial(net.apply, train=False))


def _train_fn(net):
  """Jitted training-mode apply: (variables, dropout seed, *inputs) -> (out, updates)."""
  def run(variables, seed, *args):
    return net.apply(variables, *args, train=True,
                     rngs={"dropout": jax.random.PRNGKey(seed)}, mutable=["batch_stats"])
  return jax.jit(run)


def test_tiny_ihn_forward_and_modes(tiny):
  net = models.build("ihn", tiny)
  halftone = jax.random.bernoulli(KEY, 0.5, (2, 64, 64, 1)).astype(jnp.float32)
  noise = models.make_noise_map(KEY, 2, 64, 64)
  # Random weights (numpy), not trained ones.
  variables = weights.random_variables(net, halftone, noise, train=False)
  content, detail, out = _eval_fn(net)(variables, halftone, noise)
  assert content.shape == detail.shape == out.shape == (2, 64, 64, 1)
  np.testing.assert_allclose(out, content + detail, atol=1e-6)
  assert float(jnp.max(jnp.abs(content))) <= 1.0  # tanh-bounded content
  assert float(jnp.std(detail)) > 0  # the detail branch contributes
  # Training: dropout (dense bottleneck) depends on the rng; BN stats update.
  train = _train_fn(net)
  (_, _, out_a), updates = train(variables, 1, halftone, noise)
  (_, _, out_b), _ = train(variables, 2, halftone, noise)
  assert not np.allclose(out_a, out_b)
  old = variables["batch_stats"]["content"]["down_norm_1"]["mean"]
  new = updates["batch_stats"]["content"]["down_norm_1"]["mean"]
  assert not np.allclose(old, new)


def test_tiny_generator_shapes_dropout_and_bad_sizes(tiny):
  net = models.build("generator", tiny)
  x = jax.random.uniform(KEY, (1, 64, 64, 1))
  edge = jnp.zeros((1, 64, 64, 1))
  z = jax.random.normal(KEY, (1, 8))
  variables = weights.random_variables(net, x, edge, z, train=False)  # random weights
  apply = _eval_fn(net)
  y = apply(variables, x, edge, z)
  assert y.shape == (1, 64, 64, 3)
  assert float(jnp.max(jnp.abs(y))) <= 1.0
  # The input is cat([x, z, edge]): 1 + 8 + 1 channels into the first conv.
  assert variables["params"]["unet"]["down_0"]["kernel"].shape == (4, 4, 10, 4)
  assert not np.allclose(y, apply(variables, x, edge, -z))  # z matters
  # One dropout level (level 4 of 6).
  train = _train_fn(net)
  assert not np.allclose(train(variables, 1, x, edge, z)[0], train(variables, 2, x, edge, z)[0])
  with pytest.raises(ValueError, match="multiples of 64"):
    net.apply(variables, x[:, :48], edge[:, :48], z, train=False)
  with pytest.raises(ValueError, match="z must be"):
    net.apply(variables, x, edge, z[:, :4], train=False)
  with pytest.raises(ValueError, match="edge must have 1 channel"):
    net.apply(variables, x, jnp.zeros((1, 64, 64, 2)), z, train=False)
  unet = models.UNet(output_channels=3, input_channels=10, num_downs=5, ngf=2)
  with pytest.raises(ValueError, match="expects 10 input channels"):
    jax.eval_shape(unet.init, KEY, jnp.zeros((1, 32, 32, 1)), train=False)


@pytest.mark.parametrize("height,width", [(32, 32), (64, 32)])
def test_tiny_encoder_other_sizes(tiny, height, width):
  net = models.build("encoder", tiny)
  image = jax.random.uniform(KEY, (2, height, width, 3))
  variables = weights.random_variables(net, image)  # random weights
  mu, logvar = jax.jit(net.apply)(variables, image)
  assert mu.shape == logvar.shape == (2, 8)
  assert not np.allclose(mu[0], mu[1])  # depends on the image
  # 4 ngf channels x (H/32) x (W/32) pooled cells feed each head.
  assert variables["params"]["mu"]["kernel"].shape == (32 * (height // 32) * (width // 32), 8)
  with pytest.raises(ValueError, match="multiples of 32"):
    jax.eval_shape(net.init, KEY, image[:, :16])


def test_sample_latent():
  mu = jnp.array([[1.0, -2.0]])
  logvar = jnp.array([[0.0, 2.0 * np.log(3.0)]])
  eps = jax.random.normal(KEY, (1, 2))
  z = models.sample_latent(KEY, mu, logvar)
  np.testing.assert_allclose(z, mu + eps * jnp.array([[1.0, 3.0]]), rtol=1e-6)


def test_tiny_discriminator_scales(tiny):
  net = models.build("discriminator", tiny)
  image = jax.random.uniform(KEY, (2, 64, 64, 3))
  z = jax.random.normal(KEY, (2, 8))
  variables = weights.random_variables(net, image, z, train=False)  # random weights
  outs = _eval_fn(net)(variables, image, z)
  # n_layers=2: 64 -> 32 -> 16 -> 15 -> 14; scale 1 starts from 32.
  assert [o.shape for o in outs] == [(2, 14, 14, 1), (2, 6, 6, 1)]
  assert variables["params"]["scale_1"]["conv_0"]["kernel"].shape == (4, 4, 11, 4)
  _, updates = _train_fn(net)(variables, 0, image, z)
  assert not np.allclose(updates["batch_stats"]["scale_0"]["norm_1"]["var"],
                         variables["batch_stats"]["scale_0"]["norm_1"]["var"])


def test_conv_real_init_is_torch_default():
  conv = layers.Conv2d(8, 7, padding=3)
  variables = conv.init(KEY, jnp.zeros((1, 16, 16, 6)))
  kernel = variables["params"]["kernel"]
  assert kernel.shape == (7, 7, 6, 8)
  # PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 6 * 49.
  bound = 1 / np.sqrt(294)
  assert bound * 0.9 < float(jnp.max(jnp.abs(kernel))) <= bound
  assert float(jnp.max(jnp.abs(variables["params"]["bias"]))) <= bound


def test_tiny_fusion(tiny):
  net = models.build("fusion", tiny)
  a = jax.random.uniform(KEY, (1, 16, 16, 3))
  variables = weights.random_variables(net, a, a)  # random weights
  assert variables["params"]["conv_in"]["kernel"].shape == (7, 7, 6, 8)
  assert "bias" not in variables["params"]["block_0"]["conv1"]
  out = jax.jit(net.apply)(variables, a, 1 - a)
  assert out.shape == (1, 16, 16, 3)
  assert not np.allclose(out, jax.jit(net.apply)(variables, 1 - a, a))  # order matters
  with pytest.raises(ValueError, match="differ in shape"):
    net.apply(variables, a, a[:, :8])


def test_build_every_network_and_errors(tiny):
  built = {name: models.build(name, tiny) for name in models.NETWORKS}
  assert type(built["ihn"]).__name__ == "InverseHalftoneNet"
  assert built["histogram"].bins == 8
  assert type(built["vgg19"]).__name__ == "VGG19"
  assert built["generator"].ngf == 4  # from the tiny section, not the defaults
  with pytest.raises(ValueError, match="unknown network"):
    models.build("lpips", tiny)
  with pytest.raises(ValueError, match="bad config"):
    models.build("fusion", {"widths": 3})


def test_layer_helpers_hand_computed():
  x = jnp.arange(4.0).reshape(1, 2, 2, 1)  # [[0, 1], [2, 3]]
  up = kernels.reference.upsample_bilinear_2x(x)[0, ..., 0]
  # Half-pixel centres: first row 0, 0.25, 0.75, 1 (clamped at the border).
  np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])
  pooled = layers.avg_pool_exclude_pad(x, 3, 2, 1)
  # Only the real pixels count: the single window covers all four -> 1.5.
  np.testing.assert_allclose(pooled[0, 0, 0, 0], 1.5)
  padded = kernels.reference.reflect_pad(jnp.arange(3.0).reshape(1, 1, 3, 1).repeat(2, 1), 1)
  np.testing.assert_array_equal(padded[0, 1, :, 0], [1, 0, 1, 2, 1])
  normed = layers.instance_norm(jnp.array([[[[1.0], [3.0]]]]))
  np.testing.assert_allclose(normed[0, 0, :, 0], [-1, 1], atol=1e-5)


def _torch_conventions_check(torch):
  """Each torch layer vs our layer with converted weights; returns max diffs."""
  from ihc_jax.tools import convert_weights
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 8, 8, 5)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  to_nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)
  diffs = {}

  conv = torch.nn.Conv2d(5, 3, 4, stride=2, padding=1)
  ours = layers.Conv2d(3, 4, stride=2, padding=1)
  spec = [convert_weights.LayerMap("conv", "c", ("c",))]
  params = convert_weights.apply_spec(
      {f"c.{k}": v.detach().numpy() for k, v in conv.state_dict().items()}, spec)["params"]["c"]
  diffs["conv"] = np.abs(to_nhwc(conv(xt)) - ours.apply({"params": params}, x)).max()

  for k in (3, 7):  # ReflectionPad2d + unpadded conv (E, U-Net up path)
    conv = torch.nn.Conv2d(5, 3, k)
    ours = layers.Conv2d(3, k, padding=k // 2, padding_mode="reflect")
    params = convert_weights.apply_spec(
        {f"c.{n}": v.detach().numpy() for n, v in conv.state_dict().items()}, spec)["params"]["c"]
    reference = conv(torch.nn.ReflectionPad2d(k // 2)(xt))
    diffs[f"reflect_conv{k}"] = np.abs(
        to_nhwc(reference) - ours.apply({"params": params}, x)).max()

  bn = torch.nn.BatchNorm2d(5).eval()
  with torch.no_grad():
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.uniform_(-1, 1)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
  spec = [convert_weights.LayerMap("bn", "b", ("b",))]
  converted = convert_weights.apply_spec(
      {f"b.{k}": v.detach().numpy() for k, v in bn.state_dict().items()}, spec)
  variables = {"params": converted["params"]["b"], "batch_stats": converted["batch_stats"]["b"]}
  ours = layers.batch_norm(False, "b")
  diffs["batch_norm"] = np.abs(to_nhwc(bn(xt)) - ours.apply(variables, x)).max()

  diffs["reflect_pad"] = np.abs(
      to_nhwc(torch.nn.ReflectionPad2d(3)(xt)) - kernels.reference.reflect_pad(jnp.asarray(x), 3)).max()
  up = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
  diffs["upsample"] = np.abs(to_nhwc(up(xt)) - kernels.reference.upsample_bilinear_2x(jnp.asarray(x))).max()
  pool = torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
  diffs["avg_pool"] = np.abs(
      to_nhwc(pool(xt)) - layers.avg_pool_exclude_pad(jnp.asarray(x), 3, 2, 1)).max()
  # AvgPool2d(3) on 8x8: floor mode drops the last 2 rows and columns.
  diffs["avg_pool_blocks"] = np.abs(
      to_nhwc(torch.nn.AvgPool2d(3)(xt)) - kernels.avg_pool_blocks(jnp.asarray(x), 3)).max()
  diffs["instance_norm"] = np.abs(
      to_nhwc(torch.nn.InstanceNorm2d(5)(xt)) - layers.instance_norm(jnp.asarray(x))).max()

  # Linear after flattening an NCHW map (E's heads) vs our NHWC flatten.
  linear = torch.nn.Linear(5 * 8 * 8, 4)
  spec = [convert_weights.LayerMap("linear_nchw", "fc", ("fc",), channels=5)]
  params = convert_weights.apply_spec(
      {f"fc.{k}": v.detach().numpy() for k, v in linear.state_dict().items()}, spec)["params"]["fc"]
  diffs["linear_nchw"] = np.abs(
      linear(xt.reshape(2, -1)).detach().numpy()
      - layers.Linear(4).apply({"params": params}, jnp.asarray(x).reshape(2, -1))).max()
  return diffs


def test_layer_conventions_match_torch():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  with torch.no_grad():
    diffs = _torch_conventions_check(torch)
  assert set(diffs) == {"conv", "reflect_conv3", "reflect_conv7", "batch_norm", "reflect_pad",
                        "upsample", "avg_pool", "avg_pool_blocks", "instance_norm",
                        "linear_nchw"}
  for name, value in diffs.items():
    assert value <= 1e-5, (name, value)


@pytest.mark.parametrize("shape", [(2, 16, 16, 4), (1, 19, 13, 3)])
def test_avg_pool_blocks_equals_flax_avg_pool_with_its_gradient(shape):
  """E's pooling: the block mean equals the reduce_window form, value and
  gradient, also where the map is not a whole number of blocks."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape, np.float32))
  w = jnp.asarray(rng.standard_normal((shape[0], shape[1] // 4, shape[2] // 4, shape[3]),
                                      np.float32))
  reference = lambda x: nn.avg_pool(x, (4, 4), strides=(4, 4))
  np.testing.assert_allclose(cpu_pools.avg_pool_blocks(x, 4), reference(x), atol=1e-6)
  grads = [jax.grad(lambda x, f=f: jnp.sum(f(x) * w))(x)
           for f in (reference, lambda x: cpu_pools.avg_pool_blocks(x, 4))]
  np.testing.assert_allclose(grads[1], grads[0], atol=1e-7)
  assert float(jnp.abs(grads[1][:, shape[1] // 4 * 4:]).max(initial=0.0)) == 0.0


def test_reflect_conv2d_needs_stride_one_and_same_padding():
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match="reflect padding"):
    layers.Conv2d(3, 3, stride=2, padding=1, padding_mode="reflect").init(
        jax.random.PRNGKey(0), x)


def test_upsample_matches_jax_image_resize():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 4, 3)), jnp.float32)
  expected = jax.image.resize(x, (2, 10, 8, 3), method="bilinear")
  np.testing.assert_allclose(kernels.reference.upsample_bilinear_2x(x), expected, atol=1e-6)


def test_ihn_detail_output_is_expand_conv_then_1x1_conv(tiny):
  """The fused detail conv equals the two official convs run in a row."""
  net = models.build("ihn", tiny)
  rng = np.random.default_rng(2)
  halftone = jnp.asarray(rng.random((2, 64, 64, 1)), jnp.float32)
  noise = jnp.asarray(rng.standard_normal((2, 64, 64, tiny.ihn.nz)), jnp.float32)
  # Compiled once without LLVM's optimisations (the trainers' init); eagerly,
  # each of the tiny IHN's ops would compile on its own (a minute).
  variables = linen_utils.init_variables(net, jax.random.PRNGKey(0), halftone,
                                         noise, train=False)
  params = variables["params"]
  assert params["detail_expand"]["kernel"].shape == (3, 3, 8, 16)
  assert params["detail_out"]["kernel"].shape == (1, 1, 16, 1)
  (_, detail, _), state = jax.jit(functools.partial(
      net.apply, train=False, capture_intermediates=True))(variables, halftone, noise)
  last_block = state["intermediates"][f"detail_block_{tiny.ihn.detail_blocks - 1}"]
  x = last_block["__call__"][0]
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
  expanded = conv(x, params["detail_expand"]["kernel"], padding=((1, 1), (1, 1)))
  expected = conv(expanded, params["detail_out"]["kernel"], padding="VALID")
  np.testing.assert_allclose(detail, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,window", [((2, 16, 16, 4), 2), ((1, 19, 13, 3), 2),
                                          ((1, 12, 10, 2), 3)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_max_pool_blocks_equals_flax_max_pool_with_its_gradient(shape, window, dtype):
  """VGG19's pooling: the block maximum equals the reduce_window form bit
  for bit, and so does its gradient, which goes to each block's first
  maximum where several tie (post-ReLU zeros, a flat region) and is zero
  past the last whole block."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = np.maximum(rng.standard_normal(shape), 0.0)
  x[:, :6, :6, 0] = 0.5  # ties of a positive value
  x = jnp.asarray(x, dtype)
  out_shape = (shape[0], shape[1] // window, shape[2] // window, shape[3])
  w = jnp.asarray(rng.standard_normal(out_shape), dtype)
  reference = lambda x: nn.max_pool(x, (window, window), strides=(window, window))
  ours = lambda x: cpu_pools.max_pool_blocks(x, window)
  np.testing.assert_array_equal(np.asarray(ours(x), np.float32),
                                np.asarray(reference(x), np.float32))
  grads = [jax.jit(jax.grad(lambda x, f=f: jnp.sum((f(x) * w).astype(jnp.float32))))(x)
           for f in (reference, ours)]
  assert grads[1].dtype == dtype
  np.testing.assert_array_equal(np.asarray(grads[1], np.float32),
                                np.asarray(grads[0], np.float32))
  # Each block passes its cotangent on once, to one cell.
  nonzero = np.asarray(grads[1] != 0).sum()
  assert nonzero == np.count_nonzero(np.asarray(w))
