"""CENet (models/cenet.py): parameter counts, the reference's state-dict keys, and logits equal to a plain
functional transcription of huixiancheng/CENet's `ResNet_34.forward` (before its softmax) with the same weights."""
import pytest
import torch
import torch.nn.functional as F

import models
from lidarseg.errors import ConfigError, DataError
from models.cenet import CENet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: state_dict().keys() of the reference's ResNet_34(nclasses=20, aux=True), in order (CENet commit HEAD of
#: huixiancheng/CENet, modules/network/ResNet.py); without aux the last six (aux_head1..3 weight/bias) are absent.
REFERENCE_KEYS = """
conv1.conv.weight conv1.bn.weight conv1.bn.bias conv1.bn.running_mean conv1.bn.running_var
conv1.bn.num_batches_tracked conv2.conv.weight conv2.bn.weight conv2.bn.bias conv2.bn.running_mean
conv2.bn.running_var conv2.bn.num_batches_tracked conv3.conv.weight conv3.bn.weight conv3.bn.bias
conv3.bn.running_mean conv3.bn.running_var conv3.bn.num_batches_tracked layer1.0.conv1.weight layer1.0.bn1.weight
layer1.0.bn1.bias layer1.0.bn1.running_mean layer1.0.bn1.running_var layer1.0.bn1.num_batches_tracked
layer1.0.conv2.weight layer1.0.bn2.weight layer1.0.bn2.bias layer1.0.bn2.running_mean layer1.0.bn2.running_var
layer1.0.bn2.num_batches_tracked layer1.1.conv1.weight layer1.1.bn1.weight layer1.1.bn1.bias
layer1.1.bn1.running_mean layer1.1.bn1.running_var layer1.1.bn1.num_batches_tracked layer1.1.conv2.weight
layer1.1.bn2.weight layer1.1.bn2.bias layer1.1.bn2.running_mean layer1.1.bn2.running_var
layer1.1.bn2.num_batches_tracked layer1.2.conv1.weight layer1.2.bn1.weight layer1.2.bn1.bias
layer1.2.bn1.running_mean layer1.2.bn1.running_var layer1.2.bn1.num_batches_tracked layer1.2.conv2.weight
layer1.2.bn2.weight layer1.2.bn2.bias layer1.2.bn2.running_mean layer1.2.bn2.running_var
layer1.2.bn2.num_batches_tracked layer2.0.conv1.weight layer2.0.bn1.weight layer2.0.bn1.bias
layer2.0.bn1.running_mean layer2.0.bn1.running_var layer2.0.bn1.num_batches_tracked layer2.0.conv2.weight
layer2.0.bn2.weight layer2.0.bn2.bias layer2.0.bn2.running_mean layer2.0.bn2.running_var
layer2.0.bn2.num_batches_tracked layer2.0.downsample.0.weight layer2.0.downsample.1.weight
layer2.0.downsample.1.bias layer2.0.downsample.1.running_mean layer2.0.downsample.1.running_var
layer2.0.downsample.1.num_batches_tracked layer2.1.conv1.weight layer2.1.bn1.weight layer2.1.bn1.bias
layer2.1.bn1.running_mean layer2.1.bn1.running_var layer2.1.bn1.num_batches_tracked layer2.1.conv2.weight
layer2.1.bn2.weight layer2.1.bn2.bias layer2.1.bn2.running_mean layer2.1.bn2.running_var
layer2.1.bn2.num_batches_tracked layer2.2.conv1.weight layer2.2.bn1.weight layer2.2.bn1.bias
layer2.2.bn1.running_mean layer2.2.bn1.running_var layer2.2.bn1.num_batches_tracked layer2.2.conv2.weight
layer2.2.bn2.weight layer2.2.bn2.bias layer2.2.bn2.running_mean layer2.2.bn2.running_var
layer2.2.bn2.num_batches_tracked layer2.3.conv1.weight layer2.3.bn1.weight layer2.3.bn1.bias
layer2.3.bn1.running_mean layer2.3.bn1.running_var layer2.3.bn1.num_batches_tracked layer2.3.conv2.weight
layer2.3.bn2.weight layer2.3.bn2.bias layer2.3.bn2.running_mean layer2.3.bn2.running_var
layer2.3.bn2.num_batches_tracked layer3.0.conv1.weight layer3.0.bn1.weight layer3.0.bn1.bias
layer3.0.bn1.running_mean layer3.0.bn1.running_var layer3.0.bn1.num_batches_tracked layer3.0.conv2.weight
layer3.0.bn2.weight layer3.0.bn2.bias layer3.0.bn2.running_mean layer3.0.bn2.running_var
layer3.0.bn2.num_batches_tracked layer3.0.downsample.0.weight layer3.0.downsample.1.weight
layer3.0.downsample.1.bias layer3.0.downsample.1.running_mean layer3.0.downsample.1.running_var
layer3.0.downsample.1.num_batches_tracked layer3.1.conv1.weight layer3.1.bn1.weight layer3.1.bn1.bias
layer3.1.bn1.running_mean layer3.1.bn1.running_var layer3.1.bn1.num_batches_tracked layer3.1.conv2.weight
layer3.1.bn2.weight layer3.1.bn2.bias layer3.1.bn2.running_mean layer3.1.bn2.running_var
layer3.1.bn2.num_batches_tracked layer3.2.conv1.weight layer3.2.bn1.weight layer3.2.bn1.bias
layer3.2.bn1.running_mean layer3.2.bn1.running_var layer3.2.bn1.num_batches_tracked layer3.2.conv2.weight
layer3.2.bn2.weight layer3.2.bn2.bias layer3.2.bn2.running_mean layer3.2.bn2.running_var
layer3.2.bn2.num_batches_tracked layer3.3.conv1.weight layer3.3.bn1.weight layer3.3.bn1.bias
layer3.3.bn1.running_mean layer3.3.bn1.running_var layer3.3.bn1.num_batches_tracked layer3.3.conv2.weight
layer3.3.bn2.weight layer3.3.bn2.bias layer3.3.bn2.running_mean layer3.3.bn2.running_var
layer3.3.bn2.num_batches_tracked layer3.4.conv1.weight layer3.4.bn1.weight layer3.4.bn1.bias
layer3.4.bn1.running_mean layer3.4.bn1.running_var layer3.4.bn1.num_batches_tracked layer3.4.conv2.weight
layer3.4.bn2.weight layer3.4.bn2.bias layer3.4.bn2.running_mean layer3.4.bn2.running_var
layer3.4.bn2.num_batches_tracked layer3.5.conv1.weight layer3.5.bn1.weight layer3.5.bn1.bias
layer3.5.bn1.running_mean layer3.5.bn1.running_var layer3.5.bn1.num_batches_tracked layer3.5.conv2.weight
layer3.5.bn2.weight layer3.5.bn2.bias layer3.5.bn2.running_mean layer3.5.bn2.running_var
layer3.5.bn2.num_batches_tracked layer4.0.conv1.weight layer4.0.bn1.weight layer4.0.bn1.bias
layer4.0.bn1.running_mean layer4.0.bn1.running_var layer4.0.bn1.num_batches_tracked layer4.0.conv2.weight
layer4.0.bn2.weight layer4.0.bn2.bias layer4.0.bn2.running_mean layer4.0.bn2.running_var
layer4.0.bn2.num_batches_tracked layer4.0.downsample.0.weight layer4.0.downsample.1.weight
layer4.0.downsample.1.bias layer4.0.downsample.1.running_mean layer4.0.downsample.1.running_var
layer4.0.downsample.1.num_batches_tracked layer4.1.conv1.weight layer4.1.bn1.weight layer4.1.bn1.bias
layer4.1.bn1.running_mean layer4.1.bn1.running_var layer4.1.bn1.num_batches_tracked layer4.1.conv2.weight
layer4.1.bn2.weight layer4.1.bn2.bias layer4.1.bn2.running_mean layer4.1.bn2.running_var
layer4.1.bn2.num_batches_tracked layer4.2.conv1.weight layer4.2.bn1.weight layer4.2.bn1.bias
layer4.2.bn1.running_mean layer4.2.bn1.running_var layer4.2.bn1.num_batches_tracked layer4.2.conv2.weight
layer4.2.bn2.weight layer4.2.bn2.bias layer4.2.bn2.running_mean layer4.2.bn2.running_var
layer4.2.bn2.num_batches_tracked conv_1.conv.weight conv_1.bn.weight conv_1.bn.bias conv_1.bn.running_mean
conv_1.bn.running_var conv_1.bn.num_batches_tracked conv_2.conv.weight conv_2.bn.weight conv_2.bn.bias
conv_2.bn.running_mean conv_2.bn.running_var conv_2.bn.num_batches_tracked semantic_output.weight
semantic_output.bias aux_head1.weight aux_head1.bias aux_head2.weight aux_head2.bias aux_head3.weight aux_head3.bias
""".split()

