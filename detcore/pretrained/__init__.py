"""Pretrained weights by name: torchvision's ImageNet backbones and COCO detectors.

:mod:`detcore.pretrained.names` parses the names and knows their files without torch;
:mod:`detcore.pretrained.hub` fetches and reads them through torch hub's cache;
:mod:`detcore.pretrained.catalog` lists them (``detcore model list``).
"""
