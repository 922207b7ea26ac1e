"""Side by side with the official PyTorch code: `python -m ihc_jax.bench official`.

  python -m ihc_jax.bench official --repo PATH [--size 256] [--repeats 5]
      [--train-batch 2] [--no-memory]

PATH is your own clone of ccc870206/InverseHalftoneColorization; its modules
are imported from there (nothing of it is part of ihc_jax) through
`ihc_jax.tools.parity.import_official`, which applies two import shims so
that they run on a CPU-only torch without torchvision and without
downloads: (1) the official pretrained-VGG classes call
`torchvision.models.vgg19(pretrained=True)`; they get an offline VGG19
feature stack with random weights instead; (2) the official Canny helper
(`functions.edge_detection_canny`) uses `torchvision.transforms`
(ToPILImage, ToTensor, Compose); a stub with torchvision's conversions
stands in where torchvision is missing.

Both sides get the same random weights (the official modules' initial
weights with random BatchNorm statistics, converted to ours with
`ihc_jax.tools.convert_weights`) and the same inputs. Timed, interleaved in
one process (torch, then ihc_jax, per repeat; medians of --repeats after a
warm-up call that includes JAX's compilation):

* forward pass of IHN, G, E and F (batch 1, eval mode);
* the reference path of test.py: E on the reference, z sampled, then
  IHN -> Canny -> G, Canny -> G -> IHN per channel, F;
* all of test.py: one reference code plus two random codes (original-code.md
  §4); ours is `ihc_jax.inference.Pipeline.colorize`;
* an IHN training step: pixel loss (5 MSE(content) + L1(output)) plus an MSE
  perceptual loss on VGG19 pool4 (the official VGG class), Adam;
* a colorization step: E + G (L1, KL, LSGAN through both D scales), then D
  (LSGAN on real and detached fake), each with Adam; ours is one jitted step.

Printed per item: both medians and the ratio torch time / ihc_jax time (> 1:
ihc_jax is faster). Then the peak resident memory of each side running
test.py once in a fresh process (--no-memory skips it), and the load average
(the machine may be shared: read ratios against it). The last line gives the
ratios for inference (all of test.py), the IHN step and the colour step.
Benchmark figures only: nothing here asserts a speed.

One file (about 560 lines, over the project's 500) on purpose: each timed
item builds its torch call and its ihc_jax call side by side, so that a
reader checks in one place that both sides do the same work.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ihc_jax.bench import timing

NZ = 8
# Loss weights of the two training steps (BicycleGAN's defaults for the
# colour step; the official code releases none). Speed does not depend on them.
_PERCEPTUAL_WEIGHT = 1.0
_L1_WEIGHT = 10.0
_KL_WEIGHT = 0.01
_LEARNING_RATE = 2e-4


def make_inputs(size: int, batch: int, seed: int) -> dict[str, np.ndarray]:
  """NHWC float32 inputs shared by both sides."""
  rng = np.random.default_rng(seed)
  return {
      "halftone": (rng.random((batch, size, size, 1)) > 0.5).astype(np.float32),
      "gray": rng.random((batch, size, size, 1)).astype(np.float32),
      "color": rng.random((batch, size, size, 3)).astype(np.float32),
      "reference": rng.random((batch, size, size, 3)).astype(np.float32),
      "raw_noise": rng.standard_normal((batch, size, size, NZ)).astype(np.float32),
      "eps": rng.standard_normal((batch, NZ)).astype(np.float32),
  }


# -- the official side ----------------------------------------------------------


class TorchSide:
  """The official modules, driven the way test.py drives them."""

  def __init__(self, official: dict[str, Any], nets: dict[str, Any]):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.nets = nets
    self.functions = official["functions"]
    self.noise_filter = self.functions.get_Gaussian_filter(NZ)
    self.official = official

  def tensor(self, x: np.ndarray) -> Any:
    """NHWC numpy -> NCHW tensor."""
    return self.torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))

  def colorize(self, halftone: Any, reference: Any, num_random: int) -> list[Any]:
    """test.py on one batch: fused results for z_ref (if reference) + random codes."""
    torch, f = self.torch, self.functions
    ihn, gen, fusion = self.nets["ihn"], self.nets["generator"], self.nets["fusion"]
    with torch.no_grad():
      codes = []
      if reference is not None:
        mu, logvar = self.nets["encoder"](reference)
        codes.append(f.get_z_encode(mu, logvar))
      codes += [f.get_z_random(halftone.shape[0], NZ) for _ in range(num_random)]
      size = halftone.shape[-1]
      noise = self.noise_filter(torch.randn(halftone.shape[0], NZ, size, size))
      gray = ihn(halftone, z=noise)[-1]
      gray_edge = f.edge_detection_canny(gray)
      halftone_edge = f.edge_detection_canny(halftone)
      results = []
      for z in codes:
        forward = gen(gray, gray_edge, z)
        color_halftone = gen(halftone, halftone_edge, z)
        inverse = torch.cat([ihn(color_halftone[:, c:c + 1], z=noise)[-1]
                             for c in range(3)], 1)
        results.append(fusion(forward, inverse))
    return results

  def forward_fn(self, name: str, args: Sequence[Any]) -> Callable[[], Any]:
    """A no-grad eval-mode forward call of one network."""
    torch, net = self.torch, self.nets[name]

    def run():
      with torch.no_grad():
        if name == "ihn":
          return net(args[0], z=args[1])
        return net(*args)
    return run

  def ihn_step_fn(self, halftone: Any, noise: Any, gray: Any) -> Callable[[], Any]:
    """One IHN training step: pixel + VGG pool4 perceptual loss, Adam."""
    torch = self.torch
    ihn = self.nets["ihn_train"]
    vgg = self.official["VGG19_pool4"]()
    for p in vgg.parameters():
      p.requires_grad_(False)
    optimizer = torch.optim.Adam(ihn.parameters(), lr=_LEARNING_RATE, betas=(0.5, 0.999))
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()

    def step():
      content, _, output = ihn(halftone, z=noise)
      loss = 5.0 * mse(content, gray) + l1(output, gray)
      loss = loss + _PERCEPTUAL_WEIGHT * mse(vgg(output.repeat(1, 3, 1, 1)),
                                             vgg(gray.repeat(1, 3, 1, 1)))
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      return loss
    self.vgg = vgg
    return step

  def color_step_fn(self, gray: Any, edge: Any, color: Any,
                    reference: Any) -> Callable[[], Any]:
    """E + G update (L1, KL, LSGAN), then D update (LSGAN), each with Adam."""
    torch = self.torch
    enc, gen, disc = self.nets["encoder_train"], self.nets["generator_train"], \
        self.nets["discriminator_train"]
    gan = self.official["GANLoss"]("lsgan")
    opt_g = torch.optim.Adam(list(enc.parameters()) + list(gen.parameters()),
                             lr=_LEARNING_RATE, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=_LEARNING_RATE, betas=(0.5, 0.999))
    l1 = torch.nn.L1Loss()

    def set_d_trainable(flag: bool) -> None:
      for p in disc.parameters():
        p.requires_grad_(flag)

    def step():
      mu, logvar = enc(reference)
      z = self.functions.get_z_encode(mu, logvar)
      fake = gen(gray, edge, z)
      set_d_trainable(False)
      kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
      loss_g = gan(disc(fake, z), True) + _L1_WEIGHT * l1(fake, color) + _KL_WEIGHT * kl
      opt_g.zero_grad()
      loss_g.backward()
      opt_g.step()
      set_d_trainable(True)
      z_d = z.detach()
      loss_d = gan(disc(color, z_d), True) + gan(disc(fake.detach(), z_d), False)
      opt_d.zero_grad()
      loss_d.backward()
      opt_d.step()
      return loss_g, loss_d
    return step


# -- our side -------------------------------------------------------------------


def _jax_ihn_step(ihn: Any, vgg_params: Any) -> Callable[..., Any]:
  """Our IHN step with the same losses and optimizer as `TorchSide.ihn_step_fn`."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from ihc_jax import losses  # pylint: disable=g-import-not-at-top
  from ihc_jax.losses import perceptual  # pylint: disable=g-import-not-at-top
  optimizer = optax.adam(_LEARNING_RATE, b1=0.5, b2=0.999)

  def loss_fn(params, batch_stats, halftone, noise, gray, key):
    (content, _, output), updates = ihn.apply(
        {"params": params, "batch_stats": batch_stats}, halftone, noise, train=True,
        rngs={"dropout": key}, mutable=["batch_stats"])
    loss = losses.pixel_loss(content, output, gray)
    loss += _PERCEPTUAL_WEIGHT * perceptual.perceptual_loss(
        vgg_params, _rgb(output), _rgb(gray), layer="pool4", normalization="none")
    return loss, updates["batch_stats"]

  @jax.jit
  def step(state, halftone, noise, gray, key):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, halftone, noise, gray, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  return step, optimizer


