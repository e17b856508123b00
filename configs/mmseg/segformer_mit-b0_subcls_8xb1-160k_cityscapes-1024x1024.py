# SegFormer MiT-B0, Cityscapes 1024x1024, 160k iterations: mmseg 1.2.2's own recipe (ImageNet-pretrained MiT-B0
# backbone from its model zoo) with the subclassified loss in the decode head.
_base_ = 'mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py'
custom_imports = dict(imports=['lidarseg.integrations.mmseg'], allow_failed_imports=False)
model = dict(decode_head=dict(loss_decode=dict(type='SubclassifiedCrossEntropyLoss', loss_weight=1.0)))
