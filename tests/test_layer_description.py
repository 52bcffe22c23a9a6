"""Each model's description of its layers (``model.layers``) against the module itself: its variables
and the shapes its forward pass computes (traced abstractly, so full-size networks cost nothing),
and the readers of the description (NIR export, the dense twin) against it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from benchmarks.jsnn_impl import DenseTwin
from jsnn.interop import to_nir
from jsnn.models import get_model
from jsnn.models.description import Describer, Layer, describe
from jsnn.models.observe import observe
from jsnn.variables import init_variables

MODELS = {
    "vgg16": (lambda: get_model("vgg16", 100, timesteps=2), (32, 32, 3)),
    "vgg_small": (lambda: get_model("vgg_small", 10, timesteps=3, width=0.5), (32, 32, 3)),
    "digits_cnn": (lambda: get_model("digits_cnn", 10, timesteps=4), (8, 8, 1)),
    "vgg_odd_shapes": (lambda: get_model("digits_cnn", 10, timesteps=2, plan=(4, "M", 6, "M", "M")), (13, 9, 2)),
    "resnet19": (lambda: get_model("resnet19", 100, timesteps=2), (32, 32, 3)),
    "resnet_narrow": (lambda: get_model("resnet19", 10, timesteps=2, width=0.25, stage_blocks=(2, 1, 1)), (15, 15, 3)),
}


def _variable_shapes(model, image_shape):
    v = jax.eval_shape(lambda key: init_variables(model, key, (2,) + image_shape), jax.random.key(0))
    return {name: {"/".join(k): tuple(x.shape) for k, x in traverse_util.flatten_dict(tree).items()}
            for name, tree in v._asdict().items()}


def _observed_shapes(model, image_shape):
    """(conv / linear calls, LIF layers) in the order the forward pass runs them, with their shapes."""
    calls = {}

    def run(variables, images):
        logits, seen = observe(model, variables, images)
        calls["connections"] = [(p, c.inputs.shape[1:], c.outputs.shape[1:]) for p, c in seen.connections.items()]
        calls["neurons"] = [(p, n.potentials.shape[2:], n.spikes.shape[2:]) for p, n in seen.neurons.items()]
        return logits

    variables = jax.eval_shape(lambda key: init_variables(model, key, (2,) + image_shape), jax.random.key(0))
    logits = jax.eval_shape(run, variables, jax.ShapeDtypeStruct((2,) + image_shape, jnp.float32))
    return calls["connections"], calls["neurons"], logits.shape


@pytest.mark.parametrize("name", sorted(MODELS))
def test_description_matches_the_modules_variables(name):
    build, image_shape = MODELS[name]
    model = build()
    layers = model.layers(image_shape)
    shapes = _variable_shapes(model, image_shape)
    with_kernels = [layer for layer in layers if layer.kind in ("conv", "linear")]
    # every kernel described, with its shape, and nothing else has one
    assert {layer.name: layer.kernel_shape for layer in with_kernels} == {
        path[: -len("/kernel")]: s for path, s in shapes["weights"].items() if path.endswith("/kernel")}
    for layer in with_kernels:
        assert shapes["masks"][f"{layer.name}/kernel"] == layer.kernel_shape
        assert (f"{layer.name}/bias" in shapes["weights"]) == layer.bias
        if layer.kind == "conv":  # ConvBN: the BN's running statistics sit at the conv's path
            assert shapes["batch_stats"][f"{layer.name}/mean"] == (layer.out_shape[-1],)
    assert layers[0].kind == "input" and layers[0].out_shape == image_shape
    assert layers[-1].kind == "linear" and layers[-1].out_shape == (model.num_classes,)
    assert [layer.name for layer in layers if layer.encoding] == [model.encoding_layer]
    assert layers[-1].name == model.classifier_layer


@pytest.mark.parametrize("name", sorted(MODELS))
def test_description_matches_the_forward_pass(name):
    build, image_shape = MODELS[name]
    model = build()
    layers = model.layers(image_shape)
    connections, neurons, logits_shape = _observed_shapes(model, image_shape)
    # the conv / linear layers in the order they run, each on the shapes described
    assert connections == [(layer.name, layer.in_shape, layer.out_shape) for layer in layers
                           if layer.kind in ("conv", "linear")]
    # each LIF layer, in order, over the neurons described; its firing statistics sit at its first input
    assert neurons == [(layer.inputs[0], layer.out_shape, layer.out_shape) for layer in layers if layer.kind == "lif"]
    assert logits_shape == (model.timesteps, 2, model.num_classes)
    # every layer reads layers described before it, with the shape it says
    out_shape = {}
    for layer in layers:
        assert all(out_shape[i] == layer.in_shape for i in layer.inputs), layer
        out_shape[layer.name] = layer.out_shape


def test_resnet_blocks_join_their_shortcut_before_the_lif():
    model, image_shape = MODELS["resnet_narrow"][0](), MODELS["resnet_narrow"][1]
    layers = {layer.name: layer for layer in model.layers(image_shape)}
    assert layers["stage0_block0/lif"].inputs == ("stage0_block0/conv2", "stage0_block0/shortcut")  # stride 2
    assert layers["stage0_block1/lif"].inputs == ("stage0_block1/conv2", "stage0_block0/lif")  # identity
    assert layers["stage0_block0/shortcut"].kernel_size == 1
    assert layers["avgpool"].in_shape == (2, 2, 128) and layers["avgpool"].out_shape == (1, 1, 128)
    assert layers["fc1_lif"].out_shape == (64,)  # width 0.25 of 256


def test_nir_export_and_dense_twin_follow_the_description():
    model, image_shape = get_model("digits_cnn", 10, timesteps=2, plan=(4, "M", 6)), (6, 6, 1)
    layers = model.layers(image_shape)
    v = init_variables(model, jax.random.key(0), (1,) + image_shape)
    graph = to_nir(model, v, image_shape)
    assert list(graph.nodes) == ["input", "conv0", "conv0_lif", "pool0", "pool0_or", "conv1", "conv1_lif",
                                 "flatten", "fc", "output"]
    assert graph.metadata["lif_layers"] == "conv0_lif,conv1_lif"
    assert tuple(graph.nodes["conv1_lif"].v_threshold.shape) == (6, 3, 3)  # NIR's (C, H, W) of the description
    twin = DenseTwin(tuple(layers), 10, 2)
    tv = jax.eval_shape(lambda key: twin.init(key, jnp.zeros((1,) + image_shape)), jax.random.key(0))
    kernels = {k[0]: tuple(x.shape) for k, x in traverse_util.flatten_dict(tv["weights"]).items() if k[-1] == "kernel"}
    assert kernels == {layer.name: layer.kernel_shape for layer in layers if layer.kind in ("conv", "linear")}


def test_dense_twin_runs_a_resnet_description():
    """The ReLU twin of a Res-SNN (strided and identity joins, global average pool) from its description."""
    build, image_shape = MODELS["resnet_narrow"]
    model = build()
    twin = DenseTwin(tuple(model.layers(image_shape)), model.num_classes, model.timesteps)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(3,) + image_shape), jnp.float32)
    tv = twin.init(jax.random.key(0), images)
    logits = twin.apply(tv, images)
    assert logits.shape == (model.timesteps, 3, model.num_classes)
    assert np.all(np.isfinite(np.asarray(logits)))
    mv = _variable_shapes(model, image_shape)["weights"]
    assert {"/".join(k): tuple(x.shape) for k, x in traverse_util.flatten_dict(tv["weights"]).items()} == {
        path.replace("/", "_", path.count("/") - 1): s for path, s in mv.items()}


def test_describer_refuses_what_it_cannot_describe():
    d = Describer((4, 4, 2))
    a = d.conv("a", "input", 3)
    b = d.conv("b", "input", 3, stride=2)
    with pytest.raises(ValueError, match="different shapes"):
        d.lif("join", a, b)
    with pytest.raises(ValueError, match="duplicate"):
        d.conv("a", "input", 3)
    with pytest.raises(ValueError, match="unknown kind"):
        Layer("x", "dropout", (), (1,), (1,))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        Describer((4, 4))
    with pytest.raises(ValueError, match="does not describe"):
        describe(object(), (4, 4, 2))
    assert np.prod(d.shape(b)) == 2 * 2 * 3
