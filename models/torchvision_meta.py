"""Metadata of the torchvision models vigil registers (:mod:`models.weights`), copied from
torchvision 0.24.1's weight enums, so that reading the registry (the CLI and the supervisor
do) never imports torch: that import alone costs a process about 600 MB.

``tests/unit/models/test_weights.py`` checks every value against torchvision's enums, so an
upgrade that moves a URL or a category list fails there. The enums are metadata only; nothing
here downloads.
"""

from __future__ import annotations

# fmt: off
COCO_CATEGORIES: tuple[str, ...] = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
# fmt: on

# fmt: off
VOC_CATEGORIES: tuple[str, ...] = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
# fmt: on

# fmt: off
KEYPOINT_CATEGORIES: tuple[str, ...] = (
    "no person", "person",
)
# fmt: on

#: name -> url, builder (module:function), weights enum member, training recipe, categories

TORCHVISION_MODELS: dict[str, dict[str, object]] = {
    "fasterrcnn_mobilenet_v3_large_fpn": {
        "url": "https://download.pytorch.org/models/fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
        "builder": "torchvision.models.detection.faster_rcnn:fasterrcnn_mobilenet_v3_large_fpn",
        "weights": "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
        "recipe": "https://github.com/pytorch/vision/tree/main/references/detection#faster-r-cnn-mobilenetv3-large-fpn",
        "categories": COCO_CATEGORIES,
    },
    "fasterrcnn_mobilenet_v3_large_320_fpn": {
        "url": "https://download.pytorch.org/models/fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth",
        "builder": "torchvision.models.detection.faster_rcnn:fasterrcnn_mobilenet_v3_large_320_fpn",
        "weights": "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
        "recipe": "https://github.com/pytorch/vision/tree/main/references/detection#faster-r-cnn-mobilenetv3-large-320-fpn",
        "categories": COCO_CATEGORIES,
    },
    "fasterrcnn_resnet50_fpn_v2": {
        "url": "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
        "builder": "torchvision.models.detection.faster_rcnn:fasterrcnn_resnet50_fpn_v2",
        "weights": "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
        "recipe": "https://github.com/pytorch/vision/pull/5763",
        "categories": COCO_CATEGORIES,
    },
    "retinanet_resnet50_fpn_v2": {
        "url": "https://download.pytorch.org/models/retinanet_resnet50_fpn_v2_coco-5905b1c5.pth",
        "builder": "torchvision.models.detection.retinanet:retinanet_resnet50_fpn_v2",
        "weights": "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
        "recipe": "https://github.com/pytorch/vision/pull/5756",
        "categories": COCO_CATEGORIES,
    },
    "ssdlite320_mobilenet_v3_large": {
        "url": "https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
        "builder": "torchvision.models.detection.ssdlite:ssdlite320_mobilenet_v3_large",
        "weights": "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
        "recipe": "https://github.com/pytorch/vision/tree/main/references/detection#ssdlite320-mobilenetv3-large",
        "categories": COCO_CATEGORIES,
    },
    "keypointrcnn_resnet50_fpn": {
        "url": "https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        "builder": "torchvision.models.detection.keypoint_rcnn:keypointrcnn_resnet50_fpn",
        "weights": "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
        "recipe": "https://github.com/pytorch/vision/tree/main/references/detection#keypoint-r-cnn",
        "categories": KEYPOINT_CATEGORIES,
    },
    "maskrcnn_resnet50_fpn_v2": {
        "url": "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        "builder": "torchvision.models.detection.mask_rcnn:maskrcnn_resnet50_fpn_v2",
        "weights": "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
        "recipe": "https://github.com/pytorch/vision/pull/5773",
        "categories": COCO_CATEGORIES,
    },
    "deeplabv3_mobilenet_v3_large": {
        "url": "https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth",
        "builder": "torchvision.models.segmentation.deeplabv3:deeplabv3_mobilenet_v3_large",
        "weights": "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
        "recipe": "https://github.com/pytorch/vision/tree/main/references/segmentation#deeplabv3_mobilenet_v3_large",
        "categories": VOC_CATEGORIES,
    },
    "lraspp_mobilenet_v3_large": {
        "url": "https://download.pytorch.org/models/lraspp_mobilenet_v3_large-d234d4ea.pth",
        "builder": "torchvision.models.segmentation.lraspp:lraspp_mobilenet_v3_large",
        "weights": "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
        "recipe": "https://github.com/pytorch/vision/tree/main/references/segmentation#lraspp_mobilenet_v3_large",
        "categories": VOC_CATEGORIES,
    },
    "fcn_resnet50": {
        "url": "https://download.pytorch.org/models/fcn_resnet50_coco-1167a1af.pth",
        "builder": "torchvision.models.segmentation.fcn:fcn_resnet50",
        "weights": "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
        "recipe": "https://github.com/pytorch/vision/tree/main/references/segmentation#fcn_resnet50",
        "categories": VOC_CATEGORIES,
    },
}