ACTS = {"hardswish": F.hardswish, "leakyrelu": F.leaky_relu, "silu": F.silu}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------- transcription
def _bn(x, sd, name, training):
    return F.batch_norm(x, sd[f"{name}.running_mean"].clone(), sd[f"{name}.running_var"].clone(),
                        sd[f"{name}.weight"], sd[f"{name}.bias"], training=training, momentum=0.1, eps=1e-5)


def reference_forward(sd, x, act, training=False, aux=True):
    """ResNet_34.forward of the reference without its final softmaxes, written with torch.nn.functional on the
    state dict `sd`. act: the activation the reference's trainer swaps in for every LeakyReLU."""
    a = ACTS[act]

    def basic_conv(x, name):                        # BasicConv2d: conv3x3 (pad 1, no bias) -> BN -> act
        return a(_bn(F.conv2d(x, sd[f"{name}.conv.weight"], padding=1), sd, f"{name}.bn", training))

    def layer(x, name):                             # _make_layer: BasicBlocks, the first one may stride 2
        i = 0
        while f"{name}.{i}.conv1.weight" in sd:
            p = f"{name}.{i}"
            stride = 2 if f"{p}.downsample.0.weight" in sd else 1
            out = a(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), sd, f"{p}.bn1", training))
            out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2", training)
            identity = x
            if stride != 1:
                identity = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd,
                               f"{p}.downsample.1", training)
            x = a(out + identity)
            i += 1
        return x

    x = basic_conv(basic_conv(basic_conv(x, "conv1"), "conv2"), "conv3")
    x_1 = layer(x, "layer1")
    x_2 = layer(x_1, "layer2")
    x_3 = layer(x_2, "layer3")
    x_4 = layer(x_3, "layer4")
    res_2 = F.interpolate(x_2, size=x.size()[2:], mode="bilinear", align_corners=True)
    res_3 = F.interpolate(x_3, size=x.size()[2:], mode="bilinear", align_corners=True)
    res_4 = F.interpolate(x_4, size=x.size()[2:], mode="bilinear", align_corners=True)
    out = torch.cat([x, x_1, res_2, res_3, res_4], dim=1)
    out = basic_conv(basic_conv(out, "conv_1"), "conv_2")
    out = F.conv2d(out, sd["semantic_output.weight"], sd["semantic_output.bias"])
    if not aux:
        return out
    heads = [F.conv2d(r, sd[f"aux_head{i}.weight"], sd[f"aux_head{i}.bias"]) for i, r in
             zip((1, 2, 3), (res_2, res_3, res_4))]
    return [out, *heads]


