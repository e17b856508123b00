"""SalsaNext (models/salsanext.py): parameter count, the reference's state-dict keys, logits equal to a plain
functional transcription of TiagoCortinhal/SalsaNext's `SalsaNext.forward` (before its softmax) with the same
weights, dropout as published."""
import pytest
import torch
import torch.nn.functional as F

import models
from lidarseg.errors import ConfigError
from models.salsanext import SalsaNext

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: state_dict().keys() of the reference's SalsaNext(nclasses=20), in order
#: (train/tasks/semantic/modules/SalsaNext.py of TiagoCortinhal/SalsaNext).
REFERENCE_KEYS = """
downCntx.conv1.weight downCntx.conv1.bias downCntx.conv2.weight downCntx.conv2.bias downCntx.bn1.weight
downCntx.bn1.bias downCntx.bn1.running_mean downCntx.bn1.running_var downCntx.bn1.num_batches_tracked
downCntx.conv3.weight downCntx.conv3.bias downCntx.bn2.weight downCntx.bn2.bias downCntx.bn2.running_mean
downCntx.bn2.running_var downCntx.bn2.num_batches_tracked downCntx2.conv1.weight downCntx2.conv1.bias
downCntx2.conv2.weight downCntx2.conv2.bias downCntx2.bn1.weight downCntx2.bn1.bias downCntx2.bn1.running_mean
downCntx2.bn1.running_var downCntx2.bn1.num_batches_tracked downCntx2.conv3.weight downCntx2.conv3.bias
downCntx2.bn2.weight downCntx2.bn2.bias downCntx2.bn2.running_mean downCntx2.bn2.running_var
downCntx2.bn2.num_batches_tracked downCntx3.conv1.weight downCntx3.conv1.bias downCntx3.conv2.weight
downCntx3.conv2.bias downCntx3.bn1.weight downCntx3.bn1.bias downCntx3.bn1.running_mean downCntx3.bn1.running_var
downCntx3.bn1.num_batches_tracked downCntx3.conv3.weight downCntx3.conv3.bias downCntx3.bn2.weight
downCntx3.bn2.bias downCntx3.bn2.running_mean downCntx3.bn2.running_var downCntx3.bn2.num_batches_tracked
resBlock1.conv1.weight resBlock1.conv1.bias resBlock1.conv2.weight resBlock1.conv2.bias resBlock1.bn1.weight
resBlock1.bn1.bias resBlock1.bn1.running_mean resBlock1.bn1.running_var resBlock1.bn1.num_batches_tracked
resBlock1.conv3.weight resBlock1.conv3.bias resBlock1.bn2.weight resBlock1.bn2.bias resBlock1.bn2.running_mean
resBlock1.bn2.running_var resBlock1.bn2.num_batches_tracked resBlock1.conv4.weight resBlock1.conv4.bias
resBlock1.bn3.weight resBlock1.bn3.bias resBlock1.bn3.running_mean resBlock1.bn3.running_var
resBlock1.bn3.num_batches_tracked resBlock1.conv5.weight resBlock1.conv5.bias resBlock1.bn4.weight
resBlock1.bn4.bias resBlock1.bn4.running_mean resBlock1.bn4.running_var resBlock1.bn4.num_batches_tracked
resBlock2.conv1.weight resBlock2.conv1.bias resBlock2.conv2.weight resBlock2.conv2.bias resBlock2.bn1.weight
resBlock2.bn1.bias resBlock2.bn1.running_mean resBlock2.bn1.running_var resBlock2.bn1.num_batches_tracked
resBlock2.conv3.weight resBlock2.conv3.bias resBlock2.bn2.weight resBlock2.bn2.bias resBlock2.bn2.running_mean
resBlock2.bn2.running_var resBlock2.bn2.num_batches_tracked resBlock2.conv4.weight resBlock2.conv4.bias
resBlock2.bn3.weight resBlock2.bn3.bias resBlock2.bn3.running_mean resBlock2.bn3.running_var
resBlock2.bn3.num_batches_tracked resBlock2.conv5.weight resBlock2.conv5.bias resBlock2.bn4.weight
resBlock2.bn4.bias resBlock2.bn4.running_mean resBlock2.bn4.running_var resBlock2.bn4.num_batches_tracked
resBlock3.conv1.weight resBlock3.conv1.bias resBlock3.conv2.weight resBlock3.conv2.bias resBlock3.bn1.weight
resBlock3.bn1.bias resBlock3.bn1.running_mean resBlock3.bn1.running_var resBlock3.bn1.num_batches_tracked
resBlock3.conv3.weight resBlock3.conv3.bias resBlock3.bn2.weight resBlock3.bn2.bias resBlock3.bn2.running_mean
resBlock3.bn2.running_var resBlock3.bn2.num_batches_tracked resBlock3.conv4.weight resBlock3.conv4.bias
resBlock3.bn3.weight resBlock3.bn3.bias resBlock3.bn3.running_mean resBlock3.bn3.running_var
resBlock3.bn3.num_batches_tracked resBlock3.conv5.weight resBlock3.conv5.bias resBlock3.bn4.weight
resBlock3.bn4.bias resBlock3.bn4.running_mean resBlock3.bn4.running_var resBlock3.bn4.num_batches_tracked
resBlock4.conv1.weight resBlock4.conv1.bias resBlock4.conv2.weight resBlock4.conv2.bias resBlock4.bn1.weight
resBlock4.bn1.bias resBlock4.bn1.running_mean resBlock4.bn1.running_var resBlock4.bn1.num_batches_tracked
resBlock4.conv3.weight resBlock4.conv3.bias resBlock4.bn2.weight resBlock4.bn2.bias resBlock4.bn2.running_mean
resBlock4.bn2.running_var resBlock4.bn2.num_batches_tracked resBlock4.conv4.weight resBlock4.conv4.bias
resBlock4.bn3.weight resBlock4.bn3.bias resBlock4.bn3.running_mean resBlock4.bn3.running_var
resBlock4.bn3.num_batches_tracked resBlock4.conv5.weight resBlock4.conv5.bias resBlock4.bn4.weight
resBlock4.bn4.bias resBlock4.bn4.running_mean resBlock4.bn4.running_var resBlock4.bn4.num_batches_tracked
resBlock5.conv1.weight resBlock5.conv1.bias resBlock5.conv2.weight resBlock5.conv2.bias resBlock5.bn1.weight
resBlock5.bn1.bias resBlock5.bn1.running_mean resBlock5.bn1.running_var resBlock5.bn1.num_batches_tracked
resBlock5.conv3.weight resBlock5.conv3.bias resBlock5.bn2.weight resBlock5.bn2.bias resBlock5.bn2.running_mean
resBlock5.bn2.running_var resBlock5.bn2.num_batches_tracked resBlock5.conv4.weight resBlock5.conv4.bias
resBlock5.bn3.weight resBlock5.bn3.bias resBlock5.bn3.running_mean resBlock5.bn3.running_var
resBlock5.bn3.num_batches_tracked resBlock5.conv5.weight resBlock5.conv5.bias resBlock5.bn4.weight
resBlock5.bn4.bias resBlock5.bn4.running_mean resBlock5.bn4.running_var resBlock5.bn4.num_batches_tracked
upBlock1.conv1.weight upBlock1.conv1.bias upBlock1.bn1.weight upBlock1.bn1.bias upBlock1.bn1.running_mean
upBlock1.bn1.running_var upBlock1.bn1.num_batches_tracked upBlock1.conv2.weight upBlock1.conv2.bias
upBlock1.bn2.weight upBlock1.bn2.bias upBlock1.bn2.running_mean upBlock1.bn2.running_var
upBlock1.bn2.num_batches_tracked upBlock1.conv3.weight upBlock1.conv3.bias upBlock1.bn3.weight upBlock1.bn3.bias
upBlock1.bn3.running_mean upBlock1.bn3.running_var upBlock1.bn3.num_batches_tracked upBlock1.conv4.weight
upBlock1.conv4.bias upBlock1.bn4.weight upBlock1.bn4.bias upBlock1.bn4.running_mean upBlock1.bn4.running_var
upBlock1.bn4.num_batches_tracked upBlock2.conv1.weight upBlock2.conv1.bias upBlock2.bn1.weight upBlock2.bn1.bias
upBlock2.bn1.running_mean upBlock2.bn1.running_var upBlock2.bn1.num_batches_tracked upBlock2.conv2.weight
upBlock2.conv2.bias upBlock2.bn2.weight upBlock2.bn2.bias upBlock2.bn2.running_mean upBlock2.bn2.running_var
upBlock2.bn2.num_batches_tracked upBlock2.conv3.weight upBlock2.conv3.bias upBlock2.bn3.weight upBlock2.bn3.bias
upBlock2.bn3.running_mean upBlock2.bn3.running_var upBlock2.bn3.num_batches_tracked upBlock2.conv4.weight
upBlock2.conv4.bias upBlock2.bn4.weight upBlock2.bn4.bias upBlock2.bn4.running_mean upBlock2.bn4.running_var
upBlock2.bn4.num_batches_tracked upBlock3.conv1.weight upBlock3.conv1.bias upBlock3.bn1.weight upBlock3.bn1.bias
upBlock3.bn1.running_mean upBlock3.bn1.running_var upBlock3.bn1.num_batches_tracked upBlock3.conv2.weight
upBlock3.conv2.bias upBlock3.bn2.weight upBlock3.bn2.bias upBlock3.bn2.running_mean upBlock3.bn2.running_var
upBlock3.bn2.num_batches_tracked upBlock3.conv3.weight upBlock3.conv3.bias upBlock3.bn3.weight upBlock3.bn3.bias
upBlock3.bn3.running_mean upBlock3.bn3.running_var upBlock3.bn3.num_batches_tracked upBlock3.conv4.weight
upBlock3.conv4.bias upBlock3.bn4.weight upBlock3.bn4.bias upBlock3.bn4.running_mean upBlock3.bn4.running_var
upBlock3.bn4.num_batches_tracked upBlock4.conv1.weight upBlock4.conv1.bias upBlock4.bn1.weight upBlock4.bn1.bias
upBlock4.bn1.running_mean upBlock4.bn1.running_var upBlock4.bn1.num_batches_tracked upBlock4.conv2.weight
upBlock4.conv2.bias upBlock4.bn2.weight upBlock4.bn2.bias upBlock4.bn2.running_mean upBlock4.bn2.running_var
upBlock4.bn2.num_batches_tracked upBlock4.conv3.weight upBlock4.conv3.bias upBlock4.bn3.weight upBlock4.bn3.bias
upBlock4.bn3.running_mean upBlock4.bn3.running_var upBlock4.bn3.num_batches_tracked upBlock4.conv4.weight
upBlock4.conv4.bias upBlock4.bn4.weight upBlock4.bn4.bias upBlock4.bn4.running_mean upBlock4.bn4.running_var
upBlock4.bn4.num_batches_tracked logits.weight logits.bias
""".split()


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------- transcription
def reference_forward(sd, x, training=False):
    """SalsaNext.forward without its softmax and without dropout (eval mode, or p = 0), on the state dict `sd`."""
    act = F.leaky_relu

    def conv(x, name, **kw):
        return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw)

    def bn(x, name):
        return F.batch_norm(x, sd[f"{name}.running_mean"].clone(), sd[f"{name}.running_var"].clone(),
                            sd[f"{name}.weight"], sd[f"{name}.bias"], training=training, momentum=0.1, eps=1e-5)

    def res_context(x, p):
        shortcut = act(conv(x, f"{p}.conv1"))
        resA1 = bn(act(conv(shortcut, f"{p}.conv2", padding=1)), f"{p}.bn1")
        resA2 = bn(act(conv(resA1, f"{p}.conv3", dilation=2, padding=2)), f"{p}.bn2")
        return shortcut + resA2

    def res_block(x, p, pooling):
        shortcut = act(conv(x, f"{p}.conv1"))
        resA1 = bn(act(conv(x, f"{p}.conv2", padding=1)), f"{p}.bn1")
        resA2 = bn(act(conv(resA1, f"{p}.conv3", dilation=2, padding=2)), f"{p}.bn2")
        resA3 = bn(act(conv(resA2, f"{p}.conv4", dilation=2, padding=1)), f"{p}.bn3")
        resA = bn(act(conv(torch.cat((resA1, resA2, resA3), dim=1), f"{p}.conv5")), f"{p}.bn4")
        resA = shortcut + resA
        if pooling:
            return F.avg_pool2d(resA, kernel_size=3, stride=2, padding=1), resA
        return resA

    def up_block(x, skip, p):
        upB = torch.cat((F.pixel_shuffle(x, 2), skip), dim=1)
        upE1 = bn(act(conv(upB, f"{p}.conv1", padding=1)), f"{p}.bn1")
        upE2 = bn(act(conv(upE1, f"{p}.conv2", dilation=2, padding=2)), f"{p}.bn2")
        upE3 = bn(act(conv(upE2, f"{p}.conv3", dilation=2, padding=1)), f"{p}.bn3")
        return bn(act(conv(torch.cat((upE1, upE2, upE3), dim=1), f"{p}.conv4")), f"{p}.bn4")

    d = res_context(res_context(res_context(x, "downCntx"), "downCntx2"), "downCntx3")
    down0c, down0b = res_block(d, "resBlock1", True)
    down1c, down1b = res_block(down0c, "resBlock2", True)
    down2c, down2b = res_block(down1c, "resBlock3", True)
    down3c, down3b = res_block(down2c, "resBlock4", True)
    down5c = res_block(down3c, "resBlock5", False)
    up4e = up_block(down5c, down3b, "upBlock1")
    up3e = up_block(up4e, down2b, "upBlock2")
    up2e = up_block(up3e, down1b, "upBlock3")
    up1e = up_block(up2e, down0b, "upBlock4")
    return conv(up1e, "logits")


