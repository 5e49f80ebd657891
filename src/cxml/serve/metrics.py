"""The service's own counters (/metrics), in shared memory and Prometheus' text format."""

from __future__ import annotations

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Upper bounds of the cxml_batch_images histogram: images per forward pass."""
ENDPOINTS = ("/predict", "/healthz", "/version", "/metrics")
"""Paths counted one by one; any other path (a 404, say) is counted as endpoint "other"."""
STATUS_CODES = (200, 400, 404, 405, 413, 415, 422, 499, 500, 503)
"""Status codes counted one by one; anything else is counted as code "other". 499 (nginx's
"client closed request") counts requests whose client hung up before the answer; 503 those
refused because the work queue was full."""


class ServiceMetrics:
    """Counters and a latency histogram in shared memory, so every worker process adds to one set.

    Made before the workers fork; rendered in Prometheus' text format by whichever worker is asked.
    """

    def __init__(self) -> None:
        import multiprocessing

        self._codes = len(STATUS_CODES) + 1
        self._answers = (len(ENDPOINTS) + 1) * self._codes
        self._buckets = len(LATENCY_BUCKETS_S)
        # layout: answers per endpoint and code | histogram buckets |
        #         latency sum, latency count, images, errors |
        #         batch-size buckets, batch images sum, batch count
        self._batches_at = self._answers + self._buckets + 4
        self._values = multiprocessing.RawArray("d", self._batches_at + len(BATCH_BUCKETS) + 2)
        self._lock = multiprocessing.Lock()

    def record_response(self, path: str, status: int) -> None:
        """Count one answer, whatever produced it (a handler, Starlette itself, an exception)."""
        endpoint = ENDPOINTS.index(path) if path in ENDPOINTS else len(ENDPOINTS)
        code = STATUS_CODES.index(status) if status in STATUS_CODES else len(STATUS_CODES)
        with self._lock:
            self._values[endpoint * self._codes + code] += 1
            if status >= 400:
                self._values[self._answers + self._buckets + 3] += 1

    def record_prediction(self, seconds: float, images: int) -> None:
        """Latency and image count of a successful /predict (its status is counted separately)."""
        tail = self._answers + self._buckets
        with self._lock:
            values = self._values
            values[tail] += seconds
            values[tail + 1] += 1
            values[tail + 2] += images
            for index, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    values[self._answers + index] += 1

    def record_batch(self, images: int) -> None:
        """One forward pass of `images` images (requests batched together, or one alone)."""
        at = self._batches_at
        with self._lock:
            values = self._values
            for index, bound in enumerate(BATCH_BUCKETS):
                if images <= bound:
                    values[at + index] += 1
            values[at + len(BATCH_BUCKETS)] += images
            values[at + len(BATCH_BUCKETS) + 1] += 1

    def render(self, model_version: str, release_name: str) -> str:
        with self._lock:
            values = list(self._values)
        endpoints = [*ENDPOINTS, "other"]
        codes = [*(str(c) for c in STATUS_CODES), "other"]
        buckets = values[self._answers : self._answers + self._buckets]
        latency_sum, latency_count, images, errors = values[
            self._answers + self._buckets : self._batches_at
        ]
        batch_values = values[self._batches_at :]
        lines = [
            "# HELP cxml_requests_total Requests answered, by endpoint and status code.",
            "# TYPE cxml_requests_total counter",
        ]
        for endpoint_index, endpoint in enumerate(endpoints):
            for code_index, code in enumerate(codes):
                count = values[endpoint_index * self._codes + code_index]
                if count:
                    lines.append(
                        f'cxml_requests_total{{endpoint="{endpoint}",code="{code}"}} {int(count)}'
                    )
        lines += [
            "# HELP cxml_request_errors_total Requests answered with a 4xx or 5xx status.",
            "# TYPE cxml_request_errors_total counter",
            f"cxml_request_errors_total {int(errors)}",
            "# HELP cxml_images_total Images classified.",
            "# TYPE cxml_images_total counter",
            f"cxml_images_total {int(images)}",
            "# HELP cxml_predict_latency_seconds Time to answer a successful /predict request.",
            "# TYPE cxml_predict_latency_seconds histogram",
        ]
        for bound, count in zip(LATENCY_BUCKETS_S, buckets, strict=True):
            lines.append(f'cxml_predict_latency_seconds_bucket{{le="{bound}"}} {int(count)}')
        lines += [
            f'cxml_predict_latency_seconds_bucket{{le="+Inf"}} {int(latency_count)}',
            f"cxml_predict_latency_seconds_sum {latency_sum:.6f}",
            f"cxml_predict_latency_seconds_count {int(latency_count)}",
            "# HELP cxml_batch_images Images per forward pass (concurrent requests batched).",
            "# TYPE cxml_batch_images histogram",
        ]
        for bound, count in zip(BATCH_BUCKETS, batch_values, strict=False):
            lines.append(f'cxml_batch_images_bucket{{le="{bound}"}} {int(count)}')
        batch_sum, batch_count = batch_values[len(BATCH_BUCKETS) :]
        lines += [
            f'cxml_batch_images_bucket{{le="+Inf"}} {int(batch_count)}',
            f"cxml_batch_images_sum {int(batch_sum)}",
            f"cxml_batch_images_count {int(batch_count)}",
            "# HELP cxml_model_info The model version being served.",
            "# TYPE cxml_model_info gauge",
            f'cxml_model_info{{model_version="{_label(model_version)}",'
            f'release="{_label(release_name)}"}} 1',
        ]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
