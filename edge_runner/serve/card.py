"""What the Model page shows of the loaded model's card: labels, precision, accuracy check, operating point,
sha256s, bench numbers.

Taken once at start from `EdgeModel.card` (the sha256s were computed when the model was resolved; nothing is
hashed or read again here but the bench report), so the page keeps describing the model actually loaded in
memory even when its folder is changed or removed while the server runs (`on_disk` says whether the files
are still there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from allx import layout
from allx.errors import AllxError
from allx.jsonio import read_json
from allx.edge_runner.card_text import CardLine, bench_lines, card_lines
from allx.edge_runner.quality import QualityLimits, limits_in_use
from allx.edge_runner.sample import rule_or_default


@dataclass(frozen=True)
class ModelPage:
    """The loaded model's card (edge_runner.metadata.ModelCard) as the page and /api/model show it."""

    model_path: str
    model_sha256: str
    manifest_path: str | None
    manifest_sha256: str | None
    labels: tuple[str, ...]
    precision: str | None
    runtime: str
    delegate: str
    threads: int
    input_size: tuple[int, int]
    check: dict | None
    operating_point: dict | None
    sample_rule: dict
    sample_rule_stored: bool
    quality_check: str
    bench: dict | None  # the device's `allx-edge bench --json` report found beside the model, if any
    warnings: tuple[str, ...]
    lines: tuple[CardLine, ...] = ()  # the figures above in words, rounded for people (edge_runner.card_text)
    bench_lines: tuple[CardLine, ...] = ()

    @property
    def on_disk(self) -> bool:
        return Path(self.model_path).is_file()

    def to_dict(self) -> dict:
        return {"kind": layout.RecordKind.MANIFEST.value, **asdict(self), "on_disk": self.on_disk}


def describe_loaded(model) -> ModelPage:
    """The page of a loaded EdgeModel, from its card."""
    manifest, card = model.manifest, model.card
    bench = read_bench(model.model_path.parent / layout.BENCH)
    return ModelPage(
        model_path=str(model.model_path), model_sha256=card.sha256,
        manifest_path=None if card.manifest_path is None else str(card.manifest_path),
        manifest_sha256=card.manifest_sha256,
        labels=tuple(model.labels), precision=manifest.precision, runtime=model.runtime,
        delegate=model.delegate, threads=model.threads, input_size=model.input_size,
        check=manifest.check,
        operating_point=None if manifest.operating_point is None else manifest.operating_point.to_dict(),
        sample_rule=rule_or_default(manifest.sample_rule, manifest.operating_point).to_dict(),
        sample_rule_stored=manifest.sample_rule is not None, quality_check=quality_words(manifest.quality),
        bench=bench, warnings=tuple(model.warnings), lines=card_lines(manifest.document),
        bench_lines=() if bench is None else bench_lines(bench))


def quality_words(limits: QualityLimits | None) -> str:
    limits, notes = limits_in_use(limits)
    if notes:
        return "; ".join(notes)
    return "on (thresholds from model.json)" if limits is not None else "off"


def read_bench(path: Path) -> dict | None:
    """The bench report's first result and machine (None when absent or unreadable: the page says so)."""
    try:
        report = read_json(path, "bench report")
        result = report["results"][0]
        return {"machine": report.get("machine"), "created": report.get("created"),
                **{key: result.get(key) for key in ("precision", "runtime", "threads", "delegate", "load_ms", "runs",
                                                    "throughput_ips", "peak_rss_mb")},
                "latency_ms": {k: v for k, v in (result.get("latency_ms") or {}).items() if k != "samples"}}
    except (AllxError, KeyError, IndexError, TypeError, AttributeError):
        return None
