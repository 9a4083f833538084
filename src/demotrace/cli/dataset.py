"""``demotrace build``, ``export`` and ``replay``: recordings → canonical dataset → formats.

- ``build [BUNDLE ...] --out DIR``: reduce sealed bundles (session ids or bundle folders; every
  bundle in ``<home>/sealed`` by default — never the raw spool, DESIGN.md principle 3) to
  episodes with :func:`demotrace.build.episodes_from_session` and write the canonical Parquet
  dataset (:mod:`demotrace.export.canonical`), with a progress bar.
- ``export --format F --dataset DIR --out OUT``: convert the canonical dataset (never the
  spool) with a registered exporter; lossy conversions are printed and written to
  ``OUT/summary.json``.
- ``replay EPISODE_ID --dataset DIR --out replay.html``: a static page of one episode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..errors import ConfigError
from .common import console
from .recording import _finite, _finite_in  # nan / inf refused with the option named

HomeOpt = typer.Option(None, "--home", help="demotrace home folder (default $DEMOTRACE_HOME or ~/.local/share/demotrace).")


def _bundle_sources(paths: Any, bundles: list[str]) -> list[tuple[str, Callable[[], Any]]]:
    """``(label, open)`` per sealed bundle to build: every bundle in ``<home>/sealed`` when
    ``bundles`` is empty, else each given session id or bundle folder path.

    Never opens the raw spool (DESIGN.md principle 3): for an id that has no bundle it only
    checks whether a raw session folder of that name exists, to name the fix.

    Raises:
        ConfigError: no sealed bundles at all (the message names ``demotrace seal``).
        SessionNotFound: a given id / path is not a sealed bundle (the message names
            ``demotrace seal ID`` when the session was recorded but not sealed).
    """
    from ..errors import SessionNotFound
    from ..privacy.bundle import (
        MARKER,
        BundleReader,
        bundle_ids,
        bundle_key,
        open_bundle,
        sealed_root,
    )

    if not bundles:
        ids = bundle_ids(paths)
        if not ids:
            raw = sorted(p.name for p in paths.spool.iterdir() if p.is_dir()) if paths.spool.is_dir() else []
            hint = (f"; {len(raw)} recorded session(s) are not sealed yet: run `demotrace seal` "
                    f"(e.g. `demotrace seal {raw[0]}`)") if raw else "; record with `demotrace record`, then `demotrace seal`"
            raise ConfigError(f"no sealed bundles in {sealed_root(paths)}{hint}")
        return [(sid, lambda sid=sid: open_bundle(paths, sid)) for sid in ids]
    out: list[tuple[str, Callable[[], Any]]] = []
    for b in bundles:
        folder = Path(b)
        if "/" in b or (folder.is_dir() and (folder / MARKER).is_file()):
            if not (folder / MARKER).is_file():
                raise SessionNotFound(f"{folder} is not a sealed bundle (no {MARKER} marker); "
                                      f"seal the session with `demotrace seal {folder.name}`")
            out.append((folder.name, lambda folder=folder: BundleReader(folder, bundle_key(paths))))
            continue
        if not (sealed_root(paths) / b / MARKER).is_file():
            if (paths.spool / b).is_dir():
                raise SessionNotFound(
                    f"session {b} was recorded but not sealed; `demotrace build` reads only sealed "
                    f"bundles (DESIGN.md principle 3): run `demotrace seal {b}` first")
            raise SessionNotFound(f"no sealed bundle or session {b!r} in {paths.home} "
                                  f"(see `demotrace sessions list`; seal with `demotrace seal {b}`)")
        out.append((b, lambda b=b: open_bundle(paths, b)))
    return out


def build_cmd(
    bundles: list[str] = typer.Argument(None, help="Sealed bundles to build: session ids or bundle folders "
                                        "(default: every bundle in <home>/sealed)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (data/*.parquet, README.md, episodes.jsonl)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    max_shard_mb: float = typer.Option(500.0, "--max-shard-mb", callback=_finite_in(1.0), help="Start a new Parquet shard at this size (MB, at least 1)."),
    sealed: bool = typer.Option(False, "--sealed", hidden=True,
                                help="Accepted for compatibility; build always reads sealed bundles."),
    home: str | None = HomeOpt,
) -> None:
    """Build the canonical dataset (Parquet, Hugging Face layout) from sealed bundles.

    Reads only the sealed (redacted) bundles written by ``demotrace seal`` — never the raw
    spool, locally too (DESIGN.md principle 3: nothing but ``seal`` and ``review`` reads it).
    A session that was not sealed is refused with the fix: ``demotrace seal ID``.
    """
    from ..build import BuildSettings, episodes_from_session
    from ..export.canonical import CanonicalConfig, CanonicalWriter
    from ..paths import Paths

    del sealed  # always sealed
    paths = Paths.from_env(home)  # reads the home only: works on a read-only one (bug bash 4 F18)
    sources = _bundle_sources(paths, list(bundles or ()))
    config = CanonicalConfig(max_shard_bytes=max(1, int(max_shard_mb * 1e6)), overwrite=overwrite)
    settings = BuildSettings()
    writer = CanonicalWriter(out, config)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[steps]} steps"), TimeElapsedColumn(), console=console,
                        transient=False)
    try:
        with progress:
            task = progress.add_task("bundles", total=len(sources), steps=0)
            for label, open_source in sources:
                progress.update(task, description=f"bundle {label}")
                with open_source() as reader:
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file (as build and export)."),
) -> None:
    """Write a static HTML page replaying one episode with each action drawn on its screenshot.

    Refuses an existing ``--out`` file unless ``--overwrite`` (like ``build`` and ``export``),
    and a folder as ``--out``.
    """
    from ..replay import write_replay

    path = write_replay(dataset, episode_id, out, embed=embed, overwrite=overwrite)
    console.print(f"replay of {episode_id}: {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``build``, ``export`` and ``replay`` to ``app``."""
    app.command("build")(build_cmd)
    app.command("export")(export_cmd)
    app.command("replay")(replay_cmd)