def _rgb(x: Any) -> Any:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp.repeat(x, 3, axis=-1)


def _jax_color_step(enc: Any, gen: Any, disc: Any) -> Callable[..., Any]:
  """Our colour step, E + G and D updated in one jitted call."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax.losses import adversarial  # pylint: disable=g-import-not-at-top
  from ihc_jax.losses import kl as kl_lib  # pylint: disable=g-import-not-at-top
  optimizer = optax.adam(_LEARNING_RATE, b1=0.5, b2=0.999)

  def g_loss(eg_params, state, gray, edge, color, reference, key):
    eps_key, drop_key, d_key = jax.random.split(key, 3)
    mu, logvar = enc.apply({"params": eg_params["encoder"]}, reference)
    z = models.sample_latent(eps_key, mu, logvar)
    fake, g_updates = gen.apply(
        {"params": eg_params["generator"], "batch_stats": state["generator_stats"]},
        gray, edge, z, train=True, rngs={"dropout": drop_key}, mutable=["batch_stats"])
    logits, d_updates = disc.apply(
        {"params": state["discriminator"], "batch_stats": state["discriminator_stats"]},
        fake, z, train=True, rngs={"dropout": d_key}, mutable=["batch_stats"])
    loss = (adversarial.generator_adversarial_loss(logits)
            + _L1_WEIGHT * jnp.mean(jnp.abs(fake - color))
            + _KL_WEIGHT * jnp.sum(kl_lib.kl_loss(mu, logvar, reduction="none")))
    return loss, (fake, z, g_updates["batch_stats"], d_updates["batch_stats"])

  def d_loss(d_params, d_stats, fake, z, color):
    variables = {"params": d_params, "batch_stats": d_stats}
    real_logits, updates = disc.apply(variables, color, z, train=True,
                                      mutable=["batch_stats"])
    fake_logits, updates = disc.apply({"params": d_params, **updates}, fake, z,
                                      train=True, mutable=["batch_stats"])
    return (adversarial.discriminator_adversarial_loss(real_logits, fake_logits),
            updates["batch_stats"])

  @jax.jit
  def step(state, gray, edge, color, reference, key):
    eg_params = {"encoder": state["encoder"], "generator": state["generator"]}
    (loss_g, (fake, z, g_stats, d_stats)), grads = jax.value_and_grad(
        g_loss, has_aux=True)(eg_params, state, gray, edge, color, reference, key)
    updates, opt_g = optimizer.update(grads, state["opt_g"], eg_params)
    eg_params = optax.apply_updates(eg_params, updates)
    fake, z = jax.lax.stop_gradient(fake), jax.lax.stop_gradient(z)
    (loss_d, d_stats), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        state["discriminator"], d_stats, fake, z, color)
    d_updates, opt_d = optimizer.update(d_grads, state["opt_d"], state["discriminator"])
    new_state = dict(state, encoder=eg_params["encoder"], generator=eg_params["generator"],
                     generator_stats=g_stats, discriminator_stats=d_stats,
                     discriminator=optax.apply_updates(state["discriminator"], d_updates),
                     opt_g=opt_g, opt_d=opt_d)
    return new_state, (loss_g, loss_d)

  return step, optimizer


# -- timing ---------------------------------------------------------------------


def _interleave(items: dict[str, tuple[Callable[[], Any], Callable[[], Any]]],
                repeats: int) -> dict[str, tuple[float, float]]:
  """Median seconds (torch, ours) per item; one warm-up call each first.

  The side that runs first alternates from one repeat to the next, so that
  neither always inherits the other's cache and allocator state.
  """
  for name, (torch_fn, jax_fn) in items.items():
    torch_fn()
    jax_fn()
    print(f"  warmed up {name}", flush=True)
  samples = {name: ([], []) for name in items}
  for repeat in range(repeats):
    order = (0, 1) if repeat % 2 == 0 else (1, 0)
    for name, fns in items.items():
      for side in order:
        samples[name][side].append(timing.time_call(fns[side]))
    print(f"  repeat {repeat + 1}/{repeats} done", flush=True)
  return {name: (timing.median(t), timing.median(j)) for name, (t, j) in samples.items()}


def _block(x: Any) -> Any:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.block_until_ready(x)


def _forward_items(side: "TorchSide", flax_nets: dict[str, Any],
                   variables: dict[str, Any], size: int, seed: int
                   ) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
  """Forward passes of each network, the reference path and all of test.py."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ihc_jax import inference  # pylint: disable=g-import-not-at-top
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax.tools import parity  # pylint: disable=g-import-not-at-top

  t = side.tensor
  x = make_inputs(size, 1, seed)
  noise_t = side.noise_filter(t(x["raw_noise"])).detach()
  noise = models.filter_noise(jnp.asarray(x["raw_noise"]), variant="official")
  edge = parity._canny(x["halftone"])  # pylint: disable=protected-access
  z = x["eps"]

  def jitted(name: str, **kwargs: Any) -> Callable[..., Any]:
    net = flax_nets[name]
    return jax.jit(lambda v, *a: net.apply(v, *a, **kwargs))

  forward = {"ihn": (jitted("ihn", train=False), (x["halftone"], noise),
                     (t(x["halftone"]), noise_t)),
             "generator": (jitted("generator", train=False), (x["halftone"], edge, z),
                           (t(x["halftone"]), t(edge), side.torch.from_numpy(z))),
             "encoder": (jitted("encoder"), (x["reference"],), (t(x["reference"]),)),
             "fusion": (jitted("fusion"), (x["color"], x["reference"]),
                        (t(x["color"]), t(x["reference"])))}
  items = {}
  for name, (fn, jax_args, torch_args) in forward.items():
    jax_args = tuple(jnp.asarray(a) for a in jax_args)
    items[f"forward {name}"] = (
        side.forward_fn(name, torch_args),
        lambda fn=fn, name=name, jax_args=jax_args: _block(fn(variables[name], *jax_args)))

  pipeline = inference.Pipeline(models.default_model_config(), variables, image_size=size,
                                tile_batch=1)
  halftone_2d, reference = x["halftone"][0, ..., 0], x["reference"][0]
  items["reference path"] = (
      lambda: side.colorize(t(x["halftone"]), t(x["reference"]), 0),
      lambda: pipeline.colorize(halftone_2d, reference, num_samples=0))
  items["test.py (ref + 2 random)"] = (
      lambda: side.colorize(t(x["halftone"]), t(x["reference"]), 2),
      lambda: pipeline.colorize(halftone_2d, reference, num_samples=2))
  return items


