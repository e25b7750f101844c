"""grugctl export: a run's checkpoint as a Hugging Face LlamaForCausalLM folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grugctl.cli.common import ArchiveOption, app, confirm, err, guarded, json_out, load_archive_for, say


@app.command("export")
def export_command(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment whose checkpoint to export."),
    hf: Annotated[
        Path, typer.Option("--hf", help="Folder for model.safetensors and config.json (LlamaForCausalLM).")
    ] = ...,
    record: str | None = typer.Option(
        None,
        "--record",
        help="The run record whose checkpoint to export (default: the newest that kept one).",
    ),
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="A checkpoint folder (a run's --checkpoint-dir).")
    ] = None,
    step: int | None = typer.Option(
        None, "--step", min=0, help="The checkpoint's step (default: the record's)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be exported where; write nothing."),
    yes: bool = typer.Option(False, "--yes", help="Replace a non-empty --hf folder without asking."),
    as_json: bool = typer.Option(False, "--json", help="Print the export's summary as JSON on stdout."),
    archive_path: ArchiveOption = None,
) -> None:
    """Write a run's checkpoint as a Hugging Face folder: LlamaForCausalLM.from_pretrained(DIR) loads it.

    The checkpoint is the newest run record of ID that kept one (`grugctl run ID --checkpoint-every N`),
    the record --record names, or the folder --checkpoint names. An experiment that changes the forward
    computation (attention, norms, MLP, block) is refused: Llama would compute something else.

    Example: grugctl export grugformer-starter --hf exports/starter

    Example: grugctl export relu-squared --checkpoint checkpoints/relu-squared --step 300 --hf hf/ --dry-run
    """
    from grugctl.runs import export

    archive = load_archive_for(archive_path, reading=True)
    plan = guarded(
        lambda: export.plan_export(
            archive, experiment_id, hf, record=record, checkpoint=checkpoint, step=step
        )
    )
    which = "the latest step" if plan.step is None else f"step {plan.step}"
    if dry_run:
        if as_json:
            json_out(plan.as_json())
        else:
            say(f"would export {which} of {plan.checkpoint} (from {plan.source}) to {plan.out}")
        return
    occupied = export.out_is_occupied(plan)
    if occupied:
        confirm(f"Replace {plan.out}?", yes)
    summary = guarded(lambda: export.run_export(archive, plan, force=occupied))
    if as_json:
        json_out(summary)
        return
    size = summary["bytes"] / 2**20
    say(f"exported step {summary['step']} of {plan.checkpoint} to {summary['out']}")
    say(f"  model.safetensors ({summary['params']:,} parameters, {size:.1f} MiB), config.json (LlamaConfig)")
    err.print(
        f"next: transformers.LlamaForCausalLM.from_pretrained({str(summary['out'])!r}); token ids are bytes",
        markup=False,
        highlight=False,
    )