# ---------------------------------------------------------------------------------------------- tests
def test_parameter_count_matches_salsanext():
    with torch.device("meta"):
        assert n_params(models.build_model("salsanext", 20, 5)) == 6_711_572


def test_state_dict_keys_are_the_references():
    with torch.device("meta"):
        m = models.build_model("salsanext", 20, 5)
    assert len(REFERENCE_KEYS) == 312
    assert list(m.state_dict()) == REFERENCE_KEYS
    sd = m.state_dict()
    assert sd["resBlock1.conv4.weight"].shape == (64, 64, 2, 2)
    assert sd["upBlock1.conv1.weight"].shape == (128, 64 + 2 * 128, 3, 3)   # PixelShuffle: 256/4 + skip 256
    assert sd["logits.weight"].shape == (20, 32, 1, 1)


def test_dropout_as_published():
    m = SalsaNext()
    drops = {n: mod.p for n, mod in m.named_modules() if isinstance(mod, torch.nn.Dropout2d)}
    assert set(drops.values()) == {0.2}
    assert not m.resBlock1.drop_out and m.resBlock2.drop_out and not m.upBlock4.drop_out and m.upBlock1.drop_out
    assert isinstance(m.resBlock1.pool, torch.nn.AvgPool2d) and m.resBlock1.pool.count_include_pad


def test_logits_equal_reference_transcription_full_size(randomize_weights):
    m = randomize_weights(models.build_model("salsanext", 20, 5), seed=1, scale=0.2).eval()
    x = torch.randn(1, 5, 16, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_forward(m.state_dict(), x), rtol=1e-4, atol=1e-4)


def test_logits_equal_reference_transcription_small_training_mode(randomize_weights):
    """Batch statistics in training mode; dropout p = 0 so that both are deterministic."""
    m = randomize_weights(SalsaNext(20, 5, width=0.25, dropout=0.0), seed=3, scale=0.2).train()
    x = torch.randn(2, 5, 32, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_forward(m.state_dict(), x, training=True), rtol=1e-4, atol=1e-4)


def test_input_size_must_be_multiple_of_16():
    m = SalsaNext(20, 5, width=0.125).eval()
    with pytest.raises(ConfigError, match="input size 16x72"):
        m(torch.zeros(1, 5, 16, 72))
    with pytest.raises(ConfigError, match="dropout"):
        models.build_model("salsanext", dropout=1.5)
