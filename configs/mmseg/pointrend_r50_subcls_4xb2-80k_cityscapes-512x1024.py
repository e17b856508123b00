# PointRend R-50, Cityscapes 512x1024, 80k iterations: mmseg 1.2.2's own recipe with the subclassified loss.
# decode_head is a list [FPNHead, PointHead] and mmengine replaces lists whole, so both heads are taken from the base
# and only their loss_decode is replaced.
# - FPNHead (coarse [B,19,H,W] logits): the subclassified loss, strides 8 / 4 as published.
# - PointHead ([B,19,P] logits on P=2048 points sampled around uncertain pixels): the points have no grid, so
#   the query/reference strides would average unrelated points. point_logits='ce' gives plain cross-entropy there,
#   as the published code does for non-4-D input; point_logits='subclassified' would compare every point with every
#   same-label point of its image instead (strides 1).
_base_ = 'mmseg::point_rend/pointrend_r50_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['lidarseg.integrations.mmseg'], allow_failed_imports=False)
model = dict(decode_head=[
    dict(_base_.model.decode_head[0], loss_decode=dict(type='SubclassifiedCrossEntropyLoss', loss_weight=1.0)),
    dict(_base_.model.decode_head[1],
         loss_decode=dict(type='SubclassifiedCrossEntropyLoss', loss_weight=1.0, point_logits='ce')),
])
