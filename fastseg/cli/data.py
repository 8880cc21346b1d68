"""`fastseg synth`, `download`, `check-data` and `show-batch`: making and checking datasets."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fastseg.cli import app
from fastseg.cli.common import (
    DATA,
    SYNTH,
    AugOpt,
    ClassesOpt,
    CropOpt,
    DataOpt,
    SbdOpt,
    TrainOpt,
    ValidOpt,
    Voc11Opt,
    VocOpt,
    friendly,
)
from fastseg.config import (
    DataConfig,
    Preset,
    SynthConfig,
    plain,
)
from fastseg.console import console, log, progress_bar
from fastseg.constants import NUM_CLASSES
from fastseg.data.splits import DataRoots
from fastseg.errors import FastsegError


@app.command(epilog="Example: fastseg synth --out data/synthetic --n-train 400 --n-val 60; "
             "fastseg synth --layout folder --classes 5 --colour-masks --out data/shapes")
@friendly
def synth(out: Annotated[Path, typer.Option(help="Folder to write the dataset into.")] = Path("data/synthetic"),
          n_train: Annotated[int, typer.Option(help="VOC2012 seg train ids (folder layout: train images).")]
          = SYNTH["n_train"],
          n_val: Annotated[int, typer.Option(help="VOC2012 seg val ids (folder layout: val images).")] = SYNTH["n_val"],
          n_sbd_only: Annotated[int, typer.Option(help="Ids annotated by SBD alone.")] = SYNTH["n_sbd_only"],
          size: Annotated[int, typer.Option(help="Longest image side in pixels.")] = SYNTH["size"],
          seed: Annotated[int, typer.Option(help="Random seed.")] = SYNTH["seed"],
          layout: Annotated[str, typer.Option(help="voc (VOCdevkit, VOC2011 and SBD) or folder (images/, masks/, "
                                              "classes.txt, train.txt, val.txt: the --data layout).")] = "voc",
          classes: Annotated[int, typer.Option("--classes", help="Classes of the folder layout, background "
                                               f"included (2 to {NUM_CLASSES}).")] = 5,
          colour_masks: Annotated[bool, typer.Option("--colour-masks", help="Folder layout: RGB colour masks "
                                                     "(colours in classes.txt) instead of index PNGs.")] = False):
    """Write a seeded synthetic dataset laid out exactly like VOCdevkit/VOC2012, VOC2011 and SBD, or as
    a folder dataset with its own classes."""
    from fastseg.data.synthetic import generate, generate_folder, make_id_sets
    cfg = SynthConfig(n_train=n_train, n_val=n_val, n_sbd_only=n_sbd_only, size=size, seed=seed)
    if layout not in ("voc", "folder"):
        raise FastsegError(f"--layout {layout} is not known; use voc or folder.")
    if layout == "folder":
        if not 2 <= classes <= NUM_CLASSES:
            raise FastsegError(f"--classes {classes} is out of range; the synthetic folder dataset has 2 to "
                               f"{NUM_CLASSES} classes (background included).")
        with progress_bar("synth", total=n_train + n_val) as advance:
            generate_folder(out, cfg, classes, colour_masks, progress=lambda _: advance())
        log(f"Folder dataset with {classes} classes written to {out}: --data {out}")
        return
    sets = make_id_sets(cfg)
    total = len(set(sets.voc_train + sets.voc_val + sets.sbd_train + sets.sbd_val))
    with progress_bar("synth", total=total) as advance:
        generate(out, cfg, progress=lambda _: advance())
    roots = DataRoots.under(out)
    log(f"Synthetic dataset written to {out}: --voc {roots.voc} --sbd {roots.sbd}")


@app.command(epilog="Example: fastseg download voc2012 --root data")
@friendly
def download(name: Annotated[str, typer.Argument(help="voc2012, voc2011 or sbd.")],
             root: Annotated[Path, typer.Option(help="Folder to download and extract into.")] = Path("data")):
    """Download, verify (md5) and extract an official dataset archive; resumes partial downloads."""
    from fastseg.data.download import download_dataset
    download_dataset(name, root)


@app.command("check-data", epilog="Example: fastseg check-data --voc data --sbd data (or --data DIR)")
@friendly
def check_data(voc: VocOpt = None, sbd: SbdOpt = None, voc11: Voc11Opt = None, data: DataOpt = None,
               classes: ClassesOpt = None):
    """Split counts, leakage check and every problem found in the files; exit 1 on a problem."""

    from fastseg.data.checks import check_dataset
    roots = DataConfig(voc=plain(voc), data=plain(data), sbd=plain(sbd), voc11=plain(voc11),
                       classes=plain(classes)).roots
    with progress_bar("checking files") as advance:
        report = check_dataset(roots, progress=advance)
    _print_data_report(report)
    if report.problems or any(n for _, _, n in report.leaks):
        raise typer.Exit(1)


def _print_data_report(report) -> None:
    """The notes (images shown rotated, with the orientation their masks follow), then the split and
    leakage tables for a clean dataset; for a faulty one only what is wrong, one line each (the tables
    would bury it)."""
    leaks = [(t, e, n) for t, e, n in report.leaks if n]
    for note in report.notes:
        log(f"{note.path}: {note.message}.")
    if report.problems or leaks:
        for problem in report.problems:
            log(f"{problem.path}: {problem.message}")
        for train, evaluation, shared in leaks:
            log(f"{train} and {evaluation} share {shared} ids: evaluation images must not be trained on.")
        log(f"{len(report.problems) + len(leaks)} problem(s) found; fix them and run check-data again.")
        return
    table = Table(title="Splits")
    table.add_column("split")
    table.add_column("images", justify="right")
    for name, count in report.counts.items():
        table.add_row(name, str(count) if isinstance(count, int) else f"unavailable: {count}")
    console.print(table)
    table = Table(title="Leakage check (training ∩ evaluation ids)")
    for column in ("training", "evaluation", "shared ids"):
        table.add_column(column)
    for train, evaluation, _ in report.leaks:
        table.add_row(train, evaluation, "0 (ok)")
    console.print(table)
    classes = report.classes
    colours = " with colours (RGB masks accepted)" if classes.colours else ""
    log(f"Classes ({classes.num}{colours}): {', '.join(classes.names)}; void (255): {classes.void}.")
    log("0 problem(s) found.")


@app.command("show-batch", epilog="Example: fastseg show-batch --voc data --sbd data --out figures")
@friendly
def show_batch(voc: VocOpt = None, sbd: SbdOpt = None, voc11: Voc11Opt = None, data: DataOpt = None,
               classes: ClassesOpt = None, train: TrainOpt = None, valid: ValidOpt = None,
               crop: CropOpt = DATA["crop"], augment: AugOpt = Preset(DATA["augment"]),
               n: Annotated[int, typer.Option(help="Samples per grid.")] = 8,
               out: Annotated[Path, typer.Option(help="Folder for train_batch.png and valid_batch.png.")] = Path("."),
               seed: Annotated[int, typer.Option(help="Random seed.")] = 0):
    """PNG grids of augmented training samples and of validation samples, masks in the dataset's colours."""
    from fastai.torch_core import set_seed

    from fastseg.data.dataloaders import build_dataloaders
    from fastseg.data.splits import dataset_classes
    from fastseg.evaluate.figures import plot_batch
    set_seed(seed)
    cfg = DataConfig(voc=plain(voc), data=plain(data), sbd=plain(sbd), voc11=plain(voc11), classes=plain(classes),
                     train_split=train, valid_split=valid, crop=crop, bs=n, augment=augment.value, num_workers=0)
    palette = dataset_classes(cfg.roots).palette()
    dls = build_dataloaders(cfg, device="cpu", log=log)
    out.mkdir(parents=True, exist_ok=True)
    # the validation grid mixes padded sizes (scoring never does): a shuffled view pads to the largest
    for name, dl in (("train", dls.train), ("valid", dls.valid.new(shuffle=True))):
        x, y = dl.one_batch()
        path = plot_batch(x, y, out / f"{name}_batch.png", title=f"{name} samples", palette=palette)
        log(f"Wrote {path}")