# ---------------------------------------------------------------------------------------------- tests
def test_parameter_counts_match_cenet():
    with torch.device("meta"):
        assert n_params(models.build_model("cenet", 20, 5)) == 6_781_968
        assert n_params(models.build_model("cenet", 20, 5, aux_heads=False)) == 6_774_228


def test_state_dict_keys_are_the_references():
    with torch.device("meta"):
        m = models.build_model("cenet", 20, 5)
        m_noaux = models.build_model("cenet", 20, 5, aux_heads=False)
    assert len(REFERENCE_KEYS) == 248
    assert list(m.state_dict()) == REFERENCE_KEYS
    assert list(m_noaux.state_dict()) == [k for k in REFERENCE_KEYS if not k.startswith("aux_head")]
    sd = m.state_dict()
    assert sd["conv1.conv.weight"].shape == (64, 5, 3, 3) and sd["conv_1.conv.weight"].shape == (256, 640, 3, 3)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 128, 1, 1) and "layer1.0.downsample.0.weight" not in sd
    assert sd["aux_head3.weight"].shape == (20, 128, 1, 1)


def test_released_checkpoint_layout_loads_strictly(tmp_path, randomize_weights):
    """A DataParallel checkpoint as CENet's trainer saves it ({'state_dict': {'module.' + key: ...}, ...})."""
    src = randomize_weights(CENet(20, 5, width=0.125, layers=[1, 1, 1, 1]))
    state = {"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}, "info": {}}
    torch.save(state, tmp_path / "SENet_valid_best")
    dst = CENet(20, 5, width=0.125, layers=[1, 1, 1, 1])
    models.load_state_dict_strict(dst, torch.load(tmp_path / "SENet_valid_best", weights_only=True))
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    with pytest.raises(DataError, match="missing keys .*aux_head1.weight"):
        models.load_state_dict_strict(dst, {k: v for k, v in src.state_dict().items() if "aux" not in k})


@pytest.mark.parametrize("act", ["hardswish", "leakyrelu", "silu"])
def test_logits_equal_reference_transcription_small(act, randomize_weights):
    m = randomize_weights(CENet(20, 5, act=act, width=0.25, layers=[2, 1, 2, 1]), seed=1)
    sd = m.state_dict()
    x = torch.randn(2, 5, 16, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        m.eval()
        torch.testing.assert_close(m(x), reference_forward(sd, x, act)[0], rtol=1e-4, atol=1e-4)
        m.train()                                    # batch statistics; all four heads, as the reference
        ours, ref = m(x), reference_forward(sd, x, act, training=True)
    assert len(ours) == 4
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_logits_equal_reference_transcription_full_size(randomize_weights):
    m = randomize_weights(models.build_model("cenet", 20, 5), seed=3).eval()
    x = torch.randn(1, 5, 16, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = m(x)
        ref = reference_forward(m.state_dict(), x, "hardswish")[0]
    assert ours.shape == (1, 20, 16, 32)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    m_noaux = models.build_model("cenet", 20, 5, aux_heads=False).train()
    assert isinstance(m_noaux(x), torch.Tensor)   # no auxiliary heads: one map in training mode too


def test_activation_choice_replaces_every_activation():
    for act, cls in [("hardswish", torch.nn.Hardswish), ("leakyrelu", torch.nn.LeakyReLU), ("silu", torch.nn.SiLU)]:
        m = CENet(20, 5, act=act, width=0.125, layers=[1, 1, 1, 1])
        acts = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Hardswish, torch.nn.LeakyReLU,
                                                                 torch.nn.SiLU))]
        assert acts and all(type(mod) is cls for mod in acts)
    assert all(mod.negative_slope == 0.01 for mod in CENet(act="leakyrelu", width=0.125).modules()
               if isinstance(mod, torch.nn.LeakyReLU))


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="act='relu'"):
        models.build_model("cenet", act="relu")
    with pytest.raises(ConfigError, match="layers"):
        models.build_model("cenet", layers=[1, 1])
    with pytest.raises(ConfigError, match="width"):
        models.build_model("cenet", width=0)
    with pytest.raises(ConfigError, match="unknown option"):
        models.build_model("cenet", dropout=0.1)
