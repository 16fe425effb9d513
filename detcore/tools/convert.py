"""``detcore convert voc|cityscapes|via SRC OUT_JSON ...``: write COCO json from other formats.

Examples::

    detcore convert voc data/VOCdevkit data/voc/trainval.json --split trainval --year 2007 2012
    detcore convert cityscapes data/cityscapes data/cityscapes/instances_train.json --split train
    detcore convert via data/balloon/train/via_region_data.json data/balloon/train.json --class-name balloon
"""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    formats = p.add_subparsers(dest="format", metavar="FORMAT")
    formats.required = True

    voc = formats.add_parser("voc", help="Pascal VOC (VOCdevkit folder)",
                             description="Pascal VOC XML annotations to COCO json (20 classes, ids 1..20; "
                                         "difficult objects get difficult: 1 and iscrowd: 1)")
    voc.add_argument("src", metavar="SRC", help="the VOCdevkit folder (holding VOC2007/ and/or VOC2012/)")
    voc.add_argument("out", metavar="OUT_JSON", help="output COCO json path")
    voc.add_argument("--split", default="trainval", help="ImageSets/Main list to convert (default trainval)")
    voc.add_argument("--year", nargs="+", choices=["2007", "2012"], default=None,
                     help="years to include (default: every year present that has the split)")

    city = formats.add_parser("cityscapes", help="Cityscapes fine instance annotations",
                              description="Cityscapes gtFine instanceIds pngs to COCO json with RLE masks "
                                          "(8 instance classes; file_name relative to leftImg8bit/)")
    city.add_argument("src", metavar="SRC", help="the dataset root (holding gtFine/ and leftImg8bit/)")
    city.add_argument("out", metavar="OUT_JSON", help="output COCO json path")
    city.add_argument("--split", default="train", choices=["train", "val", "test"], help="split (default train)")

    via = formats.add_parser("via", help="VGG Image Annotator json (e.g. the balloon dataset)",
                             description="VIA 1/2 json to COCO json with polygon masks")
    via.add_argument("src", metavar="SRC", help="the VIA json (exported annotations or a VIA 2 project)")
    via.add_argument("out", metavar="OUT_JSON", help="output COCO json path")
    classes = via.add_mutually_exclusive_group(required=True)
    classes.add_argument("--class-name", metavar="NAME", help="one category for every region, e.g. balloon")
    classes.add_argument("--class-attribute", metavar="ATTR",
                         help="region attribute holding each region's class name (categories sorted by name)")
    via.add_argument("--img-dir", default=None, help="folder of the images, for their sizes (default: the json's)")

    for fmt in (voc, city, via):
        fmt.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from detcore.data.converters import convert_cityscapes, convert_via, convert_voc

    progress = not args.no_progress
    with logging_redirect_tqdm():  # warnings print above the progress bar instead of through it
        if args.format == "voc":
            summary = convert_voc(args.src, args.out, split=args.split, years=args.year, progress=progress)
        elif args.format == "cityscapes":
            summary = convert_cityscapes(args.src, args.out, split=args.split, progress=progress)
        else:
            summary = convert_via(args.src, args.out, class_name=args.class_name,
                                  class_attribute=args.class_attribute, img_dir=args.img_dir, progress=progress)
    print(json.dumps({"output": str(args.out), **summary}))
    return 0
