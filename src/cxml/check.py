"""`cxml check --env staging`: prove a deployed environment answers like the evaluated model.

Two checks against the environment's public URL (deploy.yaml `proxy.public_url`):

1. online = offline: the first `checks.sample` held-out test images (a tabular model's test
   rows, sent as `{"rows": [...]}`), in the order the offline evaluation saw them, go to
   /predict; every predicted class must equal the offline one of the same model (any
   difference is preprocessing skew), and /version must name that model's sha256.
2. a bounded load test at `checks.rate` requests/s for `checks.duration` s, judged on
   `max_p99_ms`, `max_error_rate` and `min_rps`.

Results go to checks/<env>.json and the job summary. Exit 0: passed; 1: a check failed; 2: bad
input; 3: the service cannot be reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

from cxml.core import files, ghactions
from cxml.core.console import info, run_entry_point
from cxml.core.errors import ConfigError, DataError, DeployError
from cxml.deploy import check
from cxml.deploy.config import DEFAULT_DEPLOY_FILE, Environment, load_deploy_config
from cxml.records.release import sha256_file

EXIT_CHECK_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    environment = load_deploy_config(args.config).environment(args.env)
    settings = environment.checks
    if args.sample is not None:
        settings = dataclasses.replace(settings, sample=args.sample)
    urls = [args.url] if args.url else public_urls(environment)
    model_path = model_file(args)
    examples, class_names = held_out_examples(args.params, model_path, settings.sample)
    model_sha256 = sha256_file(model_path)
    results: list[check.UrlResult] = []
    failures: list[str] = []
    for url in urls:
        info(f"checking {url}: {len(examples)} held-out {examples[0].kind}s"
             + ("" if args.skip_load else f", then {settings.rate:g} req/s for "
                f"{settings.duration:g} s"))  # fmt: skip
        online = check.check_online(url, examples, model_sha256, class_names)
        load = None
        if not args.skip_load:
            load = check.run_load_test(url, check.predict_body(examples[:1]), settings)
        where = f"{url}: " if len(urls) > 1 else ""
        failures += [where + failure for failure in check.online_failures(online)]
        if load is not None:
            failures += [where + failure for failure in check.load_failures(load, settings)]
        results.append(check.UrlResult(url, online, load))
    report = check.report_dict(environment.name, results, settings, failures)
    output = Path(args.output or f"checks/{environment.name}.json")
    files.write_json(output, report)
    summary = check.summary_markdown(report)
    ghactions.append_summary(summary)
    info(summary.rstrip())
    if failures:
        raise DeployError(
            f"cxml check --env {environment.name}: {failures[0]}"
            + (f" (and {len(failures) - 1} more in {output})" if len(failures) > 1 else ""),
            exit_code=EXIT_CHECK_FAILED,
        )
    return 0


def public_urls(environment: Environment) -> list[str]:
    """The environment's public URLs, once each (hosts behind their own proxies have their own)."""
    urls: list[str] = []
    for host in environment.hosts:
        url = (host.settings or environment.settings).proxy.public_url
        if url is None:
            raise ConfigError(
                f"environment {environment.name} has no proxy.public_url to check (host "
                f"{host.label}); set it in deploy.yaml or pass --url"
            )
        if url not in urls:
            urls.append(url)
    return urls


def model_file(args: argparse.Namespace) -> Path:
    from cxml.core.config import load_params

    path = Path(args.model or load_params(args.params).outputs.model)
    if not path.is_file():
        raise ConfigError(
            f"{path}: model file not found; the check compares the service with the model it "
            "was built from: run `cxml train` or pass --model PATH"
        )
    return path


def held_out_examples(
    params_path: str | None, model_path: Path, sample: int
) -> tuple[list[check.HeldOutExample], tuple[str, ...]]:
    """The first `sample` test images as PNG files (a tabular model's test rows as numbers) and
    the classes the model gives them offline, through the same preprocessing as `cxml evaluate`."""
    import torch

    from cxml.core.config import load_params
    from cxml.ml.data import load_dataset
    from cxml.ml.models import load_model_file, preprocess
    from cxml.ml.tabular import check_features_match

    params = load_params(params_path)
    model, metadata = load_model_file(str(model_path), device="cpu")
    data = load_dataset(params.data, decode=("test",))
    test = data.test
    if len(test) == 0:
        raise DataError("the test split is empty; the online = offline check needs test examples")
    check_features_match(metadata, data.feature_names)
    if tuple(test.images.shape[1:]) != tuple(metadata.input_size):
        raise DataError(
            f"the test images are {tuple(test.images.shape[1:])}, the model takes "
            f"{tuple(metadata.input_size)}; check with the params the model was trained with"
        )
    inputs = test.images[:sample]
    with torch.inference_mode():
        offline = model(preprocess(inputs, metadata)).argmax(1).tolist()
    if metadata.tabular:
        # float32 -> Python float -> JSON -> float32 is exact: the service sees these very rows
        rows = inputs.flatten(1).tolist()
        held_out = [
            check.HeldOutExample(f"test row {index}", int(offline[index]), row=tuple(row))
            for index, row in enumerate(rows)
        ]
    else:
        held_out = [
            check.HeldOutExample(f"test[{index}]", int(offline[index]), png=png_file(image))
            for index, image in enumerate(inputs)
        ]
    return held_out, tuple(metadata.class_names)


def png_file(image: object) -> bytes:
    """A uint8 C,H,W tensor as a lossless PNG: the service decodes exactly these pixels."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()  # type: ignore[attr-defined]
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cxml check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env", required=True, help="environment of deploy.yaml to check")
    parser.add_argument(
        "--config",
        default=DEFAULT_DEPLOY_FILE,
        help=f"deploy.yaml (default ./{DEFAULT_DEPLOY_FILE})",
    )
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    parser.add_argument("--model", help="the deployed model file (default: outputs.model)")
    parser.add_argument("--url", help="check this URL instead of the environment's public_url")
    parser.add_argument(
        "--sample",
        type=positive_int,
        help="held-out images (or rows) to compare (default: checks.sample)",
    )
    parser.add_argument("--skip-load", action="store_true", help="only online = offline")
    parser.add_argument("--output", help="results JSON (default: checks/<env>.json)")
    return parser.parse_args(argv)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 10000, got {value}")
    return value


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
