"""Exporters: the canonical dataset (Parquet, Hugging Face layout) and one module per target
format, registered by name (DESIGN.md section 6).

Every exporter reads the canonical dataset (never the spool) and is a small config dataclass
plus an ``export(dataset, out, config) -> ExportSummary`` function::

    from demotrace.export import get_exporter, CanonicalDataset
    exporter = get_exporter("agentnet")
    summary = exporter.export(CanonicalDataset(dataset_dir), out_dir, exporter.config(overwrite=True))

Formats: ``agentnet`` (:mod:`.agentnet`), ``osworld`` (:mod:`.osworld`), ``sft-chat``
(:mod:`.sftchat`), ``webdataset`` (:mod:`.webdataset`). Modules are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import ExportSummary
from .canonical import BuildSummary, CanonicalConfig, CanonicalDataset, CanonicalWriter, write_dataset

#: format name → (module, config class name)
_REGISTRY: dict[str, tuple[str, str]] = {
    "agentnet": ("agentnet", "AgentNetConfig"),
    "osworld": ("osworld", "OSWorldConfig"),
    "sft-chat": ("sftchat", "SFTChatConfig"),
    "webdataset": ("webdataset", "WebDatasetConfig"),
    "mind2web": ("mind2web", "Mind2WebConfig"),
}

FORMATS: tuple[str, ...] = tuple(_REGISTRY)


@dataclass(frozen=True)
class Exporter:
    """A registered format: ``name``, its ``config`` dataclass and ``export`` function."""

    name: str
    config: type
    export: Callable[..., ExportSummary]

    def run(self, dataset: CanonicalDataset | Path, out: Path, **settings: Any) -> ExportSummary:
        """Export ``dataset`` (a :class:`CanonicalDataset` or its folder) to ``out``."""
        ds = dataset if isinstance(dataset, CanonicalDataset) else CanonicalDataset(Path(dataset))
        return self.export(ds, Path(out), self.config(**settings))


def get_exporter(name: str) -> Exporter:
    """The exporter registered as ``name``.

    Raises:
        ConfigError: unknown format (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}")
    module_name, config_name = _REGISTRY[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return Exporter(name=name, config=getattr(module, config_name), export=module.export)


__all__ = [
    "BuildSummary", "CanonicalConfig", "CanonicalDataset", "CanonicalWriter", "Exporter",
    "ExportSummary", "FORMATS", "get_exporter", "write_dataset",
]
