# A child changing what it inherits the ways MMEngine's pure-Python configs do: merge, update,
# and assignments into keys and list items.
from mmengine.config import read_base
from mmengine.optim import AmpOptimWrapper
from torch.optim import AdamW

with read_base():
    from .faster_rcnn_r50_fpn_1x_coco import *

model.merge(dict(backbone=dict(depth=101, init_cfg=dict(type=PretrainedInit))))
model.backbone.init_cfg.checkpoint = 'torchvision://resnet101'
optim_wrapper.merge(
    dict(
        type=AmpOptimWrapper,
        optimizer=dict(_delete_=True, type=AdamW, lr=0.0001, weight_decay=0.05)))
train_dataloader.update(batch_size=4)
param_scheduler[1].milestones = [9, 11]
default_hooks['checkpoint'].update(dict(max_keep_ckpts=2, save_best='auto'))
