"""Layers and architectures: masked conv, BN over T×B, parameter counts from the published layer lists
(SNN-VGG-16: 3x3 convs 64,64,M,128,128,M,256x3,M,512x3,M,512x3,M, linear 512 -> classes; Res-SNN-19: stem,
basic blocks [3, 3, 2] at 128, 256, 512 channels, head 512 -> 256 -> classes), shapes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.layers import BNConfig, ConvBN
from jsnn.models import get_model
from jsnn.variables import apply_model, check_kernel_tree, init_variables, kernels, named_kernels
from tests import small_data
from tests.reference import numpy_conv_same


def test_masked_conv_equals_dense_conv_of_masked_kernel_and_blocks_gradient():
    layer = ConvBN(6, bn=BNConfig(affine=False))
    x = small_data.normal(jax.random.key(0), (2, 5, 5, 3))
    v = layer.init(jax.random.key(1), x, train=False)
    kernel = np.asarray(v["weights"]["kernel"])
    mask = np.asarray(small_data.bernoulli(jax.random.key(2), 0.5, kernel.shape), np.float32)
    v = {**v, "masks": {"kernel": jnp.asarray(mask)}}
    out = layer.apply(v, x, train=False)  # eval BN with running stats (0, 1): identity up to eps
    ref = numpy_conv_same(np.asarray(x, np.float64), kernel * mask) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)

    def loss(w):
        return jnp.sum(layer.apply({**v, "weights": {"kernel": w}}, x, train=False) ** 2)

    g = np.asarray(jax.grad(loss)(v["weights"]["kernel"]))
    assert np.all(g[mask == 0] == 0)
    assert np.count_nonzero(g[mask == 1]) > 0.9 * mask.sum()


def test_bn_statistics_are_over_time_and_batch_jointly():
    model = get_model("digits_cnn", 10, timesteps=3)
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    images = small_data.normal(jax.random.key(1), (4, 8, 8, 1))
    _, stats, _ = apply_model(model, v, images, train=True)
    assert stats["conv1"]["mean"].shape == (64,)
    # encoding layer: the image is seen once, so its BN sees B samples; the momentum-0.1 update
    # of the running mean equals 0.1 * the conv output's mean over (B, H, W)
    k = np.asarray(v.weights["conv0"]["kernel"], np.float64)
    conv = numpy_conv_same(np.asarray(images, np.float64), k)
    np.testing.assert_allclose(np.asarray(stats["conv0"]["mean"]), 0.1 * conv.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    n = conv.size // conv.shape[-1]
    np.testing.assert_allclose(np.asarray(stats["conv0"]["var"]), 0.9 + 0.1 * conv.var((0, 1, 2)) * n / (n - 1),
                               rtol=1e-4)


def conv_bn_params(cin, cout, k=3):
    return k * k * cin * cout, 2 * cout  # kernel; BN scale + bias


def vgg16_counts(classes):
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    kernel = bn = 0
    cin = 3
    for c in plan:
        if c == "M":
            continue
        k, b = conv_bn_params(cin, c)
        kernel, bn, cin = kernel + k, bn + b, c
    kernel += 512 * classes  # 32 -> 1 after five pools: 512 features
    return kernel, classes, bn


def resnet19_counts(classes):
    kernel, bn = conv_bn_params(3, 64)
    cin = 64
    for cout, blocks in [(128, 3), (256, 3), (512, 2)]:
        for b in range(blocks):
            for k, bb in [conv_bn_params(cin, cout), conv_bn_params(cout, cout)]:
                kernel, bn = kernel + k, bn + bb
            if b == 0:  # stride 2 and new width: 1x1 conv + BN shortcut
                k, bb = conv_bn_params(cin, cout, k=1)
                kernel, bn = kernel + k, bn + bb
            cin = cout
    kernel += 512 * 256 + 256 * classes
    return kernel, 256 + classes, bn


@pytest.mark.parametrize("name,counts", [("vgg16", vgg16_counts), ("resnet19", resnet19_counts)])
@pytest.mark.parametrize("classes", [10, 100])
def test_parameter_counts_match_the_published_layer_lists(name, counts, classes):
    model = get_model(name, classes, timesteps=2)
    v = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (1, 32, 32, 3)))
    size = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
    kernel, bias, bn = counts(classes)
    assert size(kernels(v.weights)) == kernel
    assert size(v.weights) == kernel + bias
    assert size(v.masks) == kernel
    assert size(v.bn) == bn
    assert size(v.batch_stats) == bn


def test_resnet19_layout():
    model = get_model("resnet19", 100, timesteps=1)
    v = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (1, 32, 32, 3)))
    names = named_kernels(v.weights)
    assert len(names) == 1 + 2 * 8 + 3 + 2  # stem, 8 blocks of 2 convs, 3 shortcuts, 2 linear
    assert names["stage2_block0/shortcut"].shape == (1, 1, 256, 512)
    assert names["fc2"].shape == (256, 100)


@pytest.mark.parametrize("name,shape", [("digits_cnn", (3, 8, 8, 1)), ("vgg_small", (2, 32, 32, 3)),
                                        ("resnet19", (2, 32, 32, 3))])
def test_output_is_logits_per_timestep(name, shape):
    model = get_model(name, 7, timesteps=3)
    v = init_variables(model, jax.random.key(0), shape)
    logits, new_stats, _ = apply_model(model, v, jnp.ones(shape), train=True)
    assert logits.shape == (3, shape[0], 7)
    assert jax.tree.structure(new_stats) == jax.tree.structure(v.batch_stats)
    logits_eval, same, _ = apply_model(model, v, jnp.ones(shape), train=False)
    assert same is v.batch_stats and logits_eval.shape == (3, shape[0], 7)


def test_vgg16_output_shape_abstractly():
    model = get_model("vgg16", 100, timesteps=5)
    v = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (2, 32, 32, 3)))
    out = jax.eval_shape(lambda v: apply_model(model, v, jnp.zeros((2, 32, 32, 3)), train=True)[0], v)
    assert out.shape == (5, 2, 100)


def test_masks_and_bad_inputs_give_clear_errors():
    model = get_model("digits_cnn", 10, timesteps=2)
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    check_kernel_tree(v.masks, v.weights)  # the model's own masks fit
    bad = {k: m for k, m in v.masks.items() if k != "fc"}
    with pytest.raises(ValueError, match=r"missing \['fc/kernel'\]"):
        check_kernel_tree(bad, v.weights)
    wrong = {**v.masks, "fc": {"kernel": jnp.ones((3, 3))}}
    with pytest.raises(ValueError, match="fc/kernel has shape"):
        check_kernel_tree(wrong, v.weights)
    with pytest.raises(ValueError, match="NHWC"):
        apply_model(model, v, jnp.ones((8, 8, 1)), train=False)
    with pytest.raises(ValueError, match="timesteps must be >= 1"):
        init_variables(get_model("digits_cnn", 10, timesteps=0), jax.random.key(0), (1, 8, 8, 1))
    with pytest.raises(ValueError, match="unknown model"):
        get_model("vgg17", 10)


def test_firing_statistics_are_recorded_per_kernel():
    model = get_model("digits_cnn", 10, timesteps=2)
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    _, _, stats = apply_model(model, v, small_data.normal(jax.random.key(1), (5, 8, 8, 1)), train=False,
                              collect_stats=True)
    assert "input_sum" not in stats["conv0"]  # the encoding layer's input is the image, not spikes
    assert stats["conv1"]["input_sum"].shape == (32,)
    assert float(stats["conv1"]["input_count"]) == 2 * 5 * 8 * 8
    assert stats["conv1"]["potential_sum"].shape == (64,)
    assert "potential_sum" not in stats["fc"]  # no LIF after the classifier


def small_resnet(**options):
    """Res-SNN's blocks (identity and strided 1x1-conv shortcuts) at a size that initialises in seconds."""
    from jsnn.models.resnet import SpikingResNet

    return SpikingResNet(num_classes=10, timesteps=2, stem_features=4, stage_features=(4, 8), stage_blocks=(2, 1),
                         hidden_features=8, **options)


