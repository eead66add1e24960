import json
import os

import numpy as np
import onnxruntime

session = onnxruntime.InferenceSession("mnist.onnx")
meta = session.get_modelmeta().custom_metadata_map
scale = json.loads(meta["dlcourse.preprocess"])  # {"kind": "image", "mean": ..., "std": ...}
classes = json.loads(meta["dlcourse.class_names"])

# the first five test digits, from MNIST's own file (16 bytes of header, then 28x28 bytes each)
path = os.path.expandvars("$DLCOURSE_DATA_DIR/MNIST/raw/t10k-images-idx3-ubyte")
pixels = np.fromfile(path, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:5]
x = ((pixels / 255 - scale["mean"]) / scale["std"]).astype(np.float32)

(logits,) = session.run(None, {"input": x})
p = np.exp(logits - logits.max(axis=1, keepdims=True))
p /= p.sum(axis=1, keepdims=True)
for i, row in enumerate(p):
    print(f"test {i}: {classes[row.argmax()]} ({row.max():.2%})")
