# STDC1, Cityscapes 512x1024, 80k iterations: mmseg 1.2.2's own recipe with the subclassified loss in the decode
# head (paper: Qiu et al., image experiments). The decode head keeps its OHEM pixel sampler: the loss multiplies each
# pixel's term by the sampler's weight, as the published code does. The auxiliary FCN heads and the detail
# (boundary) head keep mmseg's losses. Run: python tools/train.py configs/mmseg/<this file> (mmseg's train script).
_base_ = 'mmseg::stdc/stdc1_4xb12-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['lidarseg.integrations.mmseg'], allow_failed_imports=False)
model = dict(decode_head=dict(loss_decode=dict(type='SubclassifiedCrossEntropyLoss', loss_weight=1.0)))