def _ihn_step_item(side: "TorchSide", flax_nets: dict[str, Any],
                   variables: dict[str, Any], xb: dict[str, Any], seed: int
                   ) -> tuple[Callable[[], Any], Callable[[], Any]]:
  """One IHN training step (pixel + VGG pool4 perceptual) on both sides."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax.models import vgg as vgg_lib  # pylint: disable=g-import-not-at-top

  t = side.tensor
  noise_b = models.filter_noise(jnp.asarray(xb["raw_noise"]), variant="official")
  noise_bt = side.noise_filter(t(xb["raw_noise"])).detach()
  ihn_torch = side.ihn_step_fn(t(xb["halftone"]), noise_bt, t(xb["gray"]))
  # The official class keeps VGG19 up to pool4; the unused conv5 weights of
  # ours stay random.
  vgg_state = vgg_lib.flax_vgg19_to_torchvision(vgg_lib.init_vgg19_params(seed))
  vgg_state.update({f"features.{k}": v.numpy()
                    for k, v in side.vgg.vgg19_relu4_4.state_dict().items()})
  vgg_params = vgg_lib.torchvision_vgg19_to_flax(vgg_state)
  ihn_step, optimizer = _jax_ihn_step(flax_nets["ihn"], vgg_params)
  ihn_state = [(variables["ihn"]["params"], variables["ihn"]["batch_stats"],
                optimizer.init(variables["ihn"]["params"]))]
  ihn_inputs = tuple(jnp.asarray(a) for a in (xb["halftone"], noise_b, xb["gray"]))
  key = jax.random.PRNGKey(seed)

  def ihn_jax():
    ihn_state[0], loss = ihn_step(ihn_state[0], *ihn_inputs, key)
    return _block(loss)
  return ihn_torch, ihn_jax


def _color_step_item(side: "TorchSide", flax_nets: dict[str, Any],
                     variables: dict[str, Any], xb: dict[str, Any], seed: int
                     ) -> tuple[Callable[[], Any], Callable[[], Any]]:
  """One colorization step (E+G, then D) on both sides."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ihc_jax.tools import parity  # pylint: disable=g-import-not-at-top

  t = side.tensor
  edge_b = parity._canny(xb["gray"])  # pylint: disable=protected-access
  color_torch = side.color_step_fn(t(xb["gray"]), t(edge_b), t(xb["color"]),
                                   t(xb["reference"]))
  color_step, optimizer = _jax_color_step(flax_nets["encoder"], flax_nets["generator"],
                                          flax_nets["discriminator"])
  eg = {"encoder": variables["encoder"]["params"],
        "generator": variables["generator"]["params"]}
  color_state = [{
      "encoder": eg["encoder"], "generator": eg["generator"],
      "generator_stats": variables["generator"]["batch_stats"],
      "discriminator": variables["discriminator"]["params"],
      "discriminator_stats": variables["discriminator"]["batch_stats"],
      "opt_g": optimizer.init(eg),
      "opt_d": optimizer.init(variables["discriminator"]["params"])}]
  color_inputs = tuple(jnp.asarray(a) for a in (xb["gray"], edge_b, xb["color"],
                                                 xb["reference"]))
  key = jax.random.PRNGKey(seed)

  def color_jax():
    color_state[0], loss = color_step(color_state[0], *color_inputs, key)
    return _block(loss)
  return color_torch, color_jax