@pytest.mark.parametrize("init", ["kaiming_normal", "signed_constant"])
def test_init_variables_equals_flax_init_bit_for_bit(init):
    """init_variables skips the forward pass (flax's lazy_init): every variable must still be model.init's
    (the published digits results depend on it)."""
    from flax import traverse_util

    model = get_model("digits_cnn", 10, timesteps=2, weight_init=init)
    shape = (1, 8, 8, 1)
    ours = init_variables(model, jax.random.key(7), shape)
    full = traverse_util.flatten_dict(model.init({"params": jax.random.key(7)}, jnp.zeros(shape), train=False))
    flat = {}
    for collection, tree in zip(("weights", "masks", "bn", "batch_stats"), ours):
        flat.update({(collection,) + k: v for k, v in traverse_util.flatten_dict(tree).items()})
    assert sorted(flat) == sorted(k for k in full if k[0] != "stats")
    for k, v in flat.items():
        assert v.dtype == full[k].dtype and np.array_equal(np.asarray(v), np.asarray(full[k])), k


def test_init_variables_computes_nothing_but_the_variables(monkeypatch):
    """Under lazy_init every op on concrete values runs eagerly, one compiled program per op and shape at the
    start of every run: BatchNorm's arithmetic on its variables must not run while initialising."""
    import jsnn.layers as layers

    def refuse(*_):
        raise AssertionError("BatchNorm arithmetic ran during init")

    monkeypatch.setattr(layers.jax.lax, "rsqrt", refuse)
    for name in ("digits_cnn", "resnet19"):
        v = init_variables(get_model(name, 10, timesteps=2), jax.random.key(0), (1, 8, 8, 1))
        assert v.masks and v.bn and v.batch_stats
        # the constants made on the host come back as device arrays, as model.init's do
        assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(v))


def test_folded_masks_give_the_same_outputs_bit_for_bit():
    """fold_masks multiplies each mask into its kernel once; the forward pass must not change."""
    from jsnn.variables import by_name, fold_masks, map_with_names

    model = small_resnet()
    v = init_variables(model, jax.random.key(1), (1, 16, 16, 3))
    rng = np.random.default_rng(0)
    masks = map_with_names(lambda _, m: jnp.asarray(rng.random(m.shape) < 0.3, m.dtype), v.masks)
    v = v._replace(masks=masks)
    x = small_data.normal(jax.random.key(2), (3, 16, 16, 3))
    folded = fold_masks(v)
    assert all(m.shape == () for m in jax.tree.leaves(folded.masks))
    mask_of = by_name(v.masks)
    for name, k in named_kernels(folded.weights).items():  # kept entries unchanged, pruned ones exactly zero
        m = np.asarray(mask_of[name]) > 0
        np.testing.assert_array_equal(np.asarray(k)[m], np.asarray(named_kernels(v.weights)[name])[m])
        assert not np.any(np.asarray(k)[~m])
    ours, _, _ = apply_model(model, folded, x, train=False)
    ref, _, _ = apply_model(model, v, x, train=False)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
