"""``demotrace build``, ``export`` and ``replay``: recordings → canonical dataset → formats.

- ``build [SESSION_ID ...] --out DIR``: reduce spool sessions (all by default) to episodes with
  :func:`demotrace.build.episodes_from_session` and write the canonical Parquet dataset
  (:mod:`demotrace.export.canonical`), with a progress bar.
- ``export --format F --dataset DIR --out OUT``: convert the canonical dataset (never the
  spool) with a registered exporter; lossy conversions are printed and written to
  ``OUT/summary.json``.
- ``replay EPISODE_ID --dataset DIR --out replay.html``: a static page of one episode.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from .common import console, open_spool

HomeOpt = typer.Option(None, "--home", help="demotrace home folder (default $DEMOTRACE_HOME or ~/.local/share/demotrace).")


def build_cmd(
    session_ids: list[str] = typer.Argument(None, help="Sessions to build (default: every session in the spool)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (data/*.parquet, README.md, episodes.jsonl)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    max_shard_mb: float = typer.Option(500.0, "--max-shard-mb", help="Start a new Parquet shard at this size (MB)."),
    sealed: bool = typer.Option(False, "--sealed", help="Read sealed bundles (made by `demotrace seal`) instead of the raw spool."),
    home: str | None = HomeOpt,
) -> None:
    """Build the canonical dataset (Parquet, Hugging Face layout) from recorded sessions.

    With ``--sealed`` the sessions are read from their sealed (redacted) bundles in
    ``<home>/sealed`` — the only source for data that leaves the device (DESIGN.md §2.3);
    without it from the raw local spool (for the person's own review and for development).
    """
    from typing import Any

    from ..build import BuildSettings, episodes_from_session
    from ..export.canonical import CanonicalConfig, CanonicalWriter

    open_session: Any
    if sealed:
        from ..paths import Paths
        from ..privacy.bundle import bundle_ids, open_bundle, sealed_root

        paths = Paths.from_env(home).ensure()
        ids = list(session_ids or bundle_ids(paths))
        if not ids:
            raise ConfigError(f"no sealed bundles in {sealed_root(paths)}; create them with `demotrace seal`")

        def open_session(sid: str) -> Any:
            return open_bundle(paths, sid)
    else:
        _, spool = open_spool(home)
        ids = list(session_ids or spool.session_ids())
        if not ids:
            raise ConfigError(f"no sessions in {spool.root}; record one with `demotrace record` or `demotrace import`")
        open_session = spool.open
    config = CanonicalConfig(max_shard_bytes=max(1, int(max_shard_mb * 1e6)), overwrite=overwrite)
    settings = BuildSettings()
    writer = CanonicalWriter(out, config)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[steps]} steps"), TimeElapsedColumn(), console=console,
                        transient=False)
    try:
        with progress:
            task = progress.add_task("sessions", total=len(ids), steps=0)
            for sid in ids:
                progress.update(task, description=f"session {sid}")
                with open_session(sid) as reader:
                    for episode in episodes_from_session(reader, settings):
                        writer.add_episode(episode, reader.read_blob)
                        progress.update(task, steps=writer.summary.steps)
                progress.advance(task)
        summary = writer.close()
    except BaseException:
        writer.abort()
        raise
    table = Table(title=f"dataset {out}", show_header=False)
    table.add_row("sessions", str(len(summary.sessions)))
    table.add_row("episodes", str(summary.episodes))
    table.add_row("steps", f"{summary.steps} ({summary.steps_without_observation} without observation)")
    table.add_row("shards", ", ".join(summary.shards))
    table.add_row("size", f"{summary.bytes / 1e6:.1f} MB")
    console.print(table)


def export_cmd(
    fmt: str = typer.Option(..., "--format", help="agentnet | osworld | sft-chat | webdataset | mind2web"),
    dataset: Path = typer.Option(..., "--dataset", help="Canonical dataset folder (from `demotrace build`)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out."),
    coords: str | None = typer.Option(None, "--coords", help="sft-chat: pixels | norm1 | norm1000 | resized (default norm1)."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", help="sft-chat --coords resized: smart_resize pixel budget (default 16384*28*28)."),
    action_format: str | None = typer.Option(None, "--action-format", help="sft-chat: pyautogui | uitars (default pyautogui)."),
    history: int | None = typer.Option(None, "--history", help="sft-chat: previous actions in the prompt (default all)."),
    image_format: str | None = typer.Option(None, "--image-format", help="agentnet, sft-chat: png (default) | source (recorded WebP/PNG bytes, no re-encoding)."),
) -> None:
    """Export the canonical dataset to a trainer / benchmark format."""
    from ..export import get_exporter

    exporter = get_exporter(fmt)
    settings: dict[str, object] = {"overwrite": overwrite}
    sft = {"coords": coords, "max_pixels": max_pixels, "action_format": action_format, "history": history}
    given = {k: v for k, v in sft.items() if v is not None}
    if given and fmt != "sft-chat":
        raise ConfigError(f"--{next(iter(given)).replace('_', '-')} applies to --format sft-chat only")
    settings.update(given)
    if image_format is not None:
        if fmt not in ("agentnet", "sft-chat"):
            raise ConfigError("--image-format applies to --format agentnet and sft-chat only")
        settings["image_format"] = image_format
    summary = exporter.run(dataset, out, **settings)
    console.print(f"[bold]{fmt}[/]: {summary.episodes} episodes, {summary.steps} steps, "
                  f"{summary.records} records → {out}", highlight=False)
    if summary.lossy:
        table = Table(title="lossy conversions (details in summary.json)")
        table.add_column("kind")
        table.add_column("count", justify="right")
        table.add_column("example")
        for kind, entry in sorted(summary.lossy.items()):
            ex = entry["examples"][0] if entry["examples"] else {}
            table.add_row(kind, str(entry["count"]),
                          f"{ex.get('episode_id')} step {ex.get('step_index')}: {ex.get('detail')}")
        console.print(table)
    else:
        console.print("no lossy conversions")
    console.print(f"summary: {Path(out) / 'summary.json'}", highlight=False)


def replay_cmd(
    episode_id: str = typer.Argument(..., help="Episode id (see DIR/episodes.jsonl)."),
    dataset: Path = typer.Option(..., "--dataset", help="Canonical dataset folder."),
    out: Path = typer.Option(Path("replay.html"), "--out", help="HTML file to write."),
    embed: bool = typer.Option(True, "--embed/--no-embed", help="Embed images as data URIs, or write them beside the page."),
) -> None:
    """Write a static HTML page replaying one episode with each action drawn on its screenshot."""
    from ..replay import write_replay

    path = write_replay(dataset, episode_id, out, embed=embed)
    console.print(f"replay of {episode_id}: {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``build``, ``export`` and ``replay`` to ``app``."""
    app.command("build")(build_cmd)
    app.command("export")(export_cmd)
    app.command("replay")(replay_cmd)