def build_items(repo: str, size: int, train_batch: int, seed: int
                ) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
  """The timed pairs (torch call, ihc_jax call), keyed by item name."""
  from ihc_jax.tools import parity  # pylint: disable=g-import-not-at-top

  official = parity.import_official(repo)
  torch_nets, flax_nets, variables = parity.build_networks(official, size=size, seed=seed)
  # Separate copies for the training steps, so that the forward items keep
  # their weights and eval mode.
  for name in ("ihn", "encoder", "generator", "discriminator"):
    torch_nets[f"{name}_train"] = copy.deepcopy(torch_nets[name]).train()
  side = TorchSide(official, torch_nets)
  items = _forward_items(side, flax_nets, variables, size, seed)
  # Training steps, batch `train_batch`.
  xb = make_inputs(size, train_batch, seed + 1)
  items["IHN train step"] = _ihn_step_item(side, flax_nets, variables, xb, seed)
  items["colour train step"] = _color_step_item(side, flax_nets, variables, xb,
                                                seed)
  return items


# -- peak memory ----------------------------------------------------------------


def _peak_rss_gb() -> float:
  """This process's peak resident memory (VmHWM) in GB.

  Not `ru_maxrss`: Linux carries that over from the parent through fork and
  exec, so a child spawned by a large benchmark process would report the
  parent's peak.
  """
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 2**20
  raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _peak_rss_torch(repo: str, size: int, seed: int) -> float:
  """Peak RSS (GB) of a fresh process running test.py once with torch."""
  import torch  # pylint: disable=g-import-not-at-top
  from ihc_jax.tools import official_code  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  official = official_code.import_official(repo)
  nets = {"ihn": official["IHNet"](), "encoder": official["Encoder"](3, 3),
          "generator": official["G_Unet_add_input"](),
          "fusion": official["MultipleBasicBlock_4"](6)}
  if size != 256:
    width = 256 * (size // 32) ** 2
    nets["encoder"].fc = torch.nn.Linear(width, NZ)
    nets["encoder"].fcVar = torch.nn.Linear(width, NZ)
  for net in nets.values():
    net.eval()
  side = TorchSide(official, nets)
  x = make_inputs(size, 1, seed)
  side.colorize(side.tensor(x["halftone"]), side.tensor(x["reference"]), 2)
  return _peak_rss_gb()


def _peak_rss_jax(size: int, seed: int) -> float:
  """Peak RSS (GB) of a fresh process running test.py once with ihc_jax."""
  from ihc_jax import inference  # pylint: disable=g-import-not-at-top
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  config = models.default_model_config()
  # The weights live once, in the pipeline, as in torch's modules: the numpy
  # arrays they are copied from are not kept (as in `Pipeline.load`).
  pipeline = inference.Pipeline(
      config, inference.init_random_variables(config, seed=seed, image_size=size),
      image_size=size, tile_batch=1)
  x = make_inputs(size, 1, seed)
  pipeline.colorize(x["halftone"][0, ..., 0], x["reference"][0], num_samples=2)
  return _peak_rss_gb()


def _in_fresh_process(fn: Callable[..., float], *args: Any) -> float:
  context = multiprocessing.get_context("spawn")
  with context.Pool(1) as pool:
    return pool.apply(fn, args)


# -- entry point ----------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
  """Runs the side-by-side benchmark and prints one line per figure."""
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench official")
  parser.add_argument("--repo", required=True,
                      help="your clone of ccc870206/InverseHalftoneColorization")
  parser.add_argument("--size", type=int, default=256,
                      help="image size, a multiple of 128 (default 256)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--train-batch", type=int, default=2,
                      help="batch of the two training steps (default 2)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-memory", action="store_true",
                      help="skip the two fresh-process peak-memory runs")
  args = parser.parse_args(list(argv))
  if args.size % 128:
    parser.error(f"--size must be a multiple of 128 (7-level U-Nets), got {args.size}")

  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  load_before = os.getloadavg()
  print(f"torch {torch.__version__} ({torch.get_num_threads()} threads) vs jax "
        f"{jax.__version__} on {jax.devices()[0].device_kind}; {args.size}x{args.size}, "
        f"batch 1 (training steps: batch {args.train_batch}); random weights, same on "
        f"both sides; medians of {args.repeats} interleaved repeats", flush=True)
  items = build_items(args.repo, args.size, args.train_batch, args.seed)
  results = _interleave(items, args.repeats)
  load_after = os.getloadavg()
  print(f"{'item':28s} {'torch s':>9s} {'ihc_jax s':>10s} {'torch/ihc_jax':>14s}")
  ratios = {}
  for name, (t, j) in results.items():
    ratios[name] = t / j
    print(f"{name:28s} {t:9.3f} {j:10.3f} {ratios[name]:13.2f}x", flush=True)

  if not args.no_memory:
    torch_gb = _in_fresh_process(_peak_rss_torch, os.path.abspath(args.repo), args.size,
                                 args.seed)
    jax_gb = _in_fresh_process(_peak_rss_jax, args.size, args.seed)
    print(f"peak RSS, test.py once in a fresh process: torch {torch_gb:.2f} GB, "
          f"ihc_jax {jax_gb:.2f} GB (each includes its imports; ihc_jax also compilation)")
  print("load average (1, 5, 15 min): before "
        + ", ".join(f"{v:.2f}" for v in load_before) + "; after "
        + ", ".join(f"{v:.2f}" for v in load_after) + f" on {os.cpu_count()} CPUs")
  print(f"torch/ihc_jax: inference {ratios['test.py (ref + 2 random)']:.2f}x, "
        f"ihn_step {ratios['IHN train step']:.2f}x, "
        f"color_step {ratios['colour train step']:.2f}x")
