"""The minimal serving app a user would write by hand: FastAPI + uvicorn, eager torch, no batching.

benchmarks/serve_latency.py runs this same file every time as the hand-written baseline:

    CXML_BENCH_MODEL=model.pt uvicorn minimal_fastapi:app --app-dir benchmarks --workers 2

POST /predict takes image files as multipart (`images`) and answers their class probabilities;
GET /health answers once the model is loaded. One torch thread per worker (beats more on 2 cores).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, UploadFile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from cxml.ml import models

torch.set_num_threads(1)
network, metadata = models.load_model_file(Path(os.environ["CXML_BENCH_MODEL"]))
network.eval()
channels, height, width = metadata.input_size
mean = torch.tensor(metadata.mean).view(1, -1, 1, 1)
std = torch.tensor(metadata.std).view(1, -1, 1, 1)
app = FastAPI()


def to_tensor(data: bytes) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height))
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(images: list[UploadFile] = File(...)) -> dict[str, list[list[float]]]:  # noqa: B008
    batch = torch.stack([to_tensor(upload.file.read()) for upload in images])
    with torch.inference_mode():
        logits = network((batch.float() / 255 - mean) / std)
        probabilities: list[list[float]] = torch.softmax(logits, dim=1).tolist()
    return {"probabilities": probabilities}
