"""The service's own counters (/metrics), in shared memory and Prometheus' text format."""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Upper bounds of the cxml_batch_images histogram: images per forward pass."""
ENDPOINTS = ("/predict", "/healthz", "/version", "/metrics", "/", "/ui", "/examples")
"""Paths counted one by one (the demo page's assets as "/ui", its images as "/examples"); any
other path (a 404, say) is counted as endpoint "other"."""
STATUS_CODES = (200, 400, 404, 405, 413, 415, 422, 499, 500, 503)
"""Status codes counted one by one; anything else is counted as code "other". 499 (nginx's
"client closed request") counts requests whose client hung up before the answer; 503 those
refused because the work queue was full."""
MAX_COUNTED_CLASSES = 1024
"""Predicted classes counted one by one (cxml_predicted_class_total); a model with more counts
the rest under class "other", so the label set stays bounded whatever the model."""
INPUT_BYTES_BUCKETS = (1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216)
"""Upper bounds of the cxml_input_bytes histogram: bytes of each input (an image file, or a
tabular row's share of its JSON body)."""
BRIGHTNESS_BUCKETS = (*(float(bound) for bound in range(16, 256, 16)), 255.0)
"""Upper bounds of the cxml_input_brightness histogram: an image's mean pixel value (0-255)."""
STANDARD_SCORE_BUCKETS = (-3.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0, 3.0)
"""Upper bounds of the cxml_input_standard_score histogram: a tabular row's mean standardised
feature value ((x - training mean) / training std, averaged over the features). One number per
row, not one series per feature: a model with hundreds of features would make hundreds of series,
and a shift of the inputs as a whole still moves this mean."""


class Histogram:
    """Where one histogram lives in the shared array: its cumulative buckets, then sum and count."""

    def __init__(self, at: int, bounds: Sequence[float]) -> None:
        self.at = at
        self.bounds = tuple(bounds)
        self.size = len(self.bounds) + 2

    def observe(self, values: MutableSequence[float], value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                values[self.at + index] += 1
        values[self.at + len(self.bounds)] += value
        values[self.at + len(self.bounds) + 1] += 1

    def lines(self, name: str, description: str, values: Sequence[float]) -> list[str]:
        counts = values[self.at : self.at + self.size]
        lines = [f"# HELP {name} {description}", f"# TYPE {name} histogram"]
        for bound, count in zip(self.bounds, counts, strict=False):
            lines.append(f'{name}_bucket{{le="{bound_text(bound)}"}} {int(count)}')
        total, count = counts[len(self.bounds) :]
        return [
            *lines,
            f'{name}_bucket{{le="+Inf"}} {int(count)}',
            f"{name}_sum {total:.6g}",
            f"{name}_count {int(count)}",
        ]


@dataclass(frozen=True)
class ReleaseLabels:
    """What cxml_release_info says about the release a service runs (one series, value 1)."""

    release: str
    model_version: str
    model_name: str = ""
    run_id: str = ""


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
        # | predicted-class counts by class index (the model is not loaded yet: sized for any)
        self._classes_at = self._batches_at + len(BATCH_BUCKETS) + 2
        # | input summaries for drift: bytes, brightness (images), standard score (tabular rows)
        self._input_bytes = Histogram(
            self._classes_at + MAX_COUNTED_CLASSES + 1, INPUT_BYTES_BUCKETS
        )
        self._brightness = Histogram(
            self._input_bytes.at + self._input_bytes.size, BRIGHTNESS_BUCKETS
        )
        self._standard_score = Histogram(
            self._brightness.at + self._brightness.size, STANDARD_SCORE_BUCKETS
        )
        # | connections closed to even out the workers (serve/balance.py)
        self._rebalanced_at = self._standard_score.at + self._standard_score.size
        self._values = multiprocessing.RawArray("d", self._rebalanced_at + 1)
        self._lock = multiprocessing.Lock()

    def record_response(self, path: str, status: int) -> None:
        """Count one answer, whatever produced it (a handler, Starlette itself, an exception)."""
        endpoint = (*ENDPOINTS, "other").index(endpoint_of(path))
        code = STATUS_CODES.index(status) if status in STATUS_CODES else len(STATUS_CODES)
        with self._lock:
            self._values[endpoint * self._codes + code] += 1
            if status >= 400:
                self._values[self._answers + self._buckets + 3] += 1

    def record_prediction(self, seconds: float, images: int, classes: Sequence[int] = ()) -> None:
        """Latency, image count and predicted class indexes of a successful /predict (its status
        is counted separately)."""
        tail = self._answers + self._buckets
        with self._lock:
            values = self._values
            for index in classes:
                values[self._classes_at + min(index, MAX_COUNTED_CLASSES)] += 1
            values[tail] += seconds
            values[tail + 1] += 1
            values[tail + 2] += images
            for index, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    values[self._answers + index] += 1

    def record_rebalanced_connection(self) -> None:
        """One keep-alive connection asked to reconnect, its worker being over its share."""
        with self._lock:
            self._values[self._rebalanced_at] += 1

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

    def record_images(self, sizes: Sequence[int], brightness: Sequence[float]) -> None:
        """The decoded images of one /predict: each file's bytes and mean pixel value (0-255)."""
        with self._lock:
            for size in sizes:
                self._input_bytes.observe(self._values, size)
            for value in brightness:
                self._brightness.observe(self._values, value)

    def record_rows(self, body_bytes: int, standard_scores: Sequence[float]) -> None:
        """The decoded rows of one tabular /predict: each row's mean standardised feature value,
        and its share of the body's bytes."""
        if not standard_scores:
            return
        share = body_bytes / len(standard_scores)
        with self._lock:
            for score in standard_scores:
                self._input_bytes.observe(self._values, share)
                self._standard_score.observe(self._values, score)

    def render(
        self,
        model_version: str,
        release_name: str,
        class_names: Sequence[str] = (),
        *,
        labels: ReleaseLabels | None = None,
        tabular: bool = False,
        reference_brightness: float | None = None,
    ) -> str:
        """Prometheus' text format; `class_names` (the model's, by index) label the
        predicted-class counter, which is always declared so a reader can tell it from missing.
        `tabular` picks the input summary (standard score rather than brightness);
        `reference_brightness` is the training images' mean pixel value, for drift alerts."""
        with self._lock:
            values = list(self._values)
        release = labels or ReleaseLabels(release_name, model_version)
        endpoints = [*ENDPOINTS, "other"]
        codes = [*(str(c) for c in STATUS_CODES), "other"]
        buckets = values[self._answers : self._answers + self._buckets]
        latency_sum, latency_count, images, errors = values[
            self._answers + self._buckets : self._batches_at
        ]
        batch_values = values[self._batches_at : self._classes_at]
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
            "# HELP cxml_connections_rebalanced_total Keep-alive connections answered with "
            "Connection: close to even out the workers.",
            "# TYPE cxml_connections_rebalanced_total counter",
            f"cxml_connections_rebalanced_total {int(values[self._rebalanced_at])}",
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
            "# HELP cxml_model_info The model version being served (cxml_release_info says more).",
            "# TYPE cxml_model_info gauge",
            f'cxml_model_info{{model_version="{_label(model_version)}",'
            f'release="{_label(release_name)}"}} 1',
            *release_info_lines(release),
        ]
        lines += predicted_class_lines(
            values[self._classes_at : self._classes_at + MAX_COUNTED_CLASSES + 1], class_names
        )
        lines += self._input_bytes.lines(
            "cxml_input_bytes",
            "Bytes of each /predict input: an image file, or a tabular row's share of its body.",
            values,
        )
        if tabular:
            lines += self._standard_score.lines(
                "cxml_input_standard_score",
                "Mean standardised feature value of each tabular row ((x - training mean) / std).",
                values,
            )
        else:
            lines += self._brightness.lines(
                "cxml_input_brightness",
                "Mean pixel value (0-255) of each /predict image at the model's input size.",
                values,
            )
            if reference_brightness is not None:
                lines += [
                    "# HELP cxml_input_brightness_reference Mean pixel value of the training images.",
                    "# TYPE cxml_input_brightness_reference gauge",
                    f"cxml_input_brightness_reference {reference_brightness:.6g}",
                ]
        return "\n".join(lines) + "\n"


def release_info_lines(release: ReleaseLabels) -> list[str]:
    """cxml_release_info: the release a service runs, as labels on one series of value 1, for
    joining onto any cxml series in PromQL (`* on(instance) group_left(release) cxml_release_info`)
    instead of repeating the labels on every series."""
    labels = ",".join(
        f'{key}="{_label(value)}"'
        for key, value in (
            ("release", release.release),
            ("model_version", release.model_version),
            ("model_name", release.model_name),
            ("run_id", release.run_id),
        )
    )
    return [
        "# HELP cxml_release_info The release this service runs (value 1; join on instance).",
        "# TYPE cxml_release_info gauge",
        f"cxml_release_info{{{labels}}} 1",
    ]


def predicted_class_lines(counts: Sequence[float], class_names: Sequence[str]) -> list[str]:
    """cxml_predicted_class_total: every class of the model (0 included, so a class that stops
    being predicted shows as a flat series), then "other" if the model has more than are counted."""
    lines = [
        "# HELP cxml_predicted_class_total Images answered by /predict, by predicted class.",
        "# TYPE cxml_predicted_class_total counter",
    ]
    named = list(class_names[:MAX_COUNTED_CLASSES])
    for index, name in enumerate(named):
        lines.append(f'cxml_predicted_class_total{{class="{_label(name)}"}} {int(counts[index])}')
    rest = sum(counts[len(named) :])
    if rest or len(class_names) > MAX_COUNTED_CLASSES:
        lines.append(f'cxml_predicted_class_total{{class="other"}} {int(rest)}')
    return lines


def bound_text(bound: float) -> str:
    """A bucket bound as Prometheus clients write it: 1024 and 16, not 1.024e+03 or 16.0."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def endpoint_of(path: str) -> str:
    """The endpoint label a request path is counted under."""
    if path in ENDPOINTS:
        return path
    for prefix in ("/ui", "/examples"):
        if path.startswith(prefix + "/"):
            return prefix
    return "other"
